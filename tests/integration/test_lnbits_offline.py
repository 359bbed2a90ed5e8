"""Without PyPI, the tests that need LNbits are skipped and say why; nothing else makes them skip.

A pytest run in a subprocess with an empty cache and pip pointed at a closed port on loopback: the install
fails as it would offline, and the LNbits test is reported as skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedai.llamacpp.server import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_lnbits_tests_skip_with_the_reason_when_pypi_is_unreachable(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = os.environ | {
        "FEDAI_CACHE_DIR": str(tmp_path / "cache"),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": f"{dead}/simple",
        "PIP_EXTRA_INDEX_URL": f"{dead}/extra",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "0",
        "PIP_NO_CACHE_DIR": "1",
    }
    test = "tests/integration/test_payments_lnbits.py::test_a_stopped_lnbits_is_unavailable"
    argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 skipped" in done.stdout
    assert "LNbits cannot be installed: PyPI is unreachable" in done.stdout
