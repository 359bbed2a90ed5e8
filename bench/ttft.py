"""Time to first token and tokens/s: directly against llama-server, and through a router and a node.

Starts llama.cpp's `llama-server` (built and cached by fedai.llamacpp) on the tiny test model by default
(`--model smollm2` for the real one), a node in front of it (`NODE_RUNNER=llama_cpp`) and a router, each a
separate process, PostgreSQL as in router_overhead.py. Each round streams the same request both ways.
Three paths per round: llama-server directly, the node directly (as the router calls it), and the router.
Prints one JSON document; the target (issue 4) is that the router adds ≤ 2 ms to time to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from fedai.cli.processes import Supervisor
from fedai.llamacpp.models import ensure_model
from fedai.llamacpp.provide import ensure_llama_server
from fedai.llamacpp.server import LlamaServer
from fedai.protocol.envelope import seal
from fedai.protocol.event import decode_event, verify_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import InferenceRequest
from fedai.sdk import AsyncClient
from fedai.service.sse import SSEDecoder
from support import prepare_database, start_network

PROMPT = "What is 2+2?"


async def direct(http: httpx.AsyncClient, url: str, max_tokens: int) -> tuple[float, float, int]:
    """Stream from llama-server's native /completion, with the body the node's llama_cpp runner sends:
    (ttft s, total s, tokens)."""
    body = {"prompt": PROMPT, "n_predict": max_tokens, "stream": True, "cache_prompt": True, "temperature": 0}
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with http.stream("POST", url + "/completion", json=body) as resp:
        decoder = SSEDecoder()
        async for data in resp.aiter_bytes():
            for event in decoder.feed(data):
                doc = json.loads(event.data)
                if doc.get("content"):
                    first = first or time.perf_counter()
                if doc.get("stop"):
                    tokens = int(doc.get("tokens_predicted", 0))
    total = time.perf_counter() - started
    return (first or time.perf_counter()) - started, total, tokens


async def via_node(
    http: httpx.AsyncClient, node_url: str, keys: Keys, node: str, model: str, max_tokens: int
) -> tuple[float, float, int]:
    """Stream from the node directly, as the router would call it (router-signed request, chunks verified)."""
    payload = InferenceRequest(model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0, stream=True)
    forwarded = seal(keys, Kind.INFER_REQUEST, payload, to=node, nonce=True)
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with http.stream("POST", node_url + "/infer/stream", content=forwarded.to_json()) as resp:
        decoder = SSEDecoder()
        async for data in resp.aiter_bytes():
            for event in decoder.feed(data):
                if event.event == "chunk":
                    verify_event(decode_event(event.data))
                    first = first or time.perf_counter()
                elif event.event == "done":
                    tokens = json.loads(json.loads(event.data)["metering"]["content"])["output_tokens"]
    total = time.perf_counter() - started
    return (first or time.perf_counter()) - started, total, tokens


async def via_router(client: AsyncClient, model: str, max_tokens: int) -> tuple[float, float, int]:
    """Stream the same request through router and node with the SDK (every chunk and the chain verified)."""
    started = time.perf_counter()
    first: float | None = None
    stream = await client.stream(model, PROMPT, max_tokens=max_tokens, temperature=0)
    async for _ in stream:
        first = first or time.perf_counter()
    total = time.perf_counter() - started
    return (first or time.perf_counter()) - started, total, stream.chain.record.output_tokens


def summarise(samples: list[tuple[float, float, int]]) -> dict[str, Any]:
    ttft = [s[0] * 1000 for s in samples]
    rates = [s[2] / (s[1] - s[0]) for s in samples if s[2] > 1 and s[1] > s[0]]
    return {
        "ttft_ms": {
            "median": round(statistics.median(ttft), 3),
            "p95": round(sorted(ttft)[int(0.95 * (len(ttft) - 1))], 3),
        },
        "tokens_per_s_median": round(statistics.median(rates), 1) if rates else None,
        "tokens_median": statistics.median(s[2] for s in samples),
    }


async def measure(
    llama_url: str, node_url: str, router_url: str, keys: dict[str, Keys], model: str, rounds: int, max_tokens: int
) -> dict[str, Any]:
    router_pubkey, node = keys["router"].pubkey, keys["node"].pubkey
    async with httpx.AsyncClient(timeout=120) as http, AsyncClient(router_url, router_pubkey=router_pubkey) as client:
        for _ in range(3):  # warm every path (connections, prompt cache)
            await direct(http, llama_url, max_tokens)
            await via_node(http, node_url, keys["router"], node, model, max_tokens)
            await via_router(client, model, max_tokens)
        d, n, r = [], [], []
        for _ in range(rounds):  # interleaved so drift affects all alike
            d.append(await direct(http, llama_url, max_tokens))
            n.append(await via_node(http, node_url, keys["router"], node, model, max_tokens))
            r.append(await via_router(client, model, max_tokens))
    direct_s, node_s, router_s = summarise(d), summarise(n), summarise(r)
    ttft = {name: s["ttft_ms"]["median"] for name, s in (("d", direct_s), ("n", node_s), ("r", router_s))}
    return {
        "direct_to_llama_server": direct_s,
        "via_node": node_s,
        "via_router_and_node": router_s,
        "node_added_ttft_ms_median": round(ttft["n"] - ttft["d"], 3),
        "router_added_ttft_ms_median": round(ttft["r"] - ttft["n"], 3),
        "added_ttft_ms_median": round(ttft["r"] - ttft["d"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    model_id = f"fedai-{args.model}"
    with tempfile.TemporaryDirectory(prefix="fedai-bench-") as tmp:
        dsn = args.database_url
        if not dsn:
            from fedai.store.embedded import start_embedded

            dsn = start_embedded(Path(tmp) / "pg")
        asyncio.run(prepare_database(dsn))
        keys = {name: Keys.generate() for name in ("router", "node")}
        model = ensure_model(args.model)
        with LlamaServer(
            model=model,
            binary=ensure_llama_server(model=model),
            model_id=model_id,
            parallel=2,
            log_path=Path(tmp) / "llama.log",
        ) as llama:
            sup = Supervisor()
            try:
                router_url, node_url, _, _ = start_network(
                    sup,
                    dsn,
                    Path(tmp) / "logs",
                    keys,
                    {
                        "NODE_RUNNER": "llama_cpp",
                        "NODE_RUNNER_URL": llama.url,
                        "NODE_MODEL_ID": model_id,
                        "NODE_CAPACITY_MAX": "2",
                    },
                )
                results = asyncio.run(
                    measure(llama.url, node_url, router_url, keys, model_id, args.rounds, args.max_tokens)
                )
            finally:
                sup.stop()
    print(
        json.dumps(
            {
                "benchmark": "ttft",
                "machine": {"python": platform.python_version(), "arch": platform.machine(), "cpus": os.cpu_count()},
                "model": args.model,
                "rounds": args.rounds,
                "max_tokens": args.max_tokens,
                "llama_threads": 1,
                "results": results,
                "target": {"router_added_ttft_ms_median_max": 2.0},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
