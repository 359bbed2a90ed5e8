"""Router CPU per paid request: checking a payment request and its proof, and the single-use claim in Postgres.

For each of `--requests` payment requests (a node and the router's fee, each with its payee's own signed invoice),
measured one request at a time on this process's CPU clock (`time.process_time`: Postgres's own CPU is not
counted, its wall time is reported beside):

* `full`: `check_payment_request` (the router's signature and both payees' invoices verified, the quote's split)
  + `check_all_proofs` (sha256 of each preimage) + `PaymentStore.claim_all` (one conditional UPDATE … RETURNING);
* `lean`: what a router that trusts the request it stored itself needs: sha256 of each preimage + `claim_all`
  (the statement binds the client, the quote and every payee);
* each part alone, and the claim through the pool and through one dedicated connection;
* the statements a served paid `/infer` adds, as the router issued them before (`paid_statements_before`: the
  claim through the pool, the stored request read back, the consumption) and now (`paid_statements_now`: the
  claim returning the stored request through `DedicatedOrPool`, then the consumption riding on the metering
  record's insert, counted as what that insert costs more than an unpaid one's: `metering_insert` and
  `metering_insert_consuming` are also reported).

The database: `--database-url`, else $DATABASE_URL, else an embedded server in a temporary directory; a fresh
database is created on it and dropped afterwards. Prints one JSON document; the goal for the whole payment path
is under 0.2 ms of router CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fedai.protocol.envelope import Opened
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.messages import MeteringRecord, Payee, PayeeInvoice, PaymentProof, PaymentRequest
from fedai.protocol.payment import (
    ClaimOutcome,
    QuoteTerms,
    check_all_proofs,
    check_payment_request,
    preimage_matches,
    seal_invoice,
    seal_payment_request,
)
from fedai.store.db import DedicatedConnection, DedicatedOrPool, create_pool
from fedai.store.migrations import migrate_dsn
from fedai_router.store.metering import MeteringEntry, MeteringStore
from fedai_router.store.payments import Consumption, PaymentStore

TARGET_CPU_MS = 0.2
NODE_MSAT, FEE_MSAT = 7_000, 1_000


@dataclass
class Case:
    """One paid quote: the signed request, its terms and the client's proof."""

    event: Event
    terms: QuoteTerms
    proof: PaymentProof


def make_case(router: Keys, node: Keys, client: Keys, now: int) -> Case:
    quote_id, expires = secrets.token_hex(16), now + 3600
    payees = []
    preimages = {}
    for role, keys, amount in (("node", node, NODE_MSAT), ("router_fee", router, FEE_MSAT)):
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        preimages[payment_hash] = preimage.hex()
        bolt11 = "lnbcrt" + secrets.token_hex(150)  # a realistic length; these checks never decode it
        invoice = PayeeInvoice(
            role=role,  # type: ignore[arg-type]
            quote=quote_id,
            client=client.pubkey,
            router=router.pubkey,
            amount_msat=amount,
            payment_hash=payment_hash,
            bolt11=bolt11,
            expires_at=expires,
        )
        payees.append(
            Payee(
                role=role,  # type: ignore[arg-type]
                payee=keys.pubkey,
                amount_msat=amount,
                bolt11=bolt11,
                payment_hash=payment_hash,
                invoice=seal_invoice(keys, invoice),
            )
        )
    request = PaymentRequest(
        quote=quote_id,
        client=client.pubkey,
        router=router.pubkey,
        expires_at=expires,
        total_msat=NODE_MSAT + FEE_MSAT,
        payees=payees,
    )
    event = seal_payment_request(router, request)
    terms = QuoteTerms(quote_id, node.pubkey, NODE_MSAT, FEE_MSAT, NODE_MSAT + FEE_MSAT, expires)
    return Case(event, terms, PaymentProof(payment_request=event.id, preimages=preimages))


@contextlib.asynccontextmanager
async def fresh_database(base: str | None) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="fedai-bench-pay-") as tmp:
        embedded = not base
        if embedded:
            from fedai.store.embedded import start_embedded, stop_embedded

            base = start_embedded(Path(tmp) / "pg")
        assert base is not None
        name = f"fedai_bench_pay_{secrets.token_hex(4)}"
        parts = urlsplit(base)
        dsn = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
        admin = await asyncpg.connect(base)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        try:
            await migrate_dsn(dsn)
            yield dsn
        finally:
            admin = await asyncpg.connect(base)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
            if embedded:
                stop_embedded(Path(tmp) / "pg")


async def measure(cases: list[Case], step: Callable[[Case], Awaitable[None]]) -> dict[str, float]:
    """Median and p90 of CPU and wall time per case, in ms."""
    cpu, wall = [], []
    for case in cases:
        c0, w0 = time.process_time(), time.perf_counter()
        await step(case)
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    cpu.sort()
    wall.sort()
    return {
        "cpu_ms_p50": round(statistics.median(cpu), 4),
        "cpu_ms_p90": round(cpu[int(0.9 * len(cpu))], 4),
        "wall_ms_p50": round(statistics.median(wall), 4),
    }


class Steps:
    """The measured steps; each claim uses a fresh claimant, and each case is claimed once per store."""

    def __init__(self, router: Keys, client: Keys, now: int) -> None:
        self.router, self.client, self.now = router, client, now

    def check(self, case: Case) -> Opened[PaymentRequest]:
        return check_payment_request(
            case.event, router=self.router.pubkey, client=self.client.pubkey, quote=case.terms, now=self.now
        )

    async def claim(self, store: PaymentStore, case: Case, hashes: list[str]) -> None:
        claim = await store.claim_all(
            hashes, case.event.id, secrets.token_hex(16), self.now, client=self.client.pubkey, quote=case.terms.quote_id
        )
        if claim.outcome is not ClaimOutcome.CLAIMED:
            raise RuntimeError(f"claim refused: {claim.outcome}")

    def claim_only(self, store: PaymentStore) -> Callable[[Case], Awaitable[None]]:
        async def step(case: Case) -> None:
            await self.claim(store, case, list(case.proof.preimages))

        return step

    def full(self, store: PaymentStore) -> Callable[[Case], Awaitable[None]]:
        async def step(case: Case) -> None:
            hashes = check_all_proofs(self.check(case), case.proof)
            await self.claim(store, case, hashes)

        return step

    def lean(self, store: PaymentStore) -> Callable[[Case], Awaitable[None]]:
        async def step(case: Case) -> None:
            if not all(preimage_matches(p, h) for h, p in case.proof.preimages.items()):
                raise RuntimeError("preimage mismatch")
            await self.claim(store, case, list(case.proof.preimages))

        return step


def metering_entry(signer: Keys, consume: Consumption | None) -> MeteringEntry:
    """A node's metering record of one request (fresh request id), consuming `consume` when given."""
    request_id = secrets.token_hex(32)
    record = MeteringRecord(
        request=request_id,
        model="m",
        input_tokens=12,
        output_tokens=16,
        wall_ms=1.0,
        bytes_in=40,
        bytes_out=80,
        prompt_sha256=hashlib.sha256(b"prompt").hexdigest(),
        price_msat=7_000,
    )
    return MeteringEntry(record, signer_event(signer, request_id), "origin", "client", signer.pubkey, consume=consume)


def signer_event(signer: Keys, request_id: str) -> Event:
    from fedai.protocol.envelope import seal
    from fedai.protocol.kinds import Kind

    return seal(signer, Kind.METERING_RECORD, request_id)


async def paid_statements(
    dsn: str, pool: asyncpg.Pool, steps: Steps, node: Keys, sets: dict[str, list[Case]]
) -> dict[str, dict[str, float]]:
    """The statements a served paid request adds, before and now (module docstring)."""
    before, now = PaymentStore(pool), PaymentStore(pool, DedicatedOrPool(dsn, pool))
    writer = DedicatedConnection(dsn)
    metering = MeteringStore(pool, writer)
    try:

        async def old_way(case: Case) -> None:
            claimant = secrets.token_hex(16)
            quote = case.terms.quote_id
            hashes = list(case.proof.preimages)
            claim = await before.claim_all(
                hashes, case.event.id, claimant, steps.now, client=steps.client.pubkey, quote=quote
            )
            if claim.outcome is not ClaimOutcome.CLAIMED or await before.event(case.event.id) is None:
                raise RuntimeError("claim refused")
            await before.consume(case.event.id, claimant)

        async def new_claim(case: Case) -> None:
            claimant = secrets.token_hex(16)
            quote = case.terms.quote_id
            hashes = list(case.proof.preimages)
            claim = await now.claim_all(
                hashes, case.event.id, claimant, steps.now, client=steps.client.pubkey, quote=quote
            )
            if claim.outcome is not ClaimOutcome.CLAIMED or claim.event is None:
                raise RuntimeError("claim refused")
            claimants[case.event.id] = claimant

        claimants: dict[str, str] = {}

        entries: dict[str, MeteringEntry] = {}  # built before measuring: only the insert is timed

        async def insert(case: Case) -> None:
            await metering.record(entries[case.event.id])

        results = {"paid_statements_before": await measure(sets["before"], old_way)}
        claim = await measure(sets["now"], new_claim)
        entries.update({c.event.id: metering_entry(node, None) for c in sets["now"]})
        plain = await measure(sets["now"], insert)
        entries.update(
            {c.event.id: metering_entry(node, Consumption(c.event.id, claimants[c.event.id])) for c in sets["now"]}
        )
        consuming = await measure(sets["now"], insert)
        added = {k: round(claim[k] + consuming[k] - plain[k], 4) for k in ("cpu_ms_p50", "cpu_ms_p90", "wall_ms_p50")}
        results |= {
            "paid_statements_now": added,
            "claim_all_returning_event_dedicated_or_pool": claim,
            "metering_insert": plain,
            "metering_insert_consuming": consuming,
        }
        return results
    finally:
        await writer.close()


async def run(dsn: str, n: int) -> dict[str, dict[str, float]]:
    router, node, client = Keys.generate(), Keys.generate(), Keys.generate()
    now = int(time.time())
    steps = Steps(router, client, now)
    pool = await create_pool(dsn, min_size=1, max_size=4)
    dedicated = DedicatedConnection(dsn)
    try:
        stores = {"pool": PaymentStore(pool), "dedicated": PaymentStore(pool, dedicated)}
        names = ("full", "lean", "claim", "before", "now")
        sets = {name: [make_case(router, node, client, now) for _ in range(n)] for name in names}
        for cases in sets.values():
            for case in cases:
                await stores["pool"].record(case.event, steps.check(case).payload)

        async def check_only(case: Case) -> None:
            check_all_proofs(steps.check(case), case.proof)

        halves = {k: (v[: n // 2], v[n // 2 :]) for k, v in sets.items()}  # one half per store
        results: dict[str, dict[str, float]] = {
            "check_payment_request_and_proofs": await measure(sets["claim"], check_only),
        }
        for i, (label, store) in enumerate(stores.items()):
            results[f"claim_all_{label}"] = await measure(halves["claim"][i], steps.claim_only(store))
            results[f"full_{label}"] = await measure(halves["full"][i], steps.full(store))
            results[f"lean_{label}"] = await measure(halves["lean"][i], steps.lean(store))
        return results | await paid_statements(dsn, pool, steps, node, sets)
    finally:
        await dedicated.close()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--requests", type=int, default=2000, help="payment requests per measured set")
    args = parser.parse_args()

    async def go() -> dict[str, dict[str, float]]:
        async with fresh_database(args.database_url) as dsn:
            return await run(dsn, args.requests)

    try:  # the router runs on uvloop when it is installed (fedai.service.server): measure the same loop
        import uvloop

        results = uvloop.run(go())
    except ImportError:
        results = asyncio.run(go())
    paths = {k: v["cpu_ms_p50"] for k, v in results.items() if k.startswith(("full_", "lean_"))}
    print(
        json.dumps(
            {
                "benchmark": "payment_check",
                "machine": {"python": platform.python_version(), "arch": platform.machine(), "cpus": os.cpu_count()},
                "database": "configured" if args.database_url else "embedded",
                "requests_per_set": args.requests,
                "payees_per_request": 2,
                "loop": "uvloop" if "uvloop" in sys.modules else "asyncio",
                "statistic": "per request, measured one at a time; CPU is this process's only",
                "results": results,
                "target": {"router_cpu_ms_per_request_max": TARGET_CPU_MS},
                "meets_target": {k: v < TARGET_CPU_MS for k, v in paths.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
