"""The requester side of an auction: RFB → bids → AWARD over relays (docs/federation.md, "Auctions").

`Auctioneer.auction(rfb)` publishes a signed RFB, collects the bids addressed to us for `ttl_s` (or until
every peer we expected has bid) from peers eligible for an award (`eligibility.award_refusal`), lets a pure
`choose` function pick one, reserves its price against the peer's spend cap and stores the job in one
serialized step (`reserve_job`; a winner over its cap gives way to the next best bid), and publishes the AWARD.
`award_posted` is posted-price routing: the RFB goes to one peer chosen from its price sheet and its first valid
bid is awarded at once. Anti-thrash: a job is not auctioned again within a cooldown unless the caller retries
after a failure, and at most `fed_max_attempts` auctions run per job within that window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from prometheus_client import CollectorRegistry

from fedai.nostr import RelayPool, Subscription
from fedai.protocol.envelope import seal
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import SETTLEMENT_LIGHTNING, Award, Bid, Cancel, Rfb
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import decode_payload
from fedai_router.config import RouterSettings
from fedai_router.federation.anti_thrash import AntiThrash
from fedai_router.federation.choice import BidView, ChoiceWeights, Choose, PostedPeer, choose_posted, make_choice
from fedai_router.federation.eligibility import award_refusal, choosable
from fedai_router.federation.events import auction_events, check_auction_event, reason, terms_of
from fedai_router.federation.peers import PeerBook
from fedai_router.federation.reputation import Reputation
from fedai_router.store.federation import NewJob, reserve_job, set_job_status

log = logging.getLogger("fedai.router.auction")

AWARD_GRACE_S = 5.0  # an RFB (and the bids on it) stay valid this long after bidding closes, for the award
MAX_CLOSED_TRACKED = 1_024
UNKNOWN_ETA_MS = 60_000  # a peer that has not announced its p95 latency ranks behind those that have


class _OverCap:
    """`_award`'s answer when the winner's spend cap refuses the reservation."""


OVER_CAP = _OverCap()


@dataclass(frozen=True, slots=True)
class Awarded:
    """An auction's outcome: the stored job, the published award and the winning bid."""

    job_id: str
    award: Event
    bid: Event
    bid_payload: Bid
    peer: str
    rfb: Event


@dataclass(slots=True)
class _Open:
    """An auction collecting bids."""

    event: Event
    rfb: Rfb
    expect: frozenset[str] | None  # end early once all of these have bid
    only: frozenset[str] | None  # targeted RFB: bids from these peers only
    excluded: frozenset[str]
    bids: list[tuple[Event, Bid, BidView]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def bidders(self) -> set[str]:
        return {view.peer for _, _, view in self.bids}


class Auctioneer:
    def __init__(
        self,
        *,
        keys: Keys,
        settings: RouterSettings,
        relays: RelayPool,
        pool: asyncpg.Pool,
        peers: PeerBook,
        metrics: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys  # signs RFBs, awards and cancels
        self.settings = settings  # ROUTER_AUCTION_*, ROUTER_FED_*, ROUTER_PEER_BREAKER_*
        self.relays = relays
        self.pool = pool  # federation_jobs: reputation, reservations
        self.peers = peers  # who may bid and win
        self.metrics = metrics
        s = settings
        self.reputation = Reputation(
            failures=s.peer_breaker_failures, cooldown_s=s.peer_breaker_cooldown_s, clock=clock
        )
        self.choose: Choose = make_choice(ChoiceWeights(s.auction_w_price, s.auction_w_eta, s.auction_w_reputation))
        self._clock = clock
        self._open: dict[str, _Open] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()  # recently closed auctions (to count late bids)
        self._events = auction_events(metrics)
        self.anti_thrash = AntiThrash(s.reauction_cooldown_ms / 1000, s.fed_max_attempts, self._events)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Warm the reputation from stored jobs and subscribe to bids addressed to us."""
        await self.reputation.load(self.pool)
        flt = {"kinds": [int(Kind.BID)], "#p": [self.keys.pubkey]}
        self._sub = await self.relays.subscribe([flt], self._on_bid)

    async def ready(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109 - a plain deadline
        """True once the relays have confirmed (EOSE) the bid subscription: bids will reach us."""
        return self._sub is not None and await self._sub.wait_eose(timeout)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.close()

    def record_outcome(self, peer: str, ok: bool) -> None:
        """Count a finished job with `peer` toward its reputation and circuit breaker."""
        self.reputation.record(peer, ok)

    # -- the auction ---------------------------------------------------------------------------------

    async def auction(
        self,
        rfb: Rfb,
        *,
        ttl_s: float | None = None,
        choose: Choose | None = None,
        exclude: Collection[str] = (),
        retry: bool = False,
        key: str | None = None,
        expect: Collection[str] | None = None,
        origin_id: str | None = None,
        to: str | None = None,
    ) -> Awarded | None:
        """Run one auction for `rfb`; None when no acceptable bid arrived (or no relay took the RFB).

        `exclude`: peers whose bids are ignored (with `retry=True`, the peer that just failed this job).
        `key`: the anti-thrash key (default: the job hash). `expect`: the peers that may bid (default: the
        peers whose announcements say they serve the model); the auction ends once all of them have bid.
        `to`: address the RFB to one peer only (posted-price routing). Raises `no_capacity` (with
        `retry_after_ms`) when anti-thrash refuses the auction.
        """
        ttl = self.settings.auction_ttl_ms / 1000 if ttl_s is None else ttl_s
        now = self._clock()
        event = self._seal_rfb(rfb, now, ttl, to)
        excluded = self.anti_thrash.admit(key or rfb.job_hash, now, retry=retry, exclude=exclude)
        if expect is None:
            expect = self._expected(rfb)
        only = frozenset({to}) if to is not None else None
        wanted = (only if only is not None else frozenset(expect)) - excluded
        state = _Open(event, rfb, expect=wanted or None, only=only, excluded=excluded)
        self._open[event.id] = state
        publishing = asyncio.ensure_future(self._publish_rfb(state, timeout=max(ttl, 1.0)))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.done.wait(), ttl)
            if not state.bids:
                await publishing  # settled by now, unless the relays are slower than the TTL
                return None
        finally:
            if not publishing.done():
                publishing.cancel()  # bids came, so the RFB is out; its OKs no longer matter
            del self._open[event.id]
            self._closed[event.id] = None
            while len(self._closed) > MAX_CLOSED_TRACKED:
                self._closed.popitem(last=False)
        views = [view for _, _, view in state.bids]
        while (winner := (choose or self.choose)(views, self._clock())) is not None:
            bid_event, bid, _ = next(b for b in state.bids if b[2].event_id == winner.event_id)
            awarded = await self._award(state, bid_event, bid, origin_id)
            if not isinstance(awarded, _OverCap):
                return awarded
            views = [v for v in views if v.peer != winner.peer]  # that peer's spend cap is reached: next best
        if state.bids:
            await self.cancel(event, "no acceptable bid")
        return None

    def _expected(self, rfb: Rfb) -> frozenset[str]:
        """The peers whose fresh announcements say they can take the job (and so may bid)."""
        return frozenset(p.pubkey for p in self.peers.peers_for(rfb.model, rfb.job_type, rfb.privacy))

    def _seal_rfb(self, rfb: Rfb, now: float, ttl: float, to: str | None) -> Event:
        """Expires when bidding closes plus a grace for the award, never after the job's deadline."""
        expires = math.ceil(min(now + ttl + AWARD_GRACE_S, rfb.deadline_ms / 1000))
        if expires <= now:
            raise FedaiError(ErrorCode.INVALID_REQUEST, "the job's deadline has passed")
        tags = [["t", rfb.job_type], ["model", rfb.model]]
        return seal(self.keys, Kind.RFB, rfb, to=to, nonce=True, expiration=expires, extra_tags=tags)

    async def _publish_rfb(self, state: _Open, timeout: float) -> None:  # noqa: ASYNC109 - the pool's publish timeout
        """Publish the RFB; if no relay takes it, end the auction at once."""
        results = await self.relays.publish(state.event, timeout=timeout)
        published = any(r.ok for r in results)
        self._events.labels("rfb", "published" if published else "not_published").inc()
        if not published:
            log.warning("no relay took the RFB", extra={"rfb": state.event.id, "relays": len(results)})
            state.done.set()

    async def _award(
        self, state: _Open, bid_event: Event, bid: Bid, origin_id: str | None
    ) -> Awarded | _OverCap | None:
        """Reserve the bid's price against the peer's spend cap and store the job in one serialized step, then
        publish the award (a refused reservation or a failure to store leaves nothing published). `OVER_CAP`
        when the peer's cap refuses it; None when no relay took the award (the reservation is released)."""
        job_id = secrets.token_hex(16)
        payload = Award(
            rfb=state.event.id,
            bid=bid_event.id,
            job_id=job_id,
            price_msat=bid.price_msat,
            capacity_token=bid.capacity_token,
        )
        expires = int(bid_event.tag("expiration") or state.event.tag("expiration") or 0)
        award = seal(self.keys, Kind.AWARD, payload, to=bid_event.pubkey, reply_to=bid_event.id, expiration=expires)
        job = NewJob(
            job_id=job_id,
            role="requester",
            peer=bid_event.pubkey,
            rfb_id=state.event.id,
            bid_id=bid_event.id,
            award_id=award.id,
            capacity_token=bid.capacity_token,
            price_msat=bid.price_msat,
            privacy=state.rfb.privacy,
            terms=terms_of(state.rfb),
            origin_id=origin_id,
        )
        s = self.settings
        if not await reserve_job(self.pool, job, cap_msat=s.fed_spend_cap_msat, window_s=s.fed_spend_window_s):
            self._events.labels("award", "spend_cap").inc()
            return OVER_CAP
        results = await self.relays.publish(award)
        if not any(r.ok for r in results):
            self._events.labels("award", "not_published").inc()
            await set_job_status(self.pool, job_id, "cancelled", expect=("awarded",))
            return None
        self._events.labels("award", "published").inc()
        return Awarded(
            job_id=job_id, award=award, bid=bid_event, bid_payload=bid, peer=bid_event.pubkey, rfb=state.event
        )

    async def cancel(self, rfb_event: Event, reason: str = "") -> bool:
        """Withdraw an RFB: bidders drop their open bids and refuse an award for it. True if a relay took it."""
        cancel = seal(
            self.keys,
            Kind.CANCEL,
            Cancel(rfb=rfb_event.id, reason=reason[:200]),
            reply_to=rfb_event.id,
            expiration=int(rfb_event.tag("expiration") or 0) or math.ceil(self._clock() + AWARD_GRACE_S),
        )
        ok = any(r.ok for r in await self.relays.publish(cancel))
        self._events.labels("cancel", "published" if ok else "not_published").inc()
        return ok

    # -- posted-price routing ------------------------------------------------------------------------

    def posted_peers(self, rfb: Rfb, now: float | None = None) -> list[PostedPeer]:
        """The peers that could take `rfb`, priced from their latest price sheets."""
        book = self.peers
        current = self._clock() if now is None else now
        found = []
        for view in book.peers_for(rfb.model, rfb.job_type, rfb.privacy, current):
            price = book.price(view, rfb.model, rfb.job_type, current)
            if price is None or self._ineligible(view.pubkey, rfb, current) is not None:
                continue
            p95 = view.p95_latency_ms
            found.append(
                PostedPeer(
                    pubkey=view.pubkey,
                    price_msat=price.cost(rfb.input_tokens, rfb.max_tokens),
                    eta_ms=math.ceil(p95) if p95 is not None else UNKNOWN_ETA_MS,
                    fresh=True,
                    backpressure=view.backpressure,
                    max_privacy=view.caps.max_privacy,
                    reputation=self.reputation.score(view.pubkey),
                    breaker_until=self.reputation.breaker_until(view.pubkey),
                )
            )
        return found

    async def route_posted(self, rfb: Rfb, **options: Any) -> Awarded | None:
        """Posted-price routing end to end: `choose_posted` over the price sheets, then `award_posted`."""
        peer = choose_posted(self.posted_peers(rfb), rfb, self._clock())
        return None if peer is None else await self.award_posted(peer, rfb, **options)

    async def award_posted(self, peer: PostedPeer | str, rfb: Rfb, **options: Any) -> Awarded | None:
        """Posted-price routing: the RFB goes only to `peer` (chosen from its price sheet, e.g. by
        `choose_posted`) and its first valid bid within the cap is awarded, without waiting out a TTL."""
        pubkey = peer if isinstance(peer, str) else peer.pubkey
        if isinstance(peer, PostedPeer):
            rfb = _capped(rfb, peer.price_msat)
        options.setdefault("ttl_s", self.settings.posted_ttl_ms / 1000)
        return await self.auction(rfb, to=pubkey, **options)

    # -- bids ----------------------------------------------------------------------------------------

    async def _on_bid(self, event: Event, _relay: str) -> None:
        verdict = self._take_bid(event)
        self._events.labels("bid", verdict).inc()

    def _take_bid(self, event: Event) -> str:
        """Add a bid to its open auction; returns the metric result (`accepted` or why not)."""
        now = self._clock()
        targets = event.tag_values("e")
        state = self._open.get(targets[0]) if len(targets) == 1 else None
        if state is None:
            return "late" if targets and targets[0] in self._closed else "unknown_rfb"
        try:
            expires = check_auction_event(
                event,
                Kind.BID,
                recipient=self.keys.pubkey,
                reply_to=state.event.id,
                skew_s=self.settings.clock_skew_s,
                now=now,
            )
            bid = decode_payload(event.content, Bid)
        except FedaiError as err:
            return reason(err)
        peer = event.pubkey
        refusal = self._refuse(state, peer, bid, now)
        if refusal is not None:
            return refusal
        view = BidView(
            event_id=event.id,
            peer=peer,
            price_msat=bid.price_msat,
            eta_ms=bid.eta_ms,
            capacity_token=bid.capacity_token,
            expires_at=float(expires),
            reputation=self.reputation.score(peer),
            breaker_until=self.reputation.breaker_until(peer),
        )
        state.bids.append((event, bid, view))
        if state.only is not None or (state.expect is not None and state.expect <= state.bidders()):
            state.done.set()
        return "accepted"

    def _refuse(self, state: _Open, peer: str, bid: Bid, now: float) -> str | None:
        if bid.rfb != state.event.id:
            return "mismatch"
        if state.only is not None and peer not in state.only:
            return "not_addressed"
        if not choosable(self.peers, peer):
            return "blocked"
        if peer in state.excluded:
            return "excluded"
        if self.reputation.is_open(peer, now):
            return "breaker"
        if bid.price_msat > state.rfb.max_price_msat:
            return "over_cap"
        if now * 1000 + bid.eta_ms > state.rfb.deadline_ms:
            return "too_slow"
        return self._ineligible(peer, state.rfb, now)

    def _ineligible(self, peer: str, rfb: Rfb, now: float) -> str | None:
        """Why `peer` may not win `rfb` (no fresh caps for it, a bad endpoint, too low a reputation), or None."""
        return award_refusal(
            self.peers,
            peer,
            rfb,
            reputation=self.reputation.score(peer),
            min_reputation=self.settings.fed_min_reputation,
            now=now,
            settlement=SETTLEMENT_LIGHTNING if self.settings.require_payment else None,
        )


def _capped(rfb: Rfb, price_msat: int) -> Rfb:
    """The RFB with its cap lowered to the posted price: the peer's bid must honour its own sheet."""
    return msgspec.structs.replace(rfb, max_price_msat=min(rfb.max_price_msat, price_msat))
