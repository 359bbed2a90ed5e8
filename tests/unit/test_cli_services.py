"""Service launchers: flags become the documented environment variables; nothing else changes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedai.cli import services
from fedai.cli.devnet_plan import node_prices, plan_ports
from fedai.cli.main import cli
from fedai.cli.services import migration_target, node_env, redact_dsn, router_env, with_overrides
from fedai.protocol.keys import Keys


def test_with_overrides_skips_missing_values_and_formats_the_rest() -> None:
    env = with_overrides(
        {"KEEP": "1", "ROUTER_PORT": "1"}, {"ROUTER_PORT": 9, "A": None, "B": True, "C": [], "D": ["x", "y"]}
    )
    assert env == {"KEEP": "1", "ROUTER_PORT": "9", "B": "true", "D": "x,y"}


def test_router_env_maps_flags_to_variables(tmp_path: Path) -> None:
    env = router_env(
        {"PATH": "/bin"},
        key="ab" * 32,
        host="127.0.0.1",
        port=8123,
        db_url="postgresql://x",
        data_dir=tmp_path,
        relays=("ws://127.0.0.1:1", "ws://127.0.0.1:2"),
        allow_private_endpoints=True,
        log_level="DEBUG",
    )
    assert env == {
        "PATH": "/bin",
        "ROUTER_PRIVATE_KEY": "ab" * 32,
        "ROUTER_HOST": "127.0.0.1",
        "ROUTER_PORT": "8123",
        "ROUTER_DB_URL": "postgresql://x",
        "FEDAI_DATA_DIR": str(tmp_path),
        "ROUTER_RELAYS": "ws://127.0.0.1:1,ws://127.0.0.1:2",
        "ROUTER_ALLOW_PRIVATE_ENDPOINTS": "true",
        "ROUTER_LOG_LEVEL": "DEBUG",
    }


def test_router_env_without_flags_is_the_environment() -> None:
    assert router_env({"ROUTER_PORT": "1"}) == {"ROUTER_PORT": "1"}


def test_node_env_maps_flags_to_variables() -> None:
    env = node_env(
        {},
        key="cd" * 32,
        port=8091,
        endpoint="http://127.0.0.1:8091",
        router_url="http://127.0.0.1:8080",
        router_pubkey="ef" * 32,
        runner="mock",
        heartbeat_ms=2000,
        relays=("ws://127.0.0.1:1",),
        price_input_msat=1500,
        price_output_msat=3000,
        capacity=8,
    )
    assert env == {
        "NODE_PRIVATE_KEY": "cd" * 32,
        "NODE_PORT": "8091",
        "NODE_ENDPOINT": "http://127.0.0.1:8091",
        "ROUTER_ENDPOINT": "http://127.0.0.1:8080",
        "ROUTER_PUBLIC_KEY": "ef" * 32,
        "NODE_RUNNER": "mock",
        "NODE_HEARTBEAT_MS": "2000",
        "NODE_RELAYS": "ws://127.0.0.1:1",
        "NODE_PRICE_INPUT_MSAT": "1500",
        "NODE_PRICE_OUTPUT_MSAT": "3000",
        "NODE_CAPACITY_MAX": "8",
    }


def test_router_command_launches_the_module_with_the_key_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys.generate()
    key_file = tmp_path / "router.key"
    key_file.write_text(keys.nsec)
    key_file.chmod(0o600)
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(argv: list[str], env: dict[str, str]) -> int:
        calls.append((list(argv), dict(env)))
        return 3

    monkeypatch.setattr(services, "run_foreground", fake_run)
    result = CliRunner().invoke(cli, ["router", "--key-file", str(key_file), "--port", "8181", "--relay", "ws://r:1"])
    assert result.exit_code == 3
    argv, env = calls[0]
    assert argv[1:] == ["-m", "fedai_router"]
    assert env["ROUTER_PRIVATE_KEY"] == keys.secret_hex
    assert env["ROUTER_PORT"] == "8181" and env["ROUTER_RELAYS"] == "ws://r:1"
    assert keys.secret_hex not in result.output and keys.nsec not in result.output


def test_node_command_launches_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(argv: list[str], env: dict[str, str]) -> int:
        calls.append((list(argv), dict(env)))
        return 0

    monkeypatch.setattr(services, "run_foreground", fake_run)
    result = CliRunner().invoke(cli, ["node", "--runner", "mock", "--router-url", "http://127.0.0.1:1", "--port", "9"])
    assert result.exit_code == 0
    argv, env = calls[0]
    assert argv[1:] == ["-m", "fedai_node"]
    assert env["NODE_RUNNER"] == "mock" and env["ROUTER_ENDPOINT"] == "http://127.0.0.1:1" and env["NODE_PORT"] == "9"


def test_relay_command_launches_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], env: dict[str, str]) -> int:
        calls.append(list(argv))
        return 0

    monkeypatch.setattr(services, "run_foreground", fake_run)
    result = CliRunner().invoke(cli, ["relay", "--port", "0"])
    assert result.exit_code == 0
    assert calls[0][1:] == ["-m", "fedai.nostr", "--host", "127.0.0.1", "--port", "0"]


def test_bad_key_file_fails_before_launching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "bad.key"
    key_file.write_text("zz-secret-zz")
    monkeypatch.setattr(services, "run_foreground", lambda argv, env: pytest.fail("must not launch"))
    result = CliRunner().invoke(cli, ["node", "--key-file", str(key_file)])
    assert result.exit_code == 2
    assert "--key-file" in result.stderr and str(key_file) in result.stderr
    assert "zz-secret-zz" not in result.output


def test_migration_target_follows_the_router_order() -> None:
    assert migration_target("postgresql://flag", {"ROUTER_DB_URL": "r", "DATABASE_URL": "d"}) == "postgresql://flag"
    assert migration_target(None, {"ROUTER_DB_URL": "r", "DATABASE_URL": "d"}) == "r"
    assert migration_target(None, {"DATABASE_URL": "d", "ROUTER_DB_URL": " "}) == "d"
    assert migration_target(None, {}) is None


def test_redact_dsn_hides_the_password() -> None:
    assert redact_dsn("postgresql://u:s3cret@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert (
        redact_dsn("postgresql://postgres:@/postgres?host=/tmp/pg") == "postgresql://postgres:@/postgres?host=/tmp/pg"
    )


def test_plan_ports() -> None:
    ports = plan_ports(20000, 3)
    assert (ports.relay, ports.router, ports.nodes) == (20000, 20001, [20002, 20003, 20004])
    free = plan_ports(None, 2)
    assert free.relay == 0 and len({free.router, *free.nodes}) == 3


def test_nodes_get_different_prices() -> None:
    prices = [node_prices(i) for i in range(4)]
    assert len(set(prices)) == 4
    assert all(p_in > 0 and p_out > 0 for p_in, p_out in prices)


def test_key_files_the_devnet_writes_are_private(tmp_path: Path) -> None:
    from fedai.cli.keyfile import load_or_create_secret

    path = tmp_path / "router.key"
    keys, created = load_or_create_secret(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    again, created = load_or_create_secret(path)
    assert not created and again.pubkey == keys.pubkey
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
