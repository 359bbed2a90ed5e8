"""`fedai llama …` and the devnet's llama options: progress display, model resolution, ports, slots, devnet.json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from fedai.cli.devnet_file import DevnetInfo, LlamaEntry, RouterEntry, read_devnet, write_devnet
from fedai.cli.devnet_plan import (
    DEMO_PROMPT,
    LLAMA_PROMPT,
    DevnetOptions,
    llama_parallel,
    node_capacity,
    plan_ports,
)
from fedai.cli.llama import progress_printer, resolve_model
from fedai.cli.main import cli
from fedai.llamacpp.models import ModelError


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("FEDAI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_llama_model_prints_the_cached_path(cache: Path) -> None:
    result = CliRunner().invoke(cli, ["llama", "model", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model_id"] == "fedai-tiny-llama" and document["bytes"] < 1_000_000
    assert Path(document["path"]).is_file() and Path(document["path"]).is_relative_to(cache)
    plain = CliRunner().invoke(cli, ["llama", "model", "tiny"])
    assert plain.exit_code == 0 and plain.stdout.strip() == document["path"]


def test_llama_model_refuses_unknown_names() -> None:
    result = CliRunner().invoke(cli, ["llama", "model", "gpt5"])
    assert result.exit_code == 2 and "gpt5" in result.output


def test_llama_build_uses_fedai_llama_server(cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("FEDAI_LLAMA_SERVER", str(binary))
    result = CliRunner().invoke(cli, ["llama", "build", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(binary)
    monkeypatch.setenv("FEDAI_LLAMA_SERVER", str(tmp_path / "missing"))
    failed = CliRunner().invoke(cli, ["llama", "build"])
    assert failed.exit_code == 1 and "is not an executable file" in failed.output


def test_llama_build_is_portable_unless_asked_and_smoke_tests_on_the_model(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, object]] = []
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")

    def fake_ensure(version: str, **options: object) -> Path:
        calls.append(options)
        return binary

    monkeypatch.setattr("fedai.cli.llama.ensure_llama_server", fake_ensure)
    monkeypatch.delenv("FEDAI_LLAMA_NATIVE", raising=False)
    plain = CliRunner().invoke(cli, ["llama", "build", "--json"])
    assert plain.exit_code == 0, plain.output
    assert (
        calls[-1]["native"] is False and calls[-1]["model"] == cache / "models" / "tiny" / "1" / "fedai-tiny-llama.gguf"
    )
    assert json.loads(plain.stdout)["native"] is False and len(json.loads(plain.stdout)["cpu_fingerprint"]) == 16
    assert CliRunner().invoke(cli, ["llama", "build", "--native"]).exit_code == 0
    assert calls[-1]["native"] is True
    monkeypatch.setenv("FEDAI_LLAMA_NATIVE", "1")
    assert CliRunner().invoke(cli, ["llama", "build"]).exit_code == 0 and calls[-1]["native"] is True
    assert CliRunner().invoke(cli, ["llama", "build", "--portable"]).exit_code == 0 and calls[-1]["native"] is False
    monkeypatch.setenv("FEDAI_LLAMA_NATIVE", "maybe")
    refused = CliRunner().invoke(cli, ["llama", "build"])
    assert refused.exit_code == 1 and "FEDAI_LLAMA_NATIVE must be 1 or 0" in refused.output


def test_resolve_model_takes_names_and_paths(cache: Path, tmp_path: Path) -> None:
    path, model_id = resolve_model("tiny")
    assert model_id == "fedai-tiny-llama" and path.is_file()
    mine = tmp_path / "my-model.gguf"
    mine.write_bytes(b"GGUF")
    assert resolve_model(str(mine)) == (mine, "my-model")
    with pytest.raises(ModelError, match="neither a known model"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_progress_without_a_terminal_prints_milestones_and_every_tenth_percent() -> None:
    buffer = io.StringIO()
    show = progress_printer(Console(file=buffer, width=200, force_terminal=False), prefix="  ")
    show("downloading the sdist")
    for percent in range(101):
        show(f"compiling llama-server: {percent}%")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "  downloading the sdist"
    assert [line.strip() for line in lines[1:]] == [f"compiling llama-server: {p}%" for p in range(0, 101, 10)]


def test_devnet_options_pick_the_node_runner_and_the_prompt() -> None:
    llama = DevnetOptions()
    assert llama.runner == "llama" and llama.model == "smollm2"
    assert llama.node_runner == "llama_cpp" and llama.demo_prompt == LLAMA_PROMPT == "What is 2+2?"
    mock = DevnetOptions(runner="mock")
    assert mock.node_runner == "mock" and mock.demo_prompt == DEMO_PROMPT
    assert DevnetOptions(runner="llama_cpp").uses_llama, "the node runner's own name means the same"
    assert DevnetOptions(runner="openai").node_runner == "openai", "other runners pass through as NODE_RUNNER"
    assert DevnetOptions(prompt="hi").demo_prompt == "hi"


def test_llama_server_gets_the_port_after_the_nodes_and_a_slot_per_capacity() -> None:
    ports = plan_ports(20000, 3)
    assert ports.llama == 20005
    free = plan_ports(None, 2)
    assert len({free.router, *free.nodes, free.llama}) == 4
    assert llama_parallel(2) == 8 and llama_parallel(3, 2) == 6
    assert node_capacity({}) == 4 and node_capacity({"NODE_CAPACITY_MAX": "6"}) == 6
    assert node_capacity({"NODE_CAPACITY_MAX": "lots"}) == 4


def test_devnet_file_round_trips_the_llama_entry(tmp_path: Path) -> None:
    info = DevnetInfo(
        relay_url="ws://127.0.0.1:1",
        database_url="postgresql://x",
        nodes=[],
        router=RouterEntry(url="http://127.0.0.1:2", pubkey="a" * 64, npub="npub1x"),
        client_key_file="k",
        logs_dir="l",
        pids={},
        runner="llama",
        llama=LlamaEntry(url="http://127.0.0.1:3", model="SmolLM2-135M-Instruct", log="l/llama.log"),
    )
    write_devnet(tmp_path, info)
    assert read_devnet(tmp_path) == info
    document = json.loads((tmp_path / "devnet.json").read_text())
    assert document["runner"] == "llama"
    assert document["llama"] == {"url": "http://127.0.0.1:3", "model": "SmolLM2-135M-Instruct", "log": "l/llama.log"}


@pytest.mark.parametrize(("flags", "slots"), [([], 4), (["--parallel", "2"], 2)])
def test_llama_serve_runs_as_many_slots_as_a_node_admits(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: list[str], slots: int
) -> None:
    argv_file = tmp_path / "argv"
    binary = tmp_path / "llama-server"
    binary.write_text(f'#!/bin/sh\necho "$@" > {argv_file}\n')
    binary.chmod(0o755)
    monkeypatch.setenv("FEDAI_LLAMA_SERVER", str(binary))
    result = CliRunner().invoke(cli, ["llama", "serve", "--model", "tiny", "--port", "18085", *flags])
    assert result.exit_code == 0, result.output
    argv = argv_file.read_text().split()
    assert argv[argv.index("--parallel") + 1] == str(slots)
    assert argv[argv.index("-c") + 1] == str(2048 * slots)  # the default slot context, per slot
    assert f"NODE_CAPACITY_MAX={slots}" in result.stderr  # what to give the node in front of it
