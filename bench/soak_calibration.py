"""What one registered node costs a router, for bench/soak.py's corrected memory slope (bench/soak_figures.py).

The soak's registration flood gets a few nodes a minute past the per-address limit, and the router rightly holds
them (and their model tables) until they are pruned. To tell that from a leak, a separate router process takes a
burst of registrations of the flood's own shape (same helper, same number of models and aliases), with the
registration rates and registry bounds out of the way; its RSS before and after, over the nodes it took, is the
cost of one node. A few registrations go first, so code paths and pools are warm before the "before" sample.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from fedai.cli.processes import Supervisor
from fedai.protocol.keys import Keys
from soak_figures import node_cost_mib
from soak_traffic import ABUSE, Traffic
from support import spawn_router

MIB = 1024 * 1024
WARM_UP_REGISTRATIONS = 20
SETTLE_S = 3.0  # after a burst: background refreshes run, then RSS is sampled
# only the calibration router: registrations from 127.0.0.1 are not rate-limited, the registry has room for all
CALIBRATION_ENV = {
    "ROUTER_REGISTER_PER_ADDRESS": "1000000",
    "ROUTER_REGISTER_PER_KEY": "100000",
    "ROUTER_MAX_NODES": "1000000",
    "ROUTER_MAX_MODEL_NAMES": "1000000",
}


async def _register(session: aiohttp.ClientSession, traffic: Traffic, count: int) -> tuple[int, dict[str, int]]:
    """Send `count` flood registrations one after another; returns how many were accepted, and the refusals."""
    accepted, refused = 0, {}
    for _ in range(count):
        path, body = ABUSE["register_flood"](traffic)
        status, code = await traffic._post(session, path, body)
        if status == 200:
            accepted += 1
        else:
            refused[f"{status} {code}"] = refused.get(f"{status} {code}", 0) + 1
    return accepted, refused


def _rss_mib(process: psutil.Process) -> float:
    return round(process.memory_info().rss / MIB, 2)


async def calibrate(dsn: str, logs: Path, count: int, flood_models: int, flood_aliases: int) -> dict[str, Any]:
    """Start a calibration router on `dsn`, register `count` flood-shaped nodes, and report the cost of one."""
    keys = Keys.generate()
    sup = Supervisor()
    try:
        url, router = await asyncio.to_thread(spawn_router, sup, dsn, logs, keys, CALIBRATION_ENV)
        traffic = Traffic(url, keys.pubkey, 0, 0.0, 0, 0, flood_models, flood_aliases)
        process = psutil.Process(router.pid)
        async with aiohttp.ClientSession() as session:
            await _register(session, traffic, WARM_UP_REGISTRATIONS)
            await asyncio.sleep(SETTLE_S)
            before = _rss_mib(process)
            accepted, refused = await _register(session, traffic, count)
            await asyncio.sleep(SETTLE_S)
            after = _rss_mib(process)
    finally:
        await asyncio.to_thread(sup.stop)
    cost = node_cost_mib(before, after, accepted)
    return {
        "nodes_registered": accepted,
        "refused": refused,
        "router_rss_mib_before_after": [before, after],
        "node_cost_mib": None if cost is None else round(cost, 4),
    }
