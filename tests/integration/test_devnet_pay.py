"""`fedai devnet --pay` as a real process: LNbits (FakeWallet) beside Postgres, the relay, the router and two mock
nodes, each party paying or paid in its own wallet; then nothing left behind, LNbits included.

The payouts the paid demo prints are read from the wallets' balances before and after; the test checks them
against each other and against the quote it printed, and that no wallet secret reaches the output or the logs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedai.cli.devnet_pay import NETWORK, ROUTER_FEE_MSAT
from fedai.cli.postgres import stop_postgres
from fedai.lnbits import LnbitsInstall
from fedai.sdk import Client, PaymentRequiredError
from tests.integration.test_devnet import FEDAI, _running, check_devnet_file, fedai, marked_env, wait_until_gone

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """The devnet's data dir outside pytest's base directory: as root the embedded server runs as another user, and a
    pytest session starting meanwhile (another checkout's) makes /tmp/pytest-of-root 0700 again (as in
    test_starts_stops)."""
    with tempfile.TemporaryDirectory(prefix="fedai-devnet-pay-") as path:
        try:
            yield Path(path) / "net"
        finally:
            stop_postgres(Path(path) / "net" / "pg")  # what a failed test left running


PAYOUT = re.compile(r"^\s+(client|router|node-\d+)\s+npub1\S+\s+([+-]\d+) msat\s+(.+?)\s+✓$", re.MULTILINE)
QUOTE = re.compile(r"quote \S+: node (\d+) msat \+ router fee (\d+) msat = (\d+) msat")
PARTIES = {"client", "router", "node-1", "node-2"}


def nodes(info: dict[str, Any]) -> list[str]:
    return [f"node-{i + 1}" for i in range(len(info["nodes"]))]


def wallet_secrets(info: dict[str, Any]) -> list[str]:
    """Every wallet's key (the secret in its spec), after checking the spec files are the user's only."""
    files = info["lnbits"]["wallet_files"]
    assert set(files) == {"client", "router", *nodes(info)}
    assert info["client_wallet_file"] == files["client"]
    assert stat.S_IMODE(Path(files["client"]).parent.stat().st_mode) == 0o700
    found = []
    for path in map(Path, files.values()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        spec = path.read_text().strip()
        assert spec.startswith(info["lnbits"]["url"].replace("http://", "lnbits+http://")), "a spec of this LNbits"
        found.append(spec.rsplit("key=", 1)[1])
    assert len(set(found)) == len(files) and all(len(key) >= 16 for key in found)
    return found


def check_no_secret_shown(info: dict[str, Any], shown: str) -> None:
    secrets = wallet_secrets(info)
    logs = [Path(info["logs_dir"]) / f"{name}.log" for name in ("relay", "router", *nodes(info))]
    for secret in secrets:
        assert secret not in shown
        for log in logs:
            assert secret not in log.read_text(errors="replace"), log


def run_paid_demo(data_dir: Path, *runner: str) -> tuple[str, dict[str, Any]]:
    """`fedai devnet --pay --demo --once` with `runner` flags: its output and devnet.json, once it exited 0, the
    payouts it printed matched its quote, and it left nothing running."""
    marker = uuid.uuid4().hex
    started = time.monotonic()
    proc = fedai(
        "devnet", "--pay", "--demo", "--once", *runner, "--data-dir", str(data_dir), env=marked_env(marker), timeout=240
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "chain verified" in out and "✓ every proof verified" in out
    assert out.count("✓ signature") == 4

    payouts = {party: int(change) for party, change, _ in PAYOUT.findall(out)}
    assert set(payouts) == PARTIES, out
    quoted = QUOTE.search(out)
    assert quoted is not None, out
    node_share, fee, total = map(int, quoted.groups())
    paid = [p for p in ("node-1", "node-2") if payouts[p]]
    assert len(paid) == 1, payouts  # the quote's node got its share, the other node nothing
    assert payouts[paid[0]] == node_share > 0 and node_share % 1000 == 0  # whole sats: LNbits invoices
    assert payouts["router"] == fee == ROUTER_FEE_MSAT
    assert payouts["client"] == -total == -(node_share + fee)

    info = check_devnet_file(data_dir, nodes=2)
    assert info["lnbits"]["network"] == NETWORK and info["lnbits"]["url"].startswith("http://127.0.0.1:")
    assert Path(info["lnbits"]["log"]) == data_dir / "logs" / "lnbits.log"
    check_no_secret_shown(info, proc.stdout + proc.stderr)
    assert "lnbits" in info["pids"]
    for name, pid in info["pids"].items():
        assert not _running(pid), f"{name} (pid {pid}) still running"
    assert wait_until_gone(marker, data_dir / "pg", 0) == []
    print(f"fedai devnet --pay --demo --once {' '.join(runner)} took {took:.1f} s")
    return out, info


def test_paid_demo_pays_each_party_in_its_own_wallet_and_leaves_nothing(
    data_dir: Path, lnbits_install: LnbitsInstall
) -> None:
    out, info = run_paid_demo(data_dir, "--runner", "mock")
    assert info["runner"] == "mock" and "Hello from the fedai devnet!" in out


def test_paid_demo_on_a_chat_model_is_metered_within_its_quote(
    data_dir: Path, lnbits_install: LnbitsInstall, llama_server_bin: Path, tiny_model: Path
) -> None:
    """A chat model's node counts its chat template, which the router's estimate cannot see: the demo's quote
    declares a ceiling so the metered price stays within it (without it the router refuses the answer)."""
    out, info = run_paid_demo(data_dir, "--runner", "llama", "--model", "tiny")
    assert info["runner"] == "llama" and "What is 2+2?" in out


def wait_for_devnet(devnet: subprocess.Popen[bytes], data_dir: Path, out_path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while not (data_dir / "devnet.json").exists():
        assert devnet.poll() is None, out_path.read_text()
        assert time.monotonic() < deadline, out_path.read_text()
        time.sleep(0.1)
    info: dict[str, Any] = json.loads((data_dir / "devnet.json").read_text())
    return info


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_running_paid_devnet_refuses_unpaid_work_and_stops_lnbits_with_the_rest(
    tmp_path: Path, data_dir: Path, lnbits_install: LnbitsInstall, sig: signal.Signals
) -> None:
    marker = uuid.uuid4().hex
    out_path = tmp_path / "devnet.out"
    args = ("devnet", "--pay", "--runner", "mock", "--nodes", "1", "--data-dir", str(data_dir))
    with out_path.open("w") as out:  # a process group of its own, as a shell's job: the signal goes to all of it
        devnet = subprocess.Popen(
            [*FEDAI, *args], env=marked_env(marker), stdout=out, stderr=out, start_new_session=True
        )
    try:
        info = wait_for_devnet(devnet, data_dir, out_path)
        assert info["client_wallet_file"] and info["lnbits"] is not None
        with Client(info["router"]["url"], info["client_key_file"], router_pubkey=info["router"]["pubkey"]) as sdk:
            quote = sdk.quote(info["nodes"][0]["model"], max_tokens=8, prompt="hello")
            with pytest.raises(PaymentRequiredError) as refused:  # payment is on: unpaid work is not served
                sdk.infer(info["nodes"][0]["model"], "hello", max_tokens=8, quote_id=quote.quote.quote_id)
        assert refused.value.status == 402 and refused.value.payment_request is not None
        lnbits_pid = info["pids"]["lnbits"]
        assert _running(lnbits_pid)

        os.killpg(devnet.pid, sig)  # as a terminal does (Ctrl-C, closing it): LNbits, in its own group, gets none
        assert devnet.wait(timeout=60) == 0, out_path.read_text()
        assert sig.name in out_path.read_text()
        assert wait_until_gone(marker, data_dir / "pg", 20) == []
        for name, pid in info["pids"].items():
            assert not _running(pid), f"{name} (pid {pid}) still running"
        check_no_secret_shown(info, out_path.read_text())
    finally:
        if devnet.poll() is None:
            devnet.kill()
            devnet.wait()


def test_lnbits_dying_stops_the_devnet_naming_it(tmp_path: Path, data_dir: Path, lnbits_install: LnbitsInstall) -> None:
    marker = uuid.uuid4().hex
    out_path = tmp_path / "devnet.out"
    args = ("devnet", "--pay", "--runner", "mock", "--nodes", "1", "--data-dir", str(data_dir))
    with out_path.open("w") as out:
        devnet = subprocess.Popen([*FEDAI, *args], env=marked_env(marker), stdout=out, stderr=out)
    try:
        pids = wait_for_devnet(devnet, data_dir, out_path)["pids"]
        os.kill(pids["lnbits"], signal.SIGKILL)
        assert devnet.wait(timeout=30) == 1, out_path.read_text()
        assert "lnbits stopped unexpectedly" in out_path.read_text()
        assert wait_until_gone(marker, data_dir / "pg", 20) == []
        assert not any(_running(pid) for pid in pids.values())
    finally:
        if devnet.poll() is None:
            devnet.kill()
            devnet.wait()
