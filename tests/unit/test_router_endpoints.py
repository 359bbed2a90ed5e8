"""Endpoint rules without I/O: the address judgement (IP literals of every form), the endpoint shape, the
connector's socket guard, the classification of outbound failures and the generic upstream error; peer caps
endpoints in the PeerBook. (Basic public/private cases are in test_router_policies.py.)"""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.federation import RouterCaps, RouterLimits
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import to_builtins
from fedai.service.client import ReplyTooLarge
from fedai.service.config import ConfigError, Env
from fedai_router.config import RouterSettings
from fedai_router.endpoints import check_shape, is_public_address, looks_like_ip
from fedai_router.federation.peers import PeerBook
from fedai_router.federation.policy import PeerPolicy
from fedai_router.outbound import (
    AddressRefused,
    Redirected,
    classify,
    error_from_reply,
    guarded_socket_factory,
    status_reason,
)
from fedai_router.resolver import ResolveTimeout
from fedai_router.store.peers import PeerRow

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("1.1.1.1", True),
        ("0.0.0.0", False),
        ("0.1.2.3", False),  # "this network"
        ("127.255.255.254", False),
        ("198.18.0.1", False),  # benchmarking
        ("192.0.0.1", False),  # IETF protocol assignments
        ("240.0.0.1", False),  # reserved
        ("255.255.255.255", False),
        ("::", False),
        ("::1", False),
        ("::ffff:0.0.0.0", False),
        ("::ffff:169.254.169.254", False),  # cloud metadata, IPv4-mapped
        ("::ffff:10.0.0.1", False),
        ("::ffff:1.1.1.1", True),
        ("::ffff:0:127.0.0.1", False),  # SIIT IPv4-translated
        ("::127.0.0.1", False),  # deprecated IPv4-compatible
        ("::1.1.1.1", False),  # ... refused whatever it embeds
        ("64:ff9b::127.0.0.1", False),  # NAT64 to loopback
        ("64:ff9b::a00:1", False),  # NAT64 to 10.0.0.1
        ("64:ff9b::101:101", True),  # NAT64 to 1.1.1.1
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("2002:101:101::1", True),  # 6to4 of 1.1.1.1
        ("2001::1", False),  # Teredo
        ("fec0::1", False),  # deprecated site-local
        ("fd00:ec2::254", False),  # cloud metadata over IPv6 (unique local)
        ("fe80::1", False),
        ("fe80::1%2", False),
        ("2606:4700:4700::1111%eth0", False),  # a zone makes any address local to a link
        ("ff02::1", False),
        ("ff0e::1", False),  # global-scope multicast
        ("2001:db8::1", False),  # documentation
        ("2606:4700:4700::1111", True),
        ("2130706433", False),  # legacy numeric forms are never judged public
        ("127.1", False),
        ("0x7f.0.0.1", False),
        ("1.1.1.1.", False),
        ("", False),
        ("not-an-address", False),
    ],
)
def test_ip_literal_judgement(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("1.2.3.4", True),
        ("2130706433", True),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("node.example", False),
        ("0x7f.0.0.1", False),
        ("1e100.net", False),
    ],
)
def test_what_aiohttp_connects_to_without_resolving(host: str, literal: bool) -> None:
    assert looks_like_ip(host) is literal


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://1.1.1.1:8080", None),
        ("https://node.example", None),  # names are resolved later, not here
        ("http://10.0.0.1", "forbidden"),
        ("http://[::ffff:127.0.0.1]:80", "forbidden"),
        ("http://[fe80::1%25eth0]:80", "forbidden"),
        ("http://2130706433/", "forbidden"),
        ("http://0.0.0.0:8080", "forbidden"),
        ("http://[::]:8080", "forbidden"),
        ("gopher://1.1.1.1", "invalid_request"),
        ("http://u:p@1.1.1.1", "invalid_request"),
    ],
)
def test_endpoint_shape_judges_written_addresses(url: str, code: str | None) -> None:
    if code is None:
        check_shape(url, allow_private=False)
    else:
        with pytest.raises(FedaiError) as err:
            check_shape(url, allow_private=False)
        assert err.value.code == code
    if code != "invalid_request":
        check_shape(url, allow_private=True)  # a private network may use any address


@pytest.mark.parametrize(
    ("family", "sockaddr", "refused"),
    [
        (socket.AF_INET, ("127.0.0.1", 80), True),
        (socket.AF_INET, ("169.254.169.254", 80), True),
        (socket.AF_INET6, ("::ffff:127.0.0.1", 80, 0, 0), True),
        (socket.AF_INET6, ("fe80::1%lo", 80, 0, 0), True),
        (socket.AF_INET6, ("::1", 80, 0, 0), True),
        (socket.AF_INET, ("1.1.1.1", 80), False),
        (socket.AF_INET6, ("2606:4700:4700::1111", 80, 0, 0), False),
    ],
)
def test_socket_guard_refuses_non_public_addresses(family: int, sockaddr: tuple[object, ...], refused: bool) -> None:
    info = (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)
    guard = guarded_socket_factory(allow_private=False)
    if refused:
        with pytest.raises(AddressRefused) as err:
            guard(info)  # type: ignore[arg-type]
        assert err.value.address == sockaddr[0]
    else:
        guard(info).close()  # type: ignore[arg-type]
    guarded_socket_factory(allow_private=True)(info).close()  # type: ignore[arg-type]


def test_refusals_share_one_text_so_happy_eyeballs_keeps_their_type() -> None:
    assert str(AddressRefused("127.0.0.1")) == str(AddressRefused("::1"))


def test_failures_are_classified_into_a_fixed_set_of_reasons() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("h", 80, False, True, None, None, None)
    cases = [
        (Redirected(307), "redirect"),
        (ReplyTooLarge("big"), "too_large"),
        (aiohttp.ClientConnectorError(key, AddressRefused("10.0.0.1")), "address_refused"),
        (aiohttp.ClientConnectorDNSError(key, ResolveTimeout()), "dns_timeout"),
        (aiohttp.ClientConnectorDNSError(key, socket.gaierror(-2, "Name or service not known")), "dns_error"),
        (aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused")), "connect_error"),
        (aiohttp.ServerTimeoutError("read"), "timeout"),
        (TimeoutError(), "timeout"),
        (aiohttp.ClientPayloadError("broken"), "transport_error"),
    ]
    assert [classify(exc)[0] for exc, _ in cases] == [reason for _, reason in cases]
    assert [status_reason(s) for s in (404, 500, 999)] == ["http_4xx", "http_5xx", "http_other"]


@pytest.mark.parametrize(
    "body", [b"<html>Apache on 10.0.0.3</html>", b'{"detail": "x"}', b'{"error": {"code": "nonsense"}}', b""]
)
def test_an_unrecognised_upstream_answer_becomes_a_generic_error(body: bytes) -> None:
    err = error_from_reply(418, body, None)
    assert (err.code, err.message) == ("upstream_error", "the node gave an unrecognised answer")


def test_a_typed_upstream_error_is_kept() -> None:
    err = error_from_reply(429, b'{"error": {"code": "capacity_exceeded", "message": "busy"}}', "2")
    assert (err.code, err.message, err.retry_after_ms) == ("capacity_exceeded", "busy", 2000)


# -- peer caps endpoints in the PeerBook ---------------------------------------------------------------------


def caps(endpoint: str) -> RouterCaps:
    return RouterCaps(
        endpoint=endpoint,
        job_types=["text-generation"],
        models=["m"],
        limits=RouterLimits(max_tokens=1024, max_request_bytes=65536),
        max_privacy=2,
    )


def book(allow_private: bool = False) -> PeerBook:
    return PeerBook(Keys.generate().pubkey, PeerPolicy(), registry=CollectorRegistry(), allow_private=allow_private)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8080",
        "http://[::1]",
        "http://10.1.2.3",
        "ftp://peer.example",
        "http://u:p@x.example",
        "http://peer.example/?q=1",
        "not a url",
    ],
)
async def test_peer_caps_with_a_bad_endpoint_are_refused(endpoint: str) -> None:
    b = book()
    peer = Keys.generate()
    event = seal(
        peer,
        Kind.ROUTER_CAPS,
        caps(endpoint),
        extra_tags=[["d", "caps"]],
        created_at=int(NOW),
        expiration=int(NOW + 100),
    )
    assert await b.handle(event, None, now=NOW) == "endpoint"
    assert b.known() == [] and b.events.labels("caps", "endpoint")._value.get() == 1
    if endpoint.startswith("http://") and "?" not in endpoint and "@" not in endpoint:
        assert await book(allow_private=True).handle(event, None, now=NOW) == "accepted"


def test_restored_caps_with_a_private_endpoint_make_the_peer_unusable() -> None:
    b = book()
    ts = datetime.fromtimestamp(NOW, UTC)
    meta = {"id": "0" * 64, "created_at": int(NOW), "expires_at": int(NOW + 100)}
    ok, private = Keys.generate(), Keys.generate()
    rows = [
        PeerRow(p.pubkey, to_builtins(caps(url)), {}, None, {"31020:caps": meta}, ts, ts)
        for p, url in ((ok, "https://peer.example"), (private, "http://192.168.1.5:8080"))
    ]
    assert b.restore(rows) == 2
    assert b.view(ok.pubkey, now=NOW) is not None
    assert b.view(private.pubkey, now=NOW) is None and b.endpoint(private.pubkey) is None


# -- the knobs -------------------------------------------------------------------------------------------------


def test_dns_bounds_have_defaults_and_limits() -> None:
    def settings(**env: str) -> RouterSettings:
        return RouterSettings.from_env(Env({"ROUTER_PRIVATE_KEY": Keys.generate().nsec, **env}))

    s = settings()
    assert (s.dns_concurrency, s.dns_timeout_ms) == (8, 2000)
    s = settings(ROUTER_DNS_CONCURRENCY="32", ROUTER_DNS_TIMEOUT_MS="500")
    assert (s.dns_concurrency, s.dns_timeout_ms) == (32, 500)
    for name, value in [
        ("ROUTER_DNS_CONCURRENCY", "0"),
        ("ROUTER_DNS_CONCURRENCY", "257"),
        ("ROUTER_DNS_TIMEOUT_MS", "9"),
        ("ROUTER_DNS_TIMEOUT_MS", "60001"),
    ]:
        with pytest.raises(ConfigError, match=name):
            settings(**{name: value})
