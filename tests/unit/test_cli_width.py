"""The CLI's tables at 80 columns, the width a terminal and a pipe give: `fedai status`, `peers` and
`route explain` against a stand-in router serving canned operator documents (in-process with COLUMNS=80, and
as a real process writing to a pipe), and an offloaded chain as `fedai infer` draws it. No line is wider
than 80 columns, headers are whole words, names are not cut, and ids are whole in `--json`."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from fedai.cli.chain_view import chain_document, print_chain
from fedai.cli.main import cli
from fedai.protocol.keys import Keys
from fedai.sdk.chain import verify_chain
from tests.unit.test_sdk_offload_chain import NODE, A, B, build

ROUTER, PEER, NODE_1, NODE_2 = (Keys.generate() for _ in range(4))
TOKEN = "fo-width-token"
LONG_MODELS = ["SmolLM2-1.7B-Instruct-Q4_K_M", "Qwen2.5-Coder-32B-Instruct-Q8_0", "llama-3.1-8b-instruct"]
NODES = [
    {
        "pubkey": node.pubkey,
        "endpoint": "http://node-with-a-rather-long-host-name.example.org:8090",
        "models": LONG_MODELS,
        "verified": True,
        "fresh": True,
        "last_seen_s": 12.4,
        "load": 1,
        "capacity": 4,
    }
    for node in (NODE_1, NODE_2)
]
STATUS = {"view": "operator", "pubkey": ROUTER.pubkey, "version": "0.1.0", "uptime_s": 3.5, "nodes": NODES}
PEERS = [
    {
        "pubkey": PEER.pubkey,
        "policy": "ok",
        "fresh": True,
        "backpressure": "NORMAL",
        "caps": {"endpoint": "https://router.of-a-peer-with-a-long-name.example.org", "models": LONG_MODELS},
        "prices": {
            "text-generation": {"models": [{"input_msat": 1100, "output_msat": 2200}], "surge": 1.5},
            "embedding": {"models": [{"input_msat": 10, "output_msat": 0}], "surge": 1},
        },
        "last_seen_s": 4.2,
    }
]
PARTS = {"price": 1.0, "load": 0.25, "latency": 0.012, "reliability": 0.0, "trust": 0.04, "unverified": 0.0}
EXPLAIN = {
    "eligible": 1,
    "nodes": [
        {"node": NODE_1.pubkey, "verdict": "ok", "max_price_msat": 1234, "score": 1.302, "parts": PARTS},
        {"node": NODE_2.pubkey, "verdict": "pinned_out", "max_price_msat": None},
    ],
    "policy": {"weights": {"price": 1.0, "load": 1.0, "latency_per_s": 1.0, "reliability": 2.0, "trust": 0.2}},
}
DOCUMENTS = {
    "/status": STATUS,
    "/federation/peers": PEERS,
    "/route/explain": EXPLAIN,
    "/health": {"pubkey": ROUTER.pubkey},
}
TABLES = [
    (["status"], ["node", "models", "fresh", "verified", "load", "seen"]),
    (["peers"], ["endpoint", "models", "msat/1k"]),
    (["route", "explain", "--model", LONG_MODELS[0]], ["node", "verdict", "max msat", "score"]),
]


@pytest.fixture(scope="module")
def canned_router() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(DOCUMENTS[self.path.split("?")[0]]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_ambient_devnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("FEDAI_DATA_DIR", "FEDAI_ROUTER", "FEDAI_KEY", "FEDAI_ADMIN_TOKEN", "FEDAI_ADMIN_KEY", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


def at_80(*args: str) -> str:
    result = CliRunner(env={"COLUMNS": "80"}).invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def assert_fits(out: str, width: int = 80) -> None:
    wide = [line for line in out.splitlines() if len(line) > width]
    assert not wide, f"lines over {width} columns: {wide}"


def assert_whole_headers(out: str, headers: list[str]) -> None:
    for header in headers:
        assert re.search(rf"(^|[\s┃]){re.escape(header)}([\s┃]|$)", out, re.M), f"header {header!r} is cut"


@pytest.mark.parametrize(("args", "headers"), TABLES)
def test_tables_fit_80_columns_with_whole_headers(canned_router: str, args: list[str], headers: list[str]) -> None:
    out = at_80(*args, "--router", canned_router, "--admin-token", TOKEN)
    assert_fits(out)
    assert_whole_headers(out, headers)


def test_status_shows_every_model_name_whole(canned_router: str) -> None:
    out = at_80("status", "--router", canned_router, "--admin-token", TOKEN)
    for model in LONG_MODELS:
        assert model in out
    assert "rather-long-host-name" not in out  # the endpoint column is --wide's


def test_peers_show_every_field_of_a_peer(canned_router: str) -> None:
    out = at_80("peers", "--router", canned_router, "--admin-token", TOKEN)
    assert "router.of-a-peer-with-a-long-name.example.org" in out
    assert ", ".join(LONG_MODELS[:2]) in out.replace("\n", " ")
    assert "text-generation from 1100 in / 2200 out ×1.5" in out


@pytest.mark.parametrize(("args", "headers"), [(["status"], ["endpoint"]), (["route", "explain", "-m", "x"], PARTS)])
def test_wide_shows_every_column_uncut(canned_router: str, args: list[str], headers: list[str]) -> None:
    out = at_80(*args, "--router", canned_router, "--admin-token", TOKEN, "--wide")
    assert_whole_headers(out, list(headers))


@pytest.mark.parametrize(("args", "key"), [(["status"], "pubkey"), (["route", "explain", "-m", "x"], "node")])
def test_json_keeps_ids_whole(canned_router: str, args: list[str], key: str) -> None:
    document = json.loads(at_80(*args, "--router", canned_router, "--admin-token", TOKEN, "--json"))
    ids = [document[key]] if key == "pubkey" else [n[key] for n in document["nodes"]]
    assert all(re.fullmatch("[0-9a-f]{64}", i) for i in ids)


@pytest.mark.parametrize(("args", "headers"), TABLES)
def test_tables_fit_when_piped(canned_router: str, args: list[str], headers: list[str]) -> None:
    """A real `fedai` process writing to a pipe: no terminal, no COLUMNS, the width rich gives a pipe."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FEDAI_ROUTER", "FEDAI_ADMIN_TOKEN")}
    command = [sys.executable, "-m", "fedai.cli.main", *args, "--router", canned_router, "--admin-token", TOKEN]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert_fits(done.stdout)
    assert_whole_headers(done.stdout, headers)


def offloaded_chain_output() -> tuple[str, dict[str, object]]:
    chain = verify_chain(*build(), A.pubkey)
    out = io.StringIO()
    print_chain(Console(file=out, width=80, highlight=False), chain)
    return out.getvalue(), chain_document(chain)


def test_an_offloaded_answer_is_drawn_through_the_provider_router_with_every_signer() -> None:
    out, _ = offloaded_chain_output()
    assert_fits(out)
    assert "client → router → provider router → node" in out
    assert "?" not in out  # every signer is named
    steps = [line.split()[1:3] for line in out.splitlines() if re.match(r"\s+\d+\s", line)]
    assert steps == [
        ["client", "request"],
        ["router", "answer"],
        ["job", "submit"],
        ["job", "result"],
        ["job", "receipt"],
        ["forwarded", "request"],
        ["node", "response"],
        ["node", "metering"],
    ]
    signers = [line.split()[-2] for line in out.splitlines() if re.match(r"\s+\d+\s", line)]
    assert signers == ["client", "router", "router", "provider", "provider", "provider", "node", "node"]


def test_an_offloaded_answer_in_json_names_the_provider_and_its_receipt() -> None:
    _, document = offloaded_chain_output()
    chain = verify_chain(*build(), A.pubkey)
    assert document["offloaded"] is True and document["provider"] == B.pubkey
    receipt = document["receipt"]
    assert isinstance(receipt, dict) and receipt["signer"] == B.pubkey and receipt["price_msat"] == 300
    assert re.fullmatch("[0-9a-f]{64}", str(receipt["event"]))
    assert chain.receipt is not None and receipt["job_id"] == chain.receipt.job_id
    assert document["node"] == NODE.pubkey
    assert all(re.fullmatch("[0-9a-f]{64}", str(e)) for e in document["events"].values())  # type: ignore[attr-defined]
