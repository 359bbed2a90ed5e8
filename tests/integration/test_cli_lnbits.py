"""`fedai lnbits start`: LNbits with funded wallets whose spec files open as wallets; Ctrl-C leaves nothing running."""

from __future__ import annotations

import asyncio
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fedai.lnbits import LnbitsInstall
from fedai.payments.config import open_wallet

pytestmark = pytest.mark.integration


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_start_makes_funded_wallets_and_stops_on_ctrl_c(lnbits_install: LnbitsInstall, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "fedai.cli.main", "lnbits", "start", "--data-dir", str(tmp_path)]
    argv += ["--wallet", "alice=100", "--wallet", "bob=0"]
    process = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or "Ctrl-C stops it" not in lines[-1]:
            line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
            assert line, f"fedai lnbits start ended early: {''.join(lines)}"
            lines.append(line)
        port = int(lines[-1].split("http://127.0.0.1:")[1].split()[0])
        spec = tmp_path / "wallets" / "alice.uri"
        assert stat.S_IMODE(spec.stat().st_mode) == 0o600
        alice, bob = open_wallet(str(spec), "--wallet"), open_wallet(str(tmp_path / "wallets" / "bob.uri"))
        try:
            invoice = await bob.create_invoice(30_000, "cli", 600, "k1")
            await alice.pay_invoice(invoice.bolt11, 50_000, "k2")
            assert (await alice.balance_msat(), await bob.balance_msat()) == (70_000, 30_000)
        finally:
            await alice.aclose()
            await bob.aclose()
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert not _port_open(port)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_lnbits_dies_with_a_killed_owner(lnbits_install: LnbitsInstall, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "fedai.cli.main", "lnbits", "start", "--data-dir", str(tmp_path)]
    process = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    line = ""
    while "Ctrl-C stops it" not in line:
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        assert line, "fedai lnbits start ended early"
    port = int(line.split("http://127.0.0.1:")[1].split()[0])
    process.kill()  # no chance to clean up: the parent-death signal must end LNbits
    await process.wait()
    for _ in range(150):
        if not _port_open(port):
            break
        await asyncio.sleep(0.1)
    assert not _port_open(port)
