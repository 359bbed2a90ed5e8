# One concept at ~400 lines: the peer book (what it admits, holds and shows); its feed, rows, limits and views are
# modules of their own.
"""Peer routers learned from relays: their latest caps, price sheets and status, under the peer policy.

The relay pool has already checked size, schema, id, signature and the author's rate budget. Here every
announcement also passes, cheapest first: not our own, content size bound, policy (blocked / not allowed /
untrusted are refused; muted are learned but never chosen), `created_at` not beyond the clock skew in the
future, `expiration` (NIP-40) not past, the right `d` tag, newer than what we hold for (peer, kind, d), its
payload schema, and for caps an endpoint of the right shape whose address (written, or resolved with the
router's bounded resolver) is public unless ROUTER_ALLOW_PRIVATE_ENDPOINTS is on (`fedai_router.endpoints`; the
address is judged again when the router connects, in `fedai_router.outbound`). Each outcome is counted in
`fedai_router_peer_events_total{kind,result}`. Accepted ones are written to `peers` (the latest wins there too)
and kept in the in-memory `PeerBook` the auction reads. The book holds at most `ROUTER_PEER_MAX` peers
(`peer_limits`: stale ones give way first, `full` otherwise) and `ROUTER_PEER_MAX_PRICE_SHEETS` price sheets per
peer (`too_many_sheets`); peers silent for a day are pruned.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter

from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import PL3_LOCAL, RouterCaps, RouterStatus
from fedai.protocol.kinds import Kind
from fedai_router.config import RouterSettings
from fedai_router.endpoints import EndpointValidator, check_shape
from fedai_router.federation.announcements import (
    KIND_NAMES,
    Held,
    Incoming,
    PeerRecord,
    decode_announcement,
    timing_refusal,
    too_large,
)
from fedai_router.federation.peer_limits import is_stale, room_for
from fedai_router.federation.peer_rows import forget_peers, record_from_row, save_incoming
from fedai_router.federation.peer_views import PeerPrice, PeerView, price_of, summary_of, view_of
from fedai_router.federation.policy import CONTACTS_KIND, REFUSED, PeerPolicy, PolicyState, newer
from fedai_router.store import peers as peer_store

log = logging.getLogger("fedai.router.peers")

MAX_REFUSED_TRACKED = 10_000  # keys refused as untrusted, re-queried when a contact list vouches for them
PEER_IDLE_S = 86_400.0  # a peer that announced nothing for this long is forgotten (memory and table)
# pool counters mirrored into fedai_router_peer_events_total{kind="any"} (the pool sees no kinds)
POOL_RESULTS = {"invalid": "invalid", "oversized": "too_large", "over_budget": "over_budget"}


class PeerBook:
    """Peers and their latest verified announcements, with the policy that filters them."""

    def __init__(
        self,
        self_pubkey: str,
        policy: PeerPolicy,
        *,
        skew_s: int = 60,
        max_content_bytes: int = 128 * 1024,
        ttl_s: float = 300.0,
        registry: CollectorRegistry | None = None,
        allow_private: bool = False,
        validator: EndpointValidator | None = None,
        max_peers: int = 1_000,
        max_price_sheets: int = peer_store.MAX_PRICE_SHEETS,
    ) -> None:
        self.self_pubkey = self_pubkey
        self.allow_private = allow_private  # ROUTER_ALLOW_PRIVATE_ENDPOINTS: peer endpoints on private addresses
        self.validator = validator  # resolves caps endpoints' names (None: only their shape is checked)
        self.policy = policy
        self.skew_s = skew_s
        self.max_content_bytes = max_content_bytes
        self.ttl_s = ttl_s
        self.max_peers = max_peers
        self.max_price_sheets = max_price_sheets
        self._evicted: list[str] = []  # forgotten in memory, still to delete from the table
        self.events = Counter(
            "fedai_router_peer_events",
            "Peer announcements and contact lists by kind and result",
            ["kind", "result"],
            registry=registry,
        )
        self._peers: dict[str, PeerRecord] = {}
        self._refused: OrderedDict[str, None] = OrderedDict()  # refused as untrusted, most recent last
        self._pool_seen: dict[str, int] = {}

    @classmethod
    def for_settings(
        cls,
        settings: RouterSettings,
        registry: CollectorRegistry | None = None,
        validator: EndpointValidator | None = None,
    ) -> PeerBook:
        policy = PeerPolicy(
            allowlist=settings.peer_allowlist,
            blocklist=settings.peer_blocklist,
            mute=settings.peer_mute,
            follow=settings.follow,
            wot_min=settings.peer_wot_min,
        )
        return cls(
            settings.keys.pubkey,
            policy,
            skew_s=settings.clock_skew_s,
            max_content_bytes=settings.peer_max_content_bytes,
            ttl_s=settings.peer_ttl_s,
            registry=registry,
            allow_private=settings.allow_private_endpoints,
            validator=validator,
            max_peers=settings.peer_max,
            max_price_sheets=settings.peer_max_price_sheets,
        )

    # -- receiving -------------------------------------------------------------------------------

    def check(self, event: Event, now: float) -> tuple[str, Incoming | None]:
        """Every rule an announcement must pass (no I/O). Returns the result label and, when it may be
        stored, the decoded announcement (result `accepted`, or `muted` for a muted peer)."""
        screened = self._screen(event, now)
        if isinstance(screened, str):
            return screened, None
        state, d, expires_at = screened
        refusal = self._fit_refusal(event, d, now)
        if refusal is not None:
            return refusal, None
        try:
            payload = decode_announcement(event.kind, d, event.content)
        except FedaiError:
            return "malformed", None
        if isinstance(payload, RouterCaps) and not self._endpoint_fits(payload.endpoint):
            return "endpoint", None
        return ("muted" if state == "muted" else "accepted"), Incoming(event, d, expires_at, payload)

    def _screen(self, event: Event, now: float) -> str | tuple[PolicyState, str, int | None]:
        """The cheap rules, in order: kind, not our own, size, policy, then timing and `d` tag. A refusal's
        label, or the policy state, `d` and expiration of an announcement that passed them."""
        if event.kind not in KIND_NAMES:
            return "unexpected"
        if event.pubkey == self.self_pubkey:
            return "own"
        if too_large(event.content, self.max_content_bytes):
            return "oversized"
        state = self.policy.state(event.pubkey)
        if state in REFUSED:
            if state == "untrusted":
                self._note_refused(event.pubkey)
            return state
        timing = timing_refusal(event, now, self.skew_s)
        if isinstance(timing, str):
            return timing
        return state, *timing

    def _fit_refusal(self, event: Event, d: str, now: float) -> str | None:
        """Whether the book has room for it (`full`, `too_many_sheets`) and it is news (`duplicate`, `stale`)."""
        record = self._peers.get(event.pubkey)
        if record is None:
            full = len(self._peers) >= self.max_peers and self._room_for(event.pubkey, now) is None
            return "full" if full else None
        if event.kind == Kind.ROUTER_PRICE and self._sheets_full(record, d):
            return "too_many_sheets"
        held = record.held(event.kind, d)
        if held is None:
            return None
        if held.event_id == event.id:
            return "duplicate"
        if not newer(event.created_at, event.id, held.created_at, held.event_id):
            return "stale"
        return None

    def remember(self, incoming: Incoming, now: float) -> bool:
        """Hold a checked announcement in memory; False when it no longer fits (the book or the peer's sheets
        filled up since `check`) or a newer one is already held."""
        event = incoming.event
        record = self._peers.get(event.pubkey)
        if record is None:
            if len(self._peers) >= self.max_peers:
                victim = self._room_for(event.pubkey, now)
                if victim is None:
                    return False
                del self._peers[victim]
                self._evicted.append(victim)
            record = self._peers[event.pubkey] = PeerRecord(event.pubkey, first_seen=now, last_seen=now)
        if event.kind == Kind.ROUTER_PRICE and self._sheets_full(record, incoming.d):
            return False
        held = record.held(event.kind, incoming.d)
        if held is not None and not newer(event.created_at, event.id, held.created_at, held.event_id):
            return False  # a newer one arrived (on another subscription) meanwhile
        record.last_seen = now
        payload = incoming.payload
        if isinstance(payload, RouterCaps):
            record.caps = Held(event.id, event.created_at, incoming.expires_at, payload)
        elif isinstance(payload, RouterStatus):
            record.status = Held(event.id, event.created_at, incoming.expires_at, payload)
        else:
            record.prices[incoming.d] = Held(event.id, event.created_at, incoming.expires_at, payload)
        return True

    async def handle(self, event: Event, pool: asyncpg.Pool | None, now: float | None = None) -> str:
        """Check one announcement; remember and store it if it passes. Returns (and counts) the result."""
        current = time.time() if now is None else now
        result, incoming = self.check(event, current)
        if incoming is not None and isinstance(incoming.payload, RouterCaps) and self.validator is not None:
            try:  # a name that resolves to a private address is refused like a node's (bounded, cached lookup)
                await self.validator.check(incoming.payload.endpoint)
            except FedaiError:
                result, incoming = "endpoint", None
        if incoming is not None:
            if pool is not None:
                await self._store(pool, incoming)  # first, so what the book shows is in the table
            self.remember(incoming, current)
            if pool is not None:
                if event.pubkey not in self._peers:  # refused, or evicted while it was being stored
                    self._evicted.append(event.pubkey)
                if self._evicted:
                    await self._forget(pool)
        self.events.labels(KIND_NAMES.get(event.kind, str(event.kind)), result).inc()
        if incoming is None and result not in ("own", "duplicate"):
            log.debug(
                "peer announcement refused",
                extra={"peer": event.pubkey[:16], "kind": event.kind, "result": result, "event": event.id},
            )
        return result

    def _room_for(self, newcomer: str, now: float) -> str | None:
        """The peer that gives way to `newcomer` at the cap (`peer_limits.room_for`), or None."""
        return room_for(
            self._peers.values(),
            newcomer_trusted=self._trusted(newcomer),
            trusted=self._trusted,
            now=now,
            ttl_s=self.ttl_s,
        )

    def _sheets_full(self, record: PeerRecord, d: str) -> bool:
        """A price sheet for a new job type would take the peer past `max_price_sheets`."""
        return d not in record.prices and len(record.prices) >= self.max_price_sheets

    def _trusted(self, pubkey: str) -> bool:
        return self.policy.followed(pubkey) or self.policy.endorsements(pubkey) > 0

    async def prune(self, pool: asyncpg.Pool | None, now: float | None = None) -> int:
        """Forget peers that announced nothing for `PEER_IDLE_S` (memory, then the table). Returns how many."""
        current = time.time() if now is None else now
        idle = [
            k
            for k, r in self._peers.items()
            if is_stale(r, current, self.ttl_s) and current - r.last_seen > PEER_IDLE_S
        ]
        for key in idle:
            del self._peers[key]
        if pool is not None:
            self._evicted.extend(idle)
            await self._forget(pool)
            await peer_store.prune_peers(pool, PEER_IDLE_S)
        return len(idle)

    def handle_contacts(self, event: Event, now: float | None = None) -> frozenset[str]:
        """A followed key's kind-3 contact list. Returns keys refused as untrusted earlier that it now vouches
        for (their announcements are worth asking the relays for again)."""
        current = time.time() if now is None else now
        newly: frozenset[str] | None = None
        if event.kind != CONTACTS_KIND or not self.policy.followed(event.pubkey):
            result = "unexpected"
        elif event.created_at > current + self.skew_s:
            result = "future"
        else:
            newly = self.policy.apply_contacts(event)
            result = "stale" if newly is None else "accepted"
        self.events.labels("contacts", result).inc()
        if not newly:
            return frozenset()
        vouched = frozenset(k for k in newly if k in self._refused and self.policy.admits(k))
        for key in vouched:
            self._refused.pop(key, None)
        return vouched

    def _endpoint_fits(self, endpoint: str) -> bool:
        """The endpoint's shape, and a written address's judgement (no DNS). Pure."""
        try:
            check_shape(endpoint, self.allow_private)
        except FedaiError:
            return False
        return True

    def _note_refused(self, pubkey: str) -> None:
        self._refused[pubkey] = None
        self._refused.move_to_end(pubkey)
        while len(self._refused) > MAX_REFUSED_TRACKED:
            self._refused.popitem(last=False)

    def mirror_pool_stats(self, stats: dict[str, int]) -> None:
        """Copy the relay pool's refusals (forged, oversized, over budget) into the peer events metric."""
        for name, result in POOL_RESULTS.items():
            value = stats.get(name, 0)
            delta = value - self._pool_seen.get(name, 0)
            if delta > 0:
                self.events.labels("any", result).inc(delta)
            self._pool_seen[name] = value

    def restore(self, rows: Iterable[peer_store.PeerRow]) -> int:
        """Load peers stored earlier (by this or another replica), the most recent up to the cap; rows that no
        longer decode are skipped."""
        loaded = 0
        for row in sorted(rows, key=lambda r: r.updated_at, reverse=True):
            if len(self._peers) >= self.max_peers:
                break
            record = record_from_row(row, self.max_price_sheets, self._endpoint_fits)
            if record is not None:
                self._peers[row.pubkey] = record
                loaded += 1
        return loaded

    async def _store(self, pool: asyncpg.Pool, incoming: Incoming) -> None:
        await save_incoming(pool, incoming, self.max_price_sheets)

    async def _forget(self, pool: asyncpg.Pool) -> None:
        evicted, self._evicted = self._evicted, []
        await forget_peers(pool, evicted)

    # -- reading (the auction's API) -------------------------------------------------------------

    def policy_state(self, pubkey: str) -> PolicyState:
        return self.policy.state(pubkey)

    def peers_for(self, model: str, job_type: str, privacy: int, now: float | None = None) -> list[PeerView]:
        """Peers that may take a job now: choosable by policy, fresh caps listing `model` and `job_type`,
        `max_privacy` ≥ `privacy` (PL3 never leaves), not SATURATED. Cheapest posted price first (peers without
        a price sheet for it last), then lower p95."""
        if privacy >= PL3_LOCAL:
            return []
        current = time.time() if now is None else now
        found: list[tuple[tuple[bool, int, float, str], PeerView]] = []
        for record in self._peers.values():
            view = view_of(record, current, self.ttl_s, self.policy)
            if view is None or not self.policy.choosable(record.pubkey):
                continue
            caps = view.caps
            if model not in caps.models or job_type not in caps.job_types or caps.max_privacy < privacy:
                continue
            if view.backpressure == "SATURATED":
                continue
            price = price_of(record, model, job_type, current, self.ttl_s)
            p95 = view.p95_latency_ms
            key = (
                price is None,
                price.input_msat + price.output_msat if price is not None else 0,
                p95 if p95 is not None else math.inf,
                record.pubkey,
            )
            found.append((key, view))
        found.sort(key=lambda item: item[0])
        return [view for _, view in found]

    def view(self, peer: str | PeerView, now: float | None = None) -> PeerView | None:
        """The peer as `peers_for` would show it (fresh caps required), whatever its policy state."""
        record = self._peers.get(_key(peer))
        return view_of(record, time.time() if now is None else now, self.ttl_s, self.policy) if record else None

    def price(self, peer: str | PeerView, model: str, job_type: str, now: float | None = None) -> PeerPrice | None:
        """The peer's posted per-1k price for `model` (fee and current surge included), if its fresh caps and
        price sheet for `job_type` list the model."""
        record = self._peers.get(_key(peer))
        if record is None:
            return None
        return price_of(record, model, job_type, time.time() if now is None else now, self.ttl_s)

    def status(self, peer: str | PeerView, now: float | None = None) -> RouterStatus | None:
        """The peer's latest status, if still fresh."""
        record = self._peers.get(_key(peer))
        current = time.time() if now is None else now
        if record is None or record.status is None or not record.status.fresh(current, self.ttl_s):
            return None
        return record.status.payload

    def endpoint(self, peer: str | PeerView) -> str | None:
        """The base URL (serving /federation/job) in the peer's latest caps, fresh or not."""
        record = self._peers.get(_key(peer))
        return record.caps.payload.endpoint if record is not None and record.caps is not None else None

    def known(self) -> list[str]:
        return sorted(self._peers)

    def summaries(self, now: float | None = None, *, detail: bool = True) -> list[dict[str, Any]]:
        """Every known peer for operators (`GET /federation/peers`; a short form for `/status`)."""
        current = time.time() if now is None else now
        return [
            summary_of(self._peers[key], self.status(key, current), current, self.ttl_s, self.policy, detail=detail)
            for key in sorted(self._peers)
        ]


def _key(peer: str | PeerView) -> str:
    return peer if isinstance(peer, str) else peer.pubkey
