"""Without processes: what a refused endpoint is told, how often the router logs a refusal, the node's back-off
after refusals, and the one-line start errors (listening address, database) with no password in them."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess

import aiohttp
import asyncpg
import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.messages import NodeDescriptor
from fedai.service.config import ConfigError
from fedai.service.server import Server, Stopper, http_url, listen, uvicorn_config
from fedai.store.db import redact_dsn, unusable_database, wait_for_database
from fedai_node.heartbeat import BACKOFF_MAX_S, BeatResult, Heartbeat, refusal
from fedai_router.endpoints import EndpointValidator, address_kind, check_shape
from fedai_router.refusals import RefusalLog
from fedai_router.resolver import BoundedResolver
from tests.support.dns import FakeDNS

HINT = "set ROUTER_ALLOW_PRIVATE_ENDPOINTS=true on the router for local testing or a private network"


@pytest.mark.parametrize(
    ("url", "told"),
    [
        ("http://127.0.0.1:9001", "endpoint http://127.0.0.1:9001 is a loopback address"),
        ("http://[::1]:9001", "endpoint http://[::1]:9001 is a loopback address"),
        ("http://10.1.2.3:80", "endpoint http://10.1.2.3:80 is a private address"),
        ("http://169.254.1.1", "endpoint http://169.254.1.1 is a link-local address"),
        ("http://[::ffff:127.0.0.1]:1", "endpoint http://[::ffff:127.0.0.1]:1 is a loopback address"),
        ("http://100.64.0.1", "endpoint http://100.64.0.1 is a non-public address"),  # CGNAT: not "private"
    ],
)
def test_a_written_non_public_address_is_refused_saying_what_it_is_and_what_to_set(url: str, told: str) -> None:
    with pytest.raises(FedaiError) as refused:
        check_shape(url, allow_private=False)
    assert refused.value.code is ErrorCode.FORBIDDEN
    assert refused.value.message == f"{told}; {HINT}"
    assert check_shape(url, allow_private=True)


def test_address_kinds() -> None:
    assert [address_kind(a) for a in ("0.0.0.0", "127.0.0.2", "fe80::1%eth0", "192.168.0.1", "not an address")] == [
        "unspecified",
        "loopback",
        "link-local",
        "private",
        "non-public",
    ]


async def test_a_name_resolving_to_loopback_is_refused_saying_so() -> None:
    resolver = BoundedResolver(2, 2.0, lookup=FakeDNS({"node.test": "127.0.0.1"}))
    with pytest.raises(FedaiError) as refused:
        await EndpointValidator(False, resolver).check("http://node.test:9001")
    assert refused.value.message == f"endpoint http://node.test:9001 resolves to a loopback address; {HINT}"


def test_the_router_logs_a_refusal_once_per_node_and_code_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(interval_s=60.0, max_remembered=2)
    assert [refusals.due("a", "forbidden", t) for t in (0.0, 1.0, 59.9, 60.0)] == [True, False, False, True]
    assert refusals.due("a", "invalid_event", 61.0)  # another reason is news
    assert refusals.due("b", "forbidden", 61.0)  # a third pair: the oldest ("a", forbidden) is forgotten
    assert refusals.due("a", "forbidden", 62.0)
    caplog.set_level(logging.WARNING, "fedai.router")
    err = FedaiError(ErrorCode.FORBIDDEN, f"endpoint http://127.0.0.1:1 is a loopback address; {HINT}")
    log = RefusalLog()
    for _ in range(5):
        log.refused("node-key", "http://user:pw@127.0.0.1:1/?token=x", err)
    assert len(caplog.records) == 1  # however many beats
    record = caplog.records[0]
    assert record.getMessage() == f"heartbeat refused: {err.message}"
    assert record.__dict__["endpoint"] == "http://***@127.0.0.1:1/?***"
    assert record.__dict__["node"] == "node-key" and record.__dict__["code"] == "forbidden"


def test_the_node_reads_the_routers_reason_cut_to_a_bound() -> None:
    body = b'{"error": {"code": "forbidden", "message": "' + b"x" * 1000 + b'", "retry_after_ms": 5000}}'
    err = refusal(body, 403)
    assert (err.code, len(err.message), err.retry_after_ms) == (ErrorCode.FORBIDDEN, 300, 5000)
    assert refusal(b"<html>", 502).code is ErrorCode.UPSTREAM_ERROR


async def test_the_node_backs_off_after_refusals_and_not_after_an_outage() -> None:
    async with aiohttp.ClientSession() as session:
        beat = Heartbeat(
            keys=Keys.generate(),
            endpoints=["http://a"],
            trusted=[],
            interval_ms=2000,
            skew_s=60,
            session=session,
            describe=lambda: NodeDescriptor(endpoint="http://n", models=["m"]),
        )
        waits = [beat._back_off("http://a", BeatResult.REJECTED) for _ in range(7)]
        assert waits == [4.0, 8.0, 16.0, 32.0, BACKOFF_MAX_S, BACKOFF_MAX_S, BACKOFF_MAX_S]
        assert 59 < beat.next_try_s("http://a") <= BACKOFF_MAX_S
        assert beat._back_off("http://a", BeatResult.UNTRUSTED) == BACKOFF_MAX_S
        assert beat._back_off("http://a", BeatResult.OK) == 2.0
        assert beat.next_try_s("http://a") == 0.0
        assert beat._back_off("http://a", BeatResult.BAD_ACK) == 4.0  # counting starts again
        assert beat._back_off("http://a", BeatResult.UNREACHABLE) == 2.0  # a router down: every interval
        beat._retry_after["http://a"] = 120.0
        assert beat._back_off("http://a", BeatResult.REJECTED) == 120.0  # the router's Retry-After, if longer


def test_a_taken_port_is_a_config_error_naming_the_variables() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as err:
            listen("ROUTER_HOST/ROUTER_PORT", "127.0.0.1", port)
    assert str(err.value).startswith(f"ROUTER_HOST/ROUTER_PORT: cannot listen on 127.0.0.1:{port}: ")
    with listen("NODE_HOST/NODE_PORT", "127.0.0.1", 0) as sock:
        assert http_url(sock) == f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_database_start_errors_name_the_variable_without_the_password() -> None:
    dsn = "postgresql://fedai:s3cret@db.internal:5432/fedai"
    assert redact_dsn(dsn) == "postgresql://fedai:***@db.internal:5432/fedai"
    err = unusable_database("ROUTER_DB_URL", redact_dsn(dsn), OSError(111, f"refused for {dsn}"), dsn)
    assert str(err) == "ROUTER_DB_URL: cannot use postgresql://fedai:***@db.internal:5432/fedai: " + (
        "[Errno 111] refused for postgresql://fedai:***@db.internal:5432/fedai"
    )
    assert str(unusable_database("DATABASE_URL", "x", TimeoutError())).endswith("no answer within 10 s")
    failed = subprocess.CalledProcessError(1, ["pg_ctl", "start"])
    assert str(unusable_database("FEDAI_DATA_DIR", "pg", failed)).endswith(
        "pg_ctl exited with status 1 (see its log there)"
    )


async def test_a_stop_signal_stops_the_server_and_cancels_a_start_up_a_second_ctrl_c_forces() -> None:
    server = Server(uvicorn_config(None, "127.0.0.1", 0))
    starting = asyncio.create_task(asyncio.sleep(60))
    stop = Stopper(server, starting=starting)
    stop(signal.SIGTERM)
    assert (server.should_exit, server.force_exit, stop.name) == (True, False, "SIGTERM")
    with pytest.raises(asyncio.CancelledError):
        await starting
    stop(signal.SIGHUP)
    assert (server.force_exit, stop.name) == (False, "SIGTERM")  # the first signal is the one reported
    stop(signal.SIGINT)
    assert server.force_exit


class Attempts:
    """An attempt at a database that fails with `errors` in turn, then answers "pool"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "pool"


async def test_a_database_not_ready_is_tried_again_until_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    attempt = Attempts(ConnectionRefusedError(111, "refused"), asyncpg.CannotConnectNowError("starting up"))
    with caplog.at_level(logging.WARNING, logger="fedai.store"):
        assert await wait_for_database(attempt, 30, lambda exc: f"said {type(exc).__name__}") == "pool"
    assert attempt.calls == 3
    said = [r.getMessage() for r in caplog.records if r.name == "fedai.store"]
    assert len(said) == 2 and said[0].endswith("said ConnectionRefusedError"), said


async def test_the_wait_is_bounded_and_ends_with_the_last_error() -> None:
    attempt = Attempts(*(ConnectionRefusedError(111, f"refused {i}") for i in range(100)))
    with pytest.raises(ConnectionRefusedError):
        await wait_for_database(attempt, 0.5, str)
    assert 2 <= attempt.calls <= 4  # 0.25 s, then the 0.25 s left: bounded by the wait, not by the errors


async def test_no_wait_is_one_attempt_and_errors_that_do_not_heal_are_not_retried() -> None:
    refused = Attempts(ConnectionRefusedError(111, "refused"))
    with pytest.raises(ConnectionRefusedError):
        await wait_for_database(refused, 0, str)
    assert refused.calls == 1
    wrong = Attempts(asyncpg.InvalidPasswordError("password authentication failed"))
    with pytest.raises(asyncpg.InvalidPasswordError):
        await wait_for_database(wrong, 30, str)
    assert wrong.calls == 1
