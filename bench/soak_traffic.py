"""Traffic for bench/soak.py: good signed requests at a fixed concurrency, and abusive traffic at fixed rates.

Every outcome is tallied into the current interval's `Tally`; the soak's monitor swaps in a fresh one each
interval. Abuse kinds (each its own paced loop):
- `bad_signature`: a well-formed request whose signature is garbage (expected 401)
- `replay`: a request the router already answered, sent again byte for byte (expected 409)
- `oversized`: a body just over the router's request limit (expected 413)
- `register_flood`: a heartbeat from a fresh key announcing new model names and aliases (each one a new
  node and new model tables for the router to hold)
- `deep_json`: 50,000 nested arrays (expected a typed 400)
- `unknown_model`: a signed request for a model nobody serves (expected 404)
- `slowloris`: connections that send headers, then one body byte every few seconds
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import aiohttp

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Capacity, InferenceRequest, ModelInfo, NodeDescriptor, Pricing

MODEL = "fedai-mock-1"
DEEP_JSON = b"[" * 50_000 + b"]" * 50_000
LORIS_HEADERS = (
    b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
)
LORIS_BYTE_EVERY_S = 5.0
LORIS_GIVE_UP_S = 60.0


@dataclass
class Tally:
    """What happened in one interval."""

    good_ok: int = 0
    good_errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    abuse: dict[str, Counter[str]] = field(default_factory=lambda: collections.defaultdict(Counter))
    loris: Counter[str] = field(default_factory=Counter)


@dataclass
class Traffic:
    router_url: str
    router_pubkey: str
    concurrency: int
    abuse_rate_per_s: float  # for each abuse kind
    loris_connections: int
    max_request_bytes: int
    flood_models: int = 4
    flood_aliases: int = 4
    tally: Tally = field(default_factory=Tally)
    clients: list[Keys] = field(default_factory=lambda: [Keys.generate() for _ in range(4)])
    answered: deque[bytes] = field(default_factory=lambda: deque(maxlen=256))
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    loris_open: int = 0  # slow-loris connections open right now

    def request(self, model: str = MODEL, client: int = 0) -> Event:
        payload = InferenceRequest(model=model, prompt="How long is a piece of string?", max_tokens=16)
        keys = self.clients[client % len(self.clients)]
        return seal(keys, Kind.INFER_REQUEST, payload, to=self.router_pubkey, nonce=True)

    async def run(self) -> None:
        """Good workers, one paced loop per abuse kind and the slow-loris pool, until `stopping` is set."""
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            jobs = [self._good(session, i) for i in range(self.concurrency)]
            if self.abuse_rate_per_s > 0:
                jobs += [self._paced(session, kind) for kind in ABUSE]
            jobs += [self._loris() for _ in range(self.loris_connections)]
            await asyncio.gather(*jobs)

    async def _post(self, session: aiohttp.ClientSession, path: str, body: bytes) -> tuple[int, str]:
        try:
            async with session.post(
                self.router_url + path,
                data=body,
                timeout=aiohttp.ClientTimeout(total=30),
                headers={"Content-Type": "application/json"},
            ) as resp:
                text = await resp.read()
                return resp.status, _code(text)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return 0, type(exc).__name__

    async def _good(self, session: aiohttp.ClientSession, worker: int) -> None:
        while not self.stopping.is_set():
            body = self.request(client=worker).to_json()
            started = time.perf_counter()
            status, code = await self._post(session, "/infer", body)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if status == 200:
                self.tally.good_ok += 1
                self.tally.latencies_ms.append(elapsed_ms)
                self.answered.append(body)
            else:
                self.tally.good_errors[f"{status} {code}"] += 1
                await asyncio.sleep(0.05)  # an erroring router is not hammered in a tight loop

    async def _paced(self, session: aiohttp.ClientSession, kind: str) -> None:
        interval = 1 / self.abuse_rate_per_s
        while not self.stopping.is_set():
            started = time.monotonic()
            path, body = ABUSE[kind](self)
            if body:
                status, code = await self._post(session, path, body)
                self.tally.abuse[kind][f"{status} {code}"] += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _loris(self) -> None:
        host, port = self.router_url.removeprefix("http://").rsplit(":", 1)
        while not self.stopping.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                self.tally.loris["connect_failed"] += 1
                await asyncio.sleep(1)
                continue
            self.tally.loris["opened"] += 1
            self.loris_open += 1
            try:
                outcome = await self._dribble(reader, writer)
            finally:
                self.loris_open -= 1
                writer.close()
            self.tally.loris[outcome] += 1

    async def _dribble(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Send headers, then a byte every few seconds; 'cut' if the router answers or closes first."""
        answer = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(LORIS_HEADERS)
            ends = time.monotonic() + LORIS_GIVE_UP_S
            while time.monotonic() < ends and not self.stopping.is_set():
                done, _ = await asyncio.wait({answer}, timeout=LORIS_BYTE_EVERY_S)
                if done:
                    return "cut_by_router"
                writer.write(b" ")
                await writer.drain()
            return "held_until_we_gave_up"
        except OSError:
            return "cut_by_router"
        finally:
            answer.cancel()


def _code(body: bytes) -> str:
    import msgspec

    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "untyped"
    error = data.get("error") if isinstance(data, dict) else None
    return str(error.get("code")) if isinstance(error, dict) else "ok"


def _bad_signature(t: Traffic) -> tuple[str, bytes]:
    event = t.request(client=1)
    return "/infer", Event(**{**event.to_dict(), "sig": os.urandom(64).hex()}).to_json()


def _replay(t: Traffic) -> tuple[str, bytes]:
    return "/infer", (t.answered[0] if t.answered else b"")


def _oversized(t: Traffic) -> tuple[str, bytes]:
    return "/infer", b"x" * (t.max_request_bytes + 1024)


def _register_flood(t: Traffic) -> tuple[str, bytes]:
    keys = Keys.generate()
    models = [
        ModelInfo(
            id=f"flood-{os.urandom(6).hex()}",
            context_window=4096,
            max_tokens=512,
            pricing=Pricing(input_msat=1, output_msat=1),
            aliases=[f"alias-{os.urandom(6).hex()}" for _ in range(t.flood_aliases)],
        )
        for _ in range(t.flood_models)
    ]
    descriptor = NodeDescriptor(endpoint="http://127.0.0.1:9", models=models, capacity=Capacity(max_concurrent=4))
    beat = seal(keys, Kind.NODE_HEARTBEAT, descriptor, to=t.router_pubkey, nonce=True)
    return "/register-node", beat.to_json()


def _deep_json(_t: Traffic) -> tuple[str, bytes]:
    return "/infer", DEEP_JSON


def _unknown_model(t: Traffic) -> tuple[str, bytes]:
    return "/infer", t.request(model=f"no-such-model-{os.urandom(4).hex()}", client=2).to_json()


ABUSE = {
    "bad_signature": _bad_signature,
    "replay": _replay,
    "oversized": _oversized,
    "register_flood": _register_flood,
    "deep_json": _deep_json,
    "unknown_model": _unknown_model,
}
