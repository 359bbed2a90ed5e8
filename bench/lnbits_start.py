"""LNbits for tests and the devnet: how long the first install took, and how long a cached start takes.

Installs LNbits first if it is not cached (`fedai.lnbits.ensure_lnbits`; the time of that install, with
pip's cache as it was, is what the stamp recorded). Then `--starts` times: start LNbits on a fresh data
directory until it answers, do the first install (superuser), create and fund two wallets, pay an invoice from
one to the other, stop it. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from fedai.lnbits import LnbitsAdmin, LnbitsServer, ensure_lnbits
from fedai.lnbits.install import STAMP


def one_round(run: int) -> dict[str, float]:
    install = ensure_lnbits()
    with tempfile.TemporaryDirectory(prefix=f"lnbits-bench-{run}-") as scratch:
        started = time.perf_counter()
        server = LnbitsServer(install, Path(scratch) / "data", log_path=Path(scratch) / "lnbits.log")
        with server, LnbitsAdmin(server.url) as admin:
            answered = time.perf_counter()
            admin.first_install()
            payee, payer = admin.create_wallet("payee"), admin.create_wallet("payer")
            admin.fund(payer, 1000)
            set_up = time.perf_counter()
            with httpx.Client(base_url=server.url, timeout=30) as http:
                made = http.post(
                    "/api/v1/payments",
                    json={"out": False, "amount": 21, "memo": "bench"},
                    headers={"X-Api-Key": payee.invoice_key},
                )
                paid = http.post(
                    "/api/v1/payments",
                    json={"out": True, "bolt11": made.json()["bolt11"]},
                    headers={"X-Api-Key": payer.admin_key},
                )
                paid.raise_for_status()
            done = time.perf_counter()
        stopped = time.perf_counter()
    return {
        "start_to_answer_s": answered - started,
        "first_install_and_two_funded_wallets_s": set_up - answered,
        "invoice_and_payment_s": done - set_up,
        "stop_s": stopped - done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    began = time.perf_counter()
    install = ensure_lnbits(progress=lambda line: print(line, file=sys.stderr))
    ensure_s = time.perf_counter() - began
    stamp = json.loads((install.venv / STAMP).read_text())
    rounds = [one_round(run) for run in range(args.starts)]
    report = {
        "lnbits_version": install.version,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "first_install_s": stamp.get("install_seconds"),
        "ensure_lnbits_now_s": round(ensure_s, 3),
        "rounds": len(rounds),
        "median": {name: round(statistics.median(r[name] for r in rounds), 3) for name in rounds[0]},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
