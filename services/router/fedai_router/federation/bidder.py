"""The provider side of an auction: bid on peers' RFBs, accept only awards for our own open bids.

Open bids live in memory (bounded in number, per requester, and in time: an open bid holds capacity until the
RFB expires but never longer than `ROUTER_FED_BID_HOLD_S`, and an RFB whose deadline is further away than
`ROUTER_FED_MAX_DEADLINE_S` gets no bid): a bid that is never awarded leaves no row. Each open bid keeps what it
was for (`JobTerms`: model, job type, sizes, salted job hash, deadline). An accepted award becomes a
`federation_jobs` row (role provider) carrying those terms, which is what `POST /federation/job` looks up on
any replica and checks the submitted job against. Every refused message is counted in
`fedai_router_auction_events_total{kind,result}`.
With several replicas sharing a key, each one bids; the award is accepted by the replica that made the winning
bid, and the others count it as `unknown_bid`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
from prometheus_client import CollectorRegistry

from fedai.nostr import RelayPool, Subscription
from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import Award, Cancel, Rfb
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import decode_payload
from fedai_router.config import RouterSettings
from fedai_router.federation.bid_quote import Quote
from fedai_router.federation.eligibility import choosable
from fedai_router.federation.events import auction_events, check_auction_event, reason, terms_of
from fedai_router.federation.peers import PeerBook
from fedai_router.store.federation import JobTerms, NewJob, cancel_awarded, insert_job

log = logging.getLogger("fedai.router.bidder")

MAX_OPEN_BIDS = 1_024
MAX_AWARD_WAITS = 256  # job submits waiting for their award to arrive, all requesters together
MAX_REMEMBERED = 4_096  # cancelled RFBs and accepted awards kept in memory


@dataclass(frozen=True, slots=True)
class OpenBid:
    bid_id: str
    rfb_id: str
    requester: str
    price_msat: int
    capacity_token: str
    privacy: int
    expires_at: int  # unix s: the RFB's expiration, capped at ROUTER_FED_BID_HOLD_S from when we bid
    terms: JobTerms  # what the RFB asked: the submitted job must match

    @property
    def model(self) -> str:
        return self.terms.model


def _remember(store: OrderedDict[str, str], key: str, value: str) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > MAX_REMEMBERED:
        store.popitem(last=False)


Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class Bidder:
    def __init__(
        self,
        *,
        keys: Keys,
        settings: RouterSettings,
        relays: RelayPool,
        pool: asyncpg.Pool,
        peers: PeerBook,
        metrics: CollectorRegistry,
        spawn: Spawn,
        quote: Quote,
        clock: Callable[[], float] = time.time,
        max_open: int = MAX_OPEN_BIDS,
    ) -> None:
        self.keys = keys  # signs bids
        self.settings = settings  # ROUTER_FED_*, clock skew
        self.relays = relays
        self.pool = pool  # federation_jobs: accepted awards
        self.peers = peers  # whose RFBs we answer
        self.spawn = spawn  # publishes bids off the subscription's queue
        self.quote = quote  # what we bid (`bid_quote.local_quote`)
        self._clock = clock
        self._max_open = max_open
        self._open: OrderedDict[str, OpenBid] = OrderedDict()  # bid id -> open bid, oldest first
        self._cancelled: OrderedDict[str, str] = OrderedDict()  # rfb id -> its requester
        self._awarded: OrderedDict[str, str] = OrderedDict()  # rfb id -> requester, for awards we accepted
        self._accepted: OrderedDict[str, str] = OrderedDict()  # job id -> award id
        self._waiters: dict[str, asyncio.Event] = {}
        self._award_waits: dict[str, int] = {}  # requester -> job submits waiting for its award to arrive
        self._events = auction_events(metrics)
        self._subs: list[Subscription] = []

    @property
    def pubkey(self) -> str:
        return self.keys.pubkey

    async def start(self) -> None:
        relays = self.relays
        self._subs = [
            await relays.subscribe([{"kinds": [int(Kind.RFB)]}, {"kinds": [int(Kind.CANCEL)]}], self._on_market),
            await relays.subscribe([{"kinds": [int(Kind.AWARD)], "#p": [self.pubkey]}], self._on_award),
        ]

    async def ready(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109 - a plain deadline
        """True once the relays have confirmed (EOSE) both subscriptions: RFBs and awards will reach us."""
        return bool(self._subs) and all([await sub.wait_eose(timeout) for sub in self._subs])

    async def close(self) -> None:
        for sub in self._subs:
            await sub.close()

    def held(self, model: str) -> int:
        """Open bids on `model` not yet expired: capacity promised but not yet awarded."""
        now = self._clock()
        return sum(1 for b in self._open.values() if b.model == model and b.expires_at > now)

    def open_bids(self) -> list[OpenBid]:
        self._expire(self._clock())
        return list(self._open.values())

    def bids_for(self, requester: str) -> int:
        """Open bids (not yet expired) we hold for `requester`: awards from it may still be on their way."""
        now = self._clock()
        return sum(1 for b in self._open.values() if b.requester == requester and b.expires_at > now)

    def begin_award_wait(self, requester: str) -> bool:
        """May a job submit from `requester` wait for its award to arrive? Only while we hold an open bid for it,
        at most one waiting submit per such bid, and `MAX_AWARD_WAITS` in all. Pair with `end_award_wait`."""
        waiting = self._award_waits.get(requester, 0)
        if sum(self._award_waits.values()) >= MAX_AWARD_WAITS or waiting >= self.bids_for(requester):
            return False
        self._award_waits[requester] = waiting + 1
        return True

    def end_award_wait(self, requester: str) -> None:
        left = self._award_waits.get(requester, 0) - 1
        if left > 0:
            self._award_waits[requester] = left
        else:
            self._award_waits.pop(requester, None)

    async def wait_accepted(self, job_id: str, timeout: float) -> bool:  # noqa: ASYNC109 - a plain deadline
        """True once an award for `job_id` has been accepted (for tests and the benchmark)."""
        if job_id in self._accepted:
            return True
        waiter = self._waiters.setdefault(job_id, asyncio.Event())
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            return job_id in self._accepted
        finally:
            self._waiters.pop(job_id, None)
        return True

    def _expire(self, now: float) -> None:
        for bid_id in [k for k, b in self._open.items() if b.expires_at <= now]:
            del self._open[bid_id]

    # -- RFB and CANCEL ------------------------------------------------------------------------------

    async def _on_market(self, event: Event, _relay: str) -> None:
        if event.kind == Kind.CANCEL:
            result = await self._take_cancel(event)
            self._events.labels("cancel", result).inc()
        elif event.pubkey != self.pubkey:
            result = await self._take_rfb(event)
            self._events.labels("rfb", result).inc()

    async def _take_rfb(self, event: Event) -> str:
        now = self._clock()
        addressed = bool(event.tag_values("p"))
        if addressed and self.pubkey not in event.tag_values("p"):
            return "not_addressed"
        try:
            expires = check_auction_event(
                event,
                Kind.RFB,
                recipient=self.pubkey if addressed else None,
                skew_s=self.settings.clock_skew_s,
                now=now,
            )
            rfb = decode_payload(event.content, Rfb)
        except FedaiError as err:
            return reason(err)
        settings = self.settings
        if rfb.deadline_ms <= now * 1000:
            return "expired"
        if rfb.deadline_ms > (now + settings.fed_max_deadline_s) * 1000:
            return "too_long"  # an award for it could sit unused that long
        if self._cancelled.get(event.id) == event.pubkey:
            return "cancelled"
        if not choosable(self.peers, event.pubkey):
            return "blocked"
        self._expire(now)
        if len(self._open) >= self._max_open:
            return "full"
        if sum(1 for b in self._open.values() if b.requester == event.pubkey) >= settings.fed_max_open_bids_per_peer:
            return "peer_full"
        quoted = self.quote(event, rfb)
        bid = await quoted if inspect.isawaitable(quoted) else quoted
        if bid is None:
            return "declined"
        bid = msgspec.structs.replace(bid, rfb=event.id)
        hold = min(expires, math.floor(now) + settings.fed_bid_hold_s)  # a far-future RFB holds us this long only
        bid_event = seal(self.keys, Kind.BID, bid, to=event.pubkey, reply_to=event.id, expiration=hold)
        self._open[bid_event.id] = OpenBid(
            bid_id=bid_event.id,
            rfb_id=event.id,
            requester=event.pubkey,
            price_msat=bid.price_msat,
            capacity_token=bid.capacity_token,
            privacy=rfb.privacy,
            expires_at=hold,
            terms=terms_of(rfb),
        )
        # the relays' OKs are awaited off this subscription's queue, so the next RFB is not held up by them
        self.spawn(self._publish_bid(bid_event), "auction bid")
        return "bid"

    async def _publish_bid(self, bid_event: Event) -> None:
        results = await self.relays.publish(bid_event)
        published = any(r.ok for r in results)
        self._events.labels("bid", "published" if published else "not_published").inc()
        if not published:
            self._open.pop(bid_event.id, None)

    async def _take_cancel(self, event: Event) -> str:
        try:
            check_auction_event(
                event, Kind.CANCEL, recipient=None, skew_s=self.settings.clock_skew_s, now=self._clock()
            )
            cancel = decode_payload(event.content, Cancel)
        except FedaiError as err:
            return reason(err)
        if event.tag_values("e") != [cancel.rfb]:
            return "mismatch"
        _remember(self._cancelled, cancel.rfb, event.pubkey)
        dropped = [k for k, b in self._open.items() if b.rfb_id == cancel.rfb and b.requester == event.pubkey]
        for bid_id in dropped:
            del self._open[bid_id]
        if self._awarded.get(cancel.rfb) == event.pubkey:
            jobs = await cancel_awarded(self.pool, cancel.rfb, event.pubkey)
            log.info("awarded job withdrawn by its requester", extra={"rfb": cancel.rfb, "jobs": len(jobs)})
        return "dropped" if dropped else "noted"

    # -- AWARD ---------------------------------------------------------------------------------------

    async def _on_award(self, event: Event, _relay: str) -> None:
        result = await self._take_award(event)
        self._events.labels("award", result).inc()
        if result != "accepted":
            log.info("award refused", extra={"award": event.id, "requester": event.pubkey[:16], "reason": result})

    async def _take_award(self, event: Event) -> str:
        now = self._clock()
        targets = event.tag_values("e")
        held = self._open.get(targets[0]) if len(targets) == 1 else None
        try:
            check_auction_event(
                event,
                Kind.AWARD,
                recipient=self.pubkey,
                skew_s=self.settings.clock_skew_s,
                now=now,
                reply_to=held.bid_id if held is not None else None,
            )
            award = decode_payload(event.content, Award)
        except FedaiError as err:
            return reason(err)
        refusal = _refuse_award(held, event, award, now)
        if refusal is not None:
            return refusal
        assert held is not None
        stored = await insert_job(
            self.pool,
            NewJob(
                job_id=award.job_id,
                role="provider",
                peer=event.pubkey,
                rfb_id=held.rfb_id,
                bid_id=held.bid_id,
                award_id=event.id,
                capacity_token=held.capacity_token,
                price_msat=award.price_msat,
                privacy=held.privacy,
                terms=held.terms,
            ),
        )
        self._open.pop(held.bid_id, None)  # an open bid is awarded once
        if not stored:
            return "duplicate"
        _remember(self._awarded, held.rfb_id, event.pubkey)
        _remember(self._accepted, award.job_id, event.id)
        waiter = self._waiters.get(award.job_id)
        if waiter is not None:
            waiter.set()
        return "accepted"


def _refuse_award(held: OpenBid | None, event: Event, award: Award, now: float) -> str | None:
    """Why an award (already checked as an envelope addressed to us) cannot be accepted, or None. A cancelled
    RFB has no open bid left (the cancel dropped it), so its award is an `unknown_bid`."""
    if held is None:
        return "unknown_bid"
    if event.pubkey != held.requester:
        return "wrong_signer"
    if award.bid != held.bid_id or award.rfb != held.rfb_id:
        return "mismatch"
    if award.capacity_token != held.capacity_token:
        return "wrong_token"
    if award.price_msat > held.price_msat:
        return "over_price"
    if held.expires_at <= now:
        return "expired"
    return None


__all__ = ["Bidder", "OpenBid"]
