"""`fedai infer|quote|status`: where the router comes from, argument checks, and error reporting."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from fedai.cli.client import Target, resolve_target
from fedai.cli.devnet_file import DevnetInfo, NodeEntry, RouterEntry, write_devnet
from fedai.cli.keyfile import write_secret_file
from fedai.cli.main import cli
from fedai.cli.output import as_fedai_error
from fedai.cli.processes import free_port
from fedai.protocol.errors import FedaiError
from fedai.protocol.keys import Keys
from fedai.protocol.nip98 import verify_auth_header
from fedai.sdk import ConnectionLost, RouterError, RouterTimeout, RouterUnreachable

ROUTER = Keys.generate()
NODE = Keys.generate()
TOKEN = "fo-operator-token"
OPERATOR = Keys.generate()
PUBLIC = {
    "view": "public",
    "pubkey": ROUTER.pubkey,
    "version": "0.1.0",
    "uptime_s": 12.5,
    "backpressure": "NORMAL",
    "nodes": {"fresh": 1, "total": 2},
    "models": 1,
    "relays": {"configured": 1, "connected": 1},
    "peers": 0,
}
STATUS = {
    "view": "operator",
    "pubkey": ROUTER.pubkey,
    "version": "0.1.0",
    "uptime_s": 12.5,
    "relays": {"ws://127.0.0.1:7777": True},
    "nodes": [
        {
            "pubkey": NODE.pubkey,
            "endpoint": "http://127.0.0.1:8090",
            "models": ["fedai-mock-1"],
            "verified": True,
            "source": "heartbeat",
            "fresh": True,
            "last_seen_s": 0.4,
            "in_flight": 0,
            "load": 1,
            "capacity": 4,
            "cooldown_s": 0.0,
        }
    ],
}


@pytest.fixture(autouse=True)
def no_ambient_devnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run where no .fedai/devnet.json exists and no router is configured."""
    monkeypatch.chdir(tmp_path)
    for name in ("FEDAI_DATA_DIR", "FEDAI_ROUTER", "FEDAI_KEY", "FEDAI_ADMIN_TOKEN", "FEDAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)


def _operator(header: str, url: str) -> bool:
    """The stand-in router's operator check: the token, or a NIP-98 event by OPERATOR for exactly this URL."""
    if header == f"Bearer {TOKEN}":
        return True
    try:
        return verify_auth_header(header, method="GET", url=url, body=b"").pubkey == OPERATOR.pubkey
    except FedaiError:
        return False


@pytest.fixture
def status_router() -> Iterator[str]:
    """A stand-in router answering GET /status (operator view with operator credentials, else the public
    summary) and /health with canned JSON."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
            operator = _operator(self.headers.get("Authorization", ""), url)
            document = (STATUS if operator else PUBLIC) if self.path == "/status" else {"pubkey": ROUTER.pubkey}
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make_devnet(directory: Path, router_url: str) -> DevnetInfo:
    client = Keys.generate()
    (directory / "keys").mkdir(parents=True)
    write_secret_file(directory / "keys" / "client.key", client)
    info = DevnetInfo(
        relay_url="ws://127.0.0.1:1",
        database_url="postgresql://x",
        router=RouterEntry(url=router_url, pubkey=ROUTER.pubkey, npub=ROUTER.npub),
        nodes=[NodeEntry(url="http://127.0.0.1:2", pubkey=NODE.pubkey, npub=NODE.npub, model="fedai-mock-1")],
        client_key_file=str(directory / "keys" / "client.key"),
        logs_dir=str(directory / "logs"),
        pids={},
    )
    write_devnet(directory, info)
    return info


def dead_router() -> str:
    return f"http://127.0.0.1:{free_port()}"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_no_router_anywhere_is_a_usage_error() -> None:
    code, _, err = invoke("infer", "hello")
    assert code == 2
    assert "no router" in err and "fedai devnet" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hello", "--prompt", "again"], "exactly one of PROMPT"),
        ([], "exactly one of PROMPT"),
        (["--messages", "[{"], "not JSON"),
        (["--messages", "[]"], "non-empty JSON array"),
        (["--messages", '[{"role": "user"}]'], "non-empty JSON array"),
    ],
)
def test_infer_argument_errors(args: list[str], message: str) -> None:
    code, _, err = invoke("infer", "--router", dead_router(), *args)
    assert code == 2
    assert message in err


def test_a_call_without_a_client_key_says_so_once_on_stderr() -> None:
    """Outside a devnet and without --key, every call signs with a new random key: the user is told, once."""
    for command in ("infer", "quote"):
        code, out, err = invoke(command, "--router", dead_router(), "--model", "m", "hello")
        assert code == 1 and out == ""
        assert err.count("note: no client key") == 1 and "fedai keys gen --out client.key" in err
        note = err[: err.index("error ")].splitlines()
        assert len(note) == 4 and all(len(line) <= 80 for line in note)
    code, _, err = invoke("infer", "--router", dead_router(), "--key", Keys.generate().nsec, "--model", "m", "hi")
    assert code == 1 and "note:" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "neither JSON nor an existing file"), ("not json", "not JSON"), ('{"role": "user"}', "non-empty JSON")],
)
def test_messages_from_a_file_are_checked(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "messages.json"
    if content is not None:
        path.write_text(content)
    code, _, err = invoke("infer", "--router", dead_router(), "--messages", str(path))
    assert code == 2 and message in err


def test_messages_from_a_file_or_stdin_reach_the_router(tmp_path: Path) -> None:
    """Well-formed messages get past the checks (the call then fails only on the missing router)."""
    path = tmp_path / "messages.json"
    path.write_text('[{"role": "user", "content": "hi"}]')
    code, _, err = invoke("infer", "--router", dead_router(), "-m", "m", "--messages", str(path))
    assert code == 1 and "router unreachable" in err
    result = CliRunner().invoke(
        cli, ["infer", "--router", dead_router(), "-m", "m", "--messages", "-"], input=path.read_text()
    )
    assert result.exit_code == 1 and "router unreachable" in result.stderr


def test_quote_needs_prompt_or_input_tokens() -> None:
    code, _, err = invoke("quote", "--router", dead_router(), "--model", "m")
    assert code == 2
    assert "exactly one of PROMPT, --prompt, --messages or --input-tokens" in err


def test_unreachable_router_reports_code_and_hint() -> None:
    url = dead_router()
    code, out, err = invoke("infer", "--router", url, "--key", Keys.generate().nsec, "--model", "m", "hello")
    assert code == 1
    assert out == ""
    assert err.startswith("error upstream_error: router unreachable")
    assert f"hint: is the router at {url} running?" in err


def test_unreachable_router_json_error_document() -> None:
    code, out, _ = invoke("infer", "--router", dead_router(), "--model", "m", "--json", "hello")
    assert code == 1
    document = json.loads(out)
    assert document["error"]["code"] == "upstream_error"
    assert "router unreachable" in document["error"]["message"]


def test_devnet_file_supplies_router_pubkey_and_client_key(tmp_path: Path) -> None:
    info = make_devnet(tmp_path / "net", "http://127.0.0.1:9")
    target = resolve_target(None, None, None, tmp_path / "net")
    assert target.router_url == "http://127.0.0.1:9"
    assert target.router_pubkey == ROUTER.pubkey
    assert (
        target.keys is not None
        and target.keys.secret_hex == Keys.parse(Path(info.client_key_file).read_text()).secret_hex
    )


def test_default_devnet_is_found_in_dot_fedai(tmp_path: Path) -> None:
    make_devnet(tmp_path / ".fedai", "http://127.0.0.1:9")
    assert resolve_target(None, None, None, None).router_url == "http://127.0.0.1:9"


def test_explicit_router_wins_and_is_not_pinned_to_the_devnet_key(tmp_path: Path) -> None:
    make_devnet(tmp_path / ".fedai", "http://127.0.0.1:9")
    target = resolve_target("http://127.0.0.1:5/", None, None, None)
    assert target.router_url == "http://127.0.0.1:5"
    assert target.router_pubkey is None and target.devnet is None


def test_explicit_key_wins_over_the_devnet_client(tmp_path: Path) -> None:
    make_devnet(tmp_path / "net", "http://127.0.0.1:9")
    mine = Keys.generate()
    target = resolve_target(None, None, mine.nsec, tmp_path / "net")
    assert target.keys is not None and target.keys.pubkey == mine.pubkey


def test_missing_devnet_file_is_reported(tmp_path: Path) -> None:
    code, _, err = invoke("status", "--devnet", str(tmp_path / "nowhere"))
    assert code == 2
    assert "devnet.json not found" in err


def test_bad_client_key_is_refused_without_echo() -> None:
    code, _, err = invoke("infer", "--router", dead_router(), "--key", "deadbeef" * 7, "hi")
    assert code == 2
    assert "--key" in err and "deadbeef" not in err


def test_bad_router_pubkey_is_refused() -> None:
    code, _, err = invoke("status", "--router", dead_router(), "--router-pubkey", "npub1nope")
    assert code == 2
    assert "--router-pubkey" in err


def test_devnet_hint_when_its_router_is_down(tmp_path: Path) -> None:
    url = dead_router()
    make_devnet(tmp_path / "net", url)
    code, _, err = invoke("status", "--devnet", str(tmp_path / "net"))
    assert code == 1
    assert f"is the devnet's router at {url} running?" in err


def test_status_json_is_the_router_document(status_router: str) -> None:
    code, out, _ = invoke("status", "--router", status_router, "--admin-token", TOKEN, "--json")
    assert code == 0
    assert json.loads(out) == STATUS


def test_status_without_operator_credentials_shows_the_public_summary(status_router: str) -> None:
    code, out, _ = invoke("status", "--router", status_router)
    assert code == 0
    assert ROUTER.pubkey in out and "1 fresh of 2" in out and "public summary" in out
    assert "127.0.0.1:8090" not in out


def test_status_sends_the_token_from_a_file_or_the_environment(
    status_router: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    code, out, _ = invoke("status", "--router", status_router, "--admin-token", str(token_file), "--json")
    assert (code, json.loads(out)["view"]) == (0, "operator")
    monkeypatch.setenv("FEDAI_ADMIN_TOKEN", TOKEN)
    code, out, _ = invoke("status", "--router", status_router, "--json")
    assert (code, json.loads(out)["view"]) == (0, "operator")


def test_status_signs_nip98_with_an_operator_key(status_router: str) -> None:
    code, out, _ = invoke("status", "--router", status_router, "--admin-key", OPERATOR.nsec, "--json")
    assert (code, json.loads(out)["view"]) == (0, "operator")
    code, out, _ = invoke("status", "--router", status_router, "--admin-key", Keys.generate().nsec, "--json")
    assert (code, json.loads(out)["view"]) == (0, "public")


def test_status_uses_the_devnet_operator_token(status_router: str, tmp_path: Path) -> None:
    info = make_devnet(tmp_path / "net", status_router)
    token_file = tmp_path / "net" / "admin.token"
    token_file.write_text(TOKEN)
    write_devnet(tmp_path / "net", msgspec.structs.replace(info, admin_token_file=str(token_file)))
    code, out, _ = invoke("status", "--devnet", str(tmp_path / "net"), "--json")
    assert (code, json.loads(out)["view"]) == (0, "operator")


def test_status_table_for_people(status_router: str) -> None:
    code, out, _ = invoke("status", "--router", status_router, "--admin-token", TOKEN)
    assert code == 0
    assert ROUTER.npub in out and ROUTER.pubkey in out
    assert "fedai-mock-1" in out and "1/4" in out
    assert "nodes (1)" in out
    assert "127.0.0.1:8090" not in out  # the endpoint column is --wide's
    code, out, _ = invoke("status", "--router", status_router, "--admin-token", TOKEN, "--wide")
    assert code == 0 and "127.0.0.1:8090" in out and "fedai-mock-1" in out


def test_status_refuses_a_router_with_another_key(status_router: str) -> None:
    other = Keys.generate()
    code, _, err = invoke("status", "--router", status_router, "--router-pubkey", other.npub)
    assert code == 1
    assert "not the pinned one" in err


def test_the_cli_hints_at_a_stopped_router_only_when_it_could_not_connect() -> None:
    target = Target("http://127.0.0.1:9", None, None, None)
    assert target.hint(RouterUnreachable("router unreachable: ConnectError")) is not None
    assert target.hint(RouterTimeout("router did not answer in time")) is None
    assert target.hint(RouterError("upstream_error", "router unreachable: every node")) is None
    assert as_fedai_error(RouterTimeout("slow")).code == "upstream_timeout"
    assert as_fedai_error(ConnectionLost("broke")).code == "upstream_error"
