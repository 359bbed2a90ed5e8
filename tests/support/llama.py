"""A real llama-server for tests: session fixtures, registered for every test module by tests/conftest.py.

- `llama_server_bin`: the cached llama-server binary (built on first use: minutes, once per machine),
  smoke-tested on the tiny model on this CPU (once, then stamped);
- `tiny_model`: the tiny random-weight GGUF (generated on first use, < 1 s);
- `tiny_llama_server`: a running `LlamaServer` on the tiny model (4 slots), stopped at the end of the session.

Nothing is skipped: a missing binary is built. The build runs before the first test (in
`pytest_collection_finish`, only when a collected test uses these fixtures), so no test's timeout includes it,
and its progress is shown on the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedai.llamacpp import LlamaServer, ensure_llama_server, ensure_model
from fedai.llamacpp.models import TINY

FIXTURES = frozenset({"llama_server_bin", "tiny_model", "tiny_llama_server"})
TINY_PARALLEL = 4
TINY_SLOT_CONTEXT = 1024

_prepared: dict[str, Path] = {}
_failure: list[str] = []


def _needs_llama(session: pytest.Session) -> bool:
    return any(FIXTURES & set(getattr(item, "fixturenames", ())) for item in session.items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build llama-server and generate the tiny model before any test runs, if a collected test needs them."""
    if not _needs_llama(session):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    last = [-25]

    def say(line: str) -> None:
        if reporter is None:
            return
        if line.startswith("compiling llama-server: ") and line.endswith("%"):
            percent = int(line.rsplit(" ", 1)[1].rstrip("%"))
            if percent < last[0] + 25 and percent != 100:
                return
            last[0] = percent
        reporter.write_line(f"[llama.cpp] {line}")

    started = time.monotonic()
    try:
        _prepared["tiny"] = ensure_model("tiny", progress=say)
        _prepared["bin"] = ensure_llama_server(model=_prepared["tiny"], progress=say)
    except Exception as exc:  # reported by every fixture that needs it, not as a collection crash
        _failure.append(f"{type(exc).__name__}: {exc}")
        say(f"llama.cpp is not available: {exc}")
        return
    took = time.monotonic() - started
    if took > 5:
        say(f"ready after {took:.0f} s (cached from now on)")


def _get(key: str) -> Path:
    if _failure:
        pytest.fail(f"llama.cpp could not be prepared: {_failure[0]}", pytrace=False)
    if key not in _prepared:  # collected without the hook (e.g. a fixture requested dynamically)
        tiny = _prepared.setdefault("tiny", ensure_model("tiny"))
        _prepared[key] = ensure_llama_server(model=tiny) if key == "bin" else tiny
    return _prepared[key]


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    return _get("bin")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return _get("tiny")


@pytest.fixture(scope="session")
def tiny_llama_server(
    llama_server_bin: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    server = LlamaServer(
        tiny_model,
        model_id=TINY.model_id,
        binary=llama_server_bin,
        parallel=TINY_PARALLEL,
        slot_context=TINY_SLOT_CONTEXT,
        log_path=tmp_path_factory.mktemp("llama") / "llama-server.log",
    )
    with server:
        yield server
