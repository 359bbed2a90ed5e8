"""Paid against unpaid `/infer`, end to end: router CPU per request and the added p50.

A real router and a real node (mock runner) as separate processes on loopback, with PostgreSQL (`--database-url`,
else $DATABASE_URL, else an embedded server). Both have their own wallet and take payments without requiring them
(ROUTER_WALLET with a fee, NODE_WALLET), so the same router serves both kinds of request. TEST WALLETS: every
wallet is the real LND backend against tests/support/fake_lnd.py (LND's REST shapes over one in-memory ledger,
real regtest invoices and preimages), served from a thread of this process.

For each request: a quote (both kinds, so the quote path is the same), and for the paid kind `POST /pay` and
the payment from the client's wallet, all before measuring. Then, one request at a time, the signed
`infer.request`s are sent (unpaid, paid, alternating in blocks), and the router's and the node's CPU time
(psutil, user + system) over each phase is divided by its requests; the processes' idle CPU (measured for
IDLE_S before the blocks) times each phase's duration is also reported subtracted, since a slower phase accrues
more of the timers' and heartbeats' CPU per request. What a paid request adds on the router is
the proof check (sha256 of each preimage), the single-use claim, its consumption, the settlement statement and
counting; on the node, the forwarded proof's check, a wallet lookup and its own claim. Prints one JSON document.
The goal: proof checking and the claim add under 0.2 ms of router CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support: the test wallets

from tests.support.fake_lnd import running_lnd
from tests.support.lightning import Ledger
from tests.support.tls import self_signed

from fedai.cli.processes import Supervisor, wait_for_http
from fedai.payments.config import open_wallet
from fedai.protocol.envelope import seal
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest, PaymentProof
from fedai.sdk import AsyncClient
from support import prepare_database, spawn_node, spawn_router

MODEL = "fedai-mock-1"
PROMPT = "What is 2+2? Answer briefly."
MAX_TOKENS = 16
NETWORK = "regtest"
TARGET_CPU_MS = 0.2
BLOCK = 50  # requests per block; unpaid and paid blocks alternate so both see the same machine
IDLE_S = 10.0  # how long the processes' idle CPU is measured


class Wallets:
    """The fake LNDs (client, node, router) served from a thread with its own event loop."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.specs: dict[str, str] = {}
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def __enter__(self) -> Wallets:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the test wallets did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        ledger = Ledger()
        ledger.fee_base_msat = 0
        ledger.add_node("client", balance_msat=10**12)
        ledger.add_node("node", balance_msat=0)
        ledger.add_node("router", balance_msat=0)
        tls = self_signed(self.tmp)
        async with AsyncExitStack() as stack:
            for name in ("client", "node", "router"):
                self.specs[name] = (await stack.enter_async_context(running_lnd(ledger, name, tls, self.tmp))).spec
            self._ready.set()
            await self._stop.wait()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def prepare(client: AsyncClient, client_spec: str, n: int, paid: bool) -> list[tuple[str, PaymentProof | None]]:
    """`n` quotes, each paid when `paid`: (quote id, proof)."""
    wallet = open_wallet(client_spec, "--wallet")
    out: list[tuple[str, PaymentProof | None]] = []
    try:
        for _ in range(n):
            quote = await client.quote(MODEL, max_tokens=MAX_TOKENS, prompt=PROMPT)
            proof = await client.pay(quote, wallet, network=NETWORK) if paid else None
            out.append((quote.quote.quote_id, proof))
    finally:
        await wallet.aclose()
    return out


def body(keys: Keys, router: str, prepared: tuple[str, PaymentProof | None]) -> bytes:
    """The signed infer.request, signed just before it is sent (a receiver refuses events older than its skew)."""
    quote_id, proof = prepared
    payload = InferenceRequest(model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS, quote_id=quote_id, payment=proof)
    return seal(keys, Kind.INFER_REQUEST, payload, to=router, nonce=True).to_json()


async def send(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        text = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {text[:300]!r}")
    return (time.perf_counter() - started) * 1000


@asynccontextmanager
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        yield s


async def measure(router_url: str, pids: dict[str, int], keys: Keys, router: str, spec: str, n: int) -> dict[str, Any]:
    async with AsyncClient(router_url, keys=keys, router_pubkey=router) as client:
        warm = await prepare(client, spec, 20, True) + await prepare(client, spec, 20, False)
        unpaid = await prepare(client, spec, n, False)
        paid = await prepare(client, spec, n, True)
    kinds: dict[str, dict[str, Any]] = {
        k: {"latency_ms": [], "cpu": {"router": 0.0, "node": 0.0}, "wall_s": 0.0} for k in ("unpaid", "paid")
    }
    async with session() as s:
        for prepared in warm:
            await send(s, router_url + "/infer", body(keys, router, prepared))
        idle = await idle_cpu(pids)
        for start in range(0, n, BLOCK):
            for kind, batch in (("unpaid", unpaid), ("paid", paid)):
                signed = [body(keys, router, prepared) for prepared in batch[start : start + BLOCK]]
                before = {who: cpu_seconds(pid) for who, pid in pids.items()}
                started = time.perf_counter()
                for one in signed:
                    kinds[kind]["latency_ms"].append(await send(s, router_url + "/infer", one))
                kinds[kind]["wall_s"] += time.perf_counter() - started
                for who, pid in pids.items():
                    kinds[kind]["cpu"][who] += cpu_seconds(pid) - before[who]
    results = {kind: summarize(v["latency_ms"], v["cpu"], v["wall_s"], idle) for kind, v in kinds.items()}
    return {**results, "idle_cpu_ms_per_s": {who: round(v * 1000, 3) for who, v in idle.items()}}


async def idle_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds per second each process spends with no request (heartbeats, reconciliation, timers): a slower
    phase accrues more of it per request, so it is also reported subtracted."""
    before = {who: cpu_seconds(pid) for who, pid in pids.items()}
    await asyncio.sleep(IDLE_S)
    return {who: (cpu_seconds(pid) - before[who]) / IDLE_S for who, pid in pids.items()}


def summarize(latencies: list[float], cpu: dict[str, float], wall_s: float, idle: dict[str, float]) -> dict[str, Any]:
    n = len(latencies)
    return {
        "requests": n,
        "p50_ms": round(statistics.median(latencies), 3),
        "p90_ms": round(percentile(latencies, 0.9), 3),
        "router_cpu_ms_per_request": round(cpu["router"] * 1000 / n, 3),
        "node_cpu_ms_per_request": round(cpu["node"] * 1000 / n, 3),
        "router_cpu_ms_per_request_less_idle": round((cpu["router"] - idle["router"] * wall_s) * 1000 / n, 3),
    }


def run(dsn: str, tmp: Path, n: int) -> dict[str, Any]:
    asyncio.run(prepare_database(dsn))
    keys = {name: Keys.generate() for name in ("router", "node", "client")}
    logs = tmp / "logs"
    sup = Supervisor()
    with Wallets(tmp) as wallets:
        try:
            router_env = {
                "ROUTER_WALLET": wallets.specs["router"],
                "ROUTER_LN_NETWORK": NETWORK,
                "ROUTER_FEE_BASE_MSAT": "100",
                "ROUTER_FEE_PPM": "10000",
                "ROUTER_QUOTE_TTL_S": "1800",
                "ROUTER_PAYMENT_TTL_S": "1800",
            }
            router_url, router = spawn_router(sup, dsn, logs, keys["router"], router_env)
            node_env = {"NODE_WALLET": wallets.specs["node"], "NODE_LN_NETWORK": NETWORK, "NODE_DB_URL": dsn}
            _, node = spawn_node(sup, "node", router_url, keys["router"].pubkey, logs, keys["node"], node_env)
            wait_for_http(
                router,
                router_url + "/status",
                timeout=30,
                ready=lambda r: r.json()["nodes"]["fresh"] > 0,
                what="node registered",
            )
            pids = {"router": router.pid, "node": node.pid}
            return asyncio.run(
                measure(router_url, pids, keys["client"], keys["router"].pubkey, wallets.specs["client"], n)
            )
        except Exception:
            for child in sup.children:
                print(f"--- {child.name} log ---\n{child.tail(40)}", file=sys.stderr)
            raise
        finally:
            sup.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--requests", type=int, default=500, help="requests of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedai-bench-pay-") as tmp:
        dsn = args.database_url
        if not dsn:
            from fedai.store.embedded import start_embedded

            dsn = start_embedded(Path(tmp) / "pg")
        results = run(dsn, Path(tmp), args.requests)
    added_cpu = results["paid"]["router_cpu_ms_per_request"] - results["unpaid"]["router_cpu_ms_per_request"]
    less_idle = "router_cpu_ms_per_request_less_idle"
    added_less_idle = results["paid"][less_idle] - results["unpaid"][less_idle]
    print(
        json.dumps(
            {
                "benchmark": "payments",
                "machine": {"python": platform.python_version(), "arch": platform.machine(), "cpus": os.cpu_count()},
                "database": "embedded" if not args.database_url else "configured",
                "wallets": "test-only: the LND backend against a fake LND over an in-memory ledger",
                "runner": "mock (no model latency)",
                "results": results,
                "summary": {
                    "router_added_cpu_ms_per_request": round(added_cpu, 3),
                    "router_added_cpu_ms_per_request_less_idle": round(added_less_idle, 3),
                    "router_added_p50_ms": round(results["paid"]["p50_ms"] - results["unpaid"]["p50_ms"], 3),
                    "node_added_cpu_ms_per_request": round(
                        results["paid"]["node_cpu_ms_per_request"] - results["unpaid"]["node_cpu_ms_per_request"], 3
                    ),
                    "meets_target": added_cpu < TARGET_CPU_MS,
                },
                "target": {"router_added_cpu_ms_per_request": TARGET_CPU_MS},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
