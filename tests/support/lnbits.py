"""A real LNbits for tests (FakeWallet funding source), registered for every test module by tests/conftest.py.

- `lnbits_install`: the cached LNbits venv (installed from PyPI on first use: ~1 minute, once per machine);
- `lnbits`: one LNbits server for the session, its first install done (`LnbitsHarness`);
- `lnbits_wallet`: a factory of new wallets in it, funded with the sats asked for.

The install runs before the first test (in `pytest_collection_finish`, only when a collected test uses these
fixtures), so no test's timeout includes it, and its progress is shown on the terminal. The tests that need
LNbits are skipped, with the reason, only when PyPI cannot be reached; any other failure fails them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from fedai.lnbits import LnbitsAdmin, LnbitsInstall, LnbitsServer, LnbitsUnreachable, LnbitsWallet, ensure_lnbits

FIXTURES = frozenset({"lnbits_install", "lnbits", "lnbits_wallet"})

_prepared: dict[str, LnbitsInstall] = {}
_unreachable: list[str] = []
_failure: list[str] = []


def _needs_lnbits(session: pytest.Session) -> bool:
    return any(FIXTURES & set(getattr(item, "fixturenames", ())) for item in session.items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Install LNbits before any test runs, if a collected test needs it."""
    if not _needs_lnbits(session):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[lnbits] {line}")

    started = time.monotonic()
    try:
        _prepared["install"] = ensure_lnbits(progress=say)
    except LnbitsUnreachable as exc:
        _unreachable.append(str(exc).splitlines()[0])
        say(f"PyPI cannot be reached: the LNbits tests will be skipped ({exc})")
        return
    except Exception as exc:  # reported by every fixture that needs it, not as a collection crash
        _failure.append(f"{type(exc).__name__}: {exc}")
        say(f"LNbits is not available: {exc}")
        return
    took = time.monotonic() - started
    if took > 5:
        say(f"ready after {took:.0f} s (cached from now on)")


@pytest.fixture(scope="session")
def lnbits_install() -> LnbitsInstall:
    if _unreachable:
        pytest.skip(f"LNbits cannot be installed: PyPI is unreachable ({_unreachable[0]})")
    if _failure:
        pytest.fail(f"LNbits could not be installed: {_failure[0]}", pytrace=False)
    if "install" not in _prepared:  # collected without the hook (e.g. a fixture requested dynamically)
        _prepared["install"] = ensure_lnbits()
    return _prepared["install"]


@dataclass
class LnbitsHarness:
    """A running LNbits and its superuser."""

    server: LnbitsServer
    admin: LnbitsAdmin

    @property
    def url(self) -> str:
        return self.server.url

    def wallet(self, name: str, sats: int = 0) -> LnbitsWallet:
        made = self.admin.create_wallet(name)
        if sats:
            self.admin.fund(made, sats)
        return made


@pytest.fixture(scope="session")
def lnbits(lnbits_install: LnbitsInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LnbitsHarness]:
    root = tmp_path_factory.mktemp("lnbits")
    server = LnbitsServer(lnbits_install, root / "data", log_path=root / "lnbits.log")
    with server, LnbitsAdmin(server.url) as admin:  # `with server` has started it when server.url is read
        admin.first_install()
        yield LnbitsHarness(server, admin)


@pytest.fixture
def lnbits_wallet(lnbits: LnbitsHarness) -> Callable[..., LnbitsWallet]:
    """`lnbits_wallet(name, sats=0)`: a new wallet in the session's LNbits, funded with `sats`."""
    return lnbits.wallet
