"""The smoke test of a llama-server binary and its stamps, against stand-in binaries (no llama.cpp build)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedai.llamacpp.server import LlamaServer, LlamaServerError, describe_exit, died_of_sigill
from fedai.llamacpp.smoke import clear_stamps, smoke_test, stamp_path, stamped, write_stamp
from tests.support import fake_llama


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF fake weights")
    return path


def test_a_binary_that_answers_passes(tmp_path: Path, model: Path) -> None:
    result = smoke_test(fake_llama.serving(tmp_path / "llama-server"), model)
    assert result.ok and not result.sigill and result.returncode is None


def test_a_binary_killed_by_sigill_at_start_is_named_as_such(tmp_path: Path, model: Path) -> None:
    result = smoke_test(fake_llama.sigill(tmp_path / "llama-server"), model)
    assert not result.ok and result.sigill and result.returncode == -4
    assert "killed by SIGILL (illegal instruction)" in result.detail and "starting llama-server" in result.detail


def test_exit_status_132_from_a_shell_counts_as_sigill(tmp_path: Path, model: Path) -> None:
    result = smoke_test(fake_llama.sigill_via_shell(tmp_path / "llama-server"), model)
    assert not result.ok and result.returncode == 132 and result.sigill


def test_a_binary_that_dies_only_when_it_generates_is_caught(tmp_path: Path, model: Path) -> None:
    """The SmolLM2 case: /health answers, then the first tokens run an instruction this CPU lacks."""
    result = smoke_test(fake_llama.dying_on_completion(tmp_path / "llama-server"), model)
    assert not result.ok and result.sigill
    assert "SIGILL" in result.detail and "loading Q4_1 kernels" in result.detail


def test_a_load_error_fails_without_being_taken_for_sigill(tmp_path: Path, model: Path) -> None:
    result = smoke_test(fake_llama.failing(tmp_path / "llama-server"), model)
    assert not result.ok and not result.sigill and result.returncode == 1
    assert "failed to load model" in result.detail


def test_llama_server_reports_how_its_process_died(tmp_path: Path, model: Path) -> None:
    server = LlamaServer(model, binary=fake_llama.sigill(tmp_path / "llama-server"), log_path=tmp_path / "l.log")
    with pytest.raises(LlamaServerError, match=r"killed by SIGILL \(illegal instruction\)") as caught:
        server.start()
    assert caught.value.returncode == -4 and caught.value.sigill


def test_describe_exit_names_sigill_and_other_deaths() -> None:
    assert describe_exit(-4) == "killed by SIGILL (illegal instruction)"
    assert describe_exit(132) == "exited with status 132: SIGILL (illegal instruction)"
    assert describe_exit(-11) == "killed by SIGSEGV"
    assert describe_exit(1) == "exited with status 1"
    assert [died_of_sigill(code) for code in (-4, 132, 4, -11, 1, 0, None)] == [True, True] + [False] * 5


def test_a_stamp_belongs_to_one_binary_one_model_and_one_cpu(tmp_path: Path, model: Path) -> None:
    binary = fake_llama.serving(tmp_path / "v" / "portable" / "llama-server")
    assert not stamped(binary, model, "cpu-a")
    written = write_stamp(binary, model, "cpu-a", cpu="Test CPU (x86_64)")
    assert written == stamp_path(binary, model, "cpu-a") and written.parent == binary.parent / "smoke"
    assert stamped(binary, model, "cpu-a")
    assert not stamped(binary, model, "cpu-b"), "another CPU checks again"
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF other weights")
    assert not stamped(binary, other, "cpu-a"), "another model checks again"
    assert not stamped(tmp_path / "missing", model, "cpu-a")


def test_a_replaced_binary_loses_its_stamp(tmp_path: Path, model: Path) -> None:
    binary = fake_llama.serving(tmp_path / "llama-server")
    write_stamp(binary, model, "cpu-a", cpu="x")
    fake_llama.sigill(binary)
    os.utime(binary, ns=(1, 1))  # a different size and mtime: a rebuilt or swapped file
    assert not stamped(binary, model, "cpu-a")


def test_clear_stamps_forgets_every_pass(tmp_path: Path, model: Path) -> None:
    binary = fake_llama.serving(tmp_path / "llama-server")
    write_stamp(binary, model, "cpu-a", cpu="x")
    clear_stamps(binary.parent)
    assert not stamped(binary, model, "cpu-a")
    clear_stamps(binary.parent)  # nothing left: no error
