"""Federation with peer routers, as one subsystem the router starts and stops (docs/federation.md).

It holds the peer book (what peers announce), the announcer (our load, backpressure and announcements), and,
with relays, the auctioneer (offloading our requests) and the bidder (taking peers' jobs). The rest of the router
sees only this class: as an `Offloader` (the request path), as the /federation/job handler, and as the
federation view of the ops endpoints.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from fedai.nostr import RelayPool
from fedai.payments.wallet import Wallet
from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.event import Event
from fedai.protocol.federation import Backpressure
from fedai.protocol.keys import Keys
from fedai.protocol.messages import InferenceRequest, Payee
from fedai.protocol.payment import invalid
from fedai_router.background import Background
from fedai_router.claims import Claims
from fedai_router.completion import Completion, Origin
from fedai_router.config import RouterSettings
from fedai_router.dispatch import Dispatcher
from fedai_router.endpoints import EndpointValidator
from fedai_router.federation.announce import CHECK_INTERVAL_S, Announcer
from fedai_router.federation.auction import Auctioneer
from fedai_router.federation.bid_quote import local_quote
from fedai_router.federation.bidder import Bidder
from fedai_router.federation.jobs import Provider
from fedai_router.federation.offload import Offloading, awarded_of, won_job
from fedai_router.federation.peer_feed import feed_peers
from fedai_router.federation.peers import PeerBook
from fedai_router.federation.provider_invoice import InvoiceFor
from fedai_router.federation.settlement import ProviderSettlement
from fedai_router.intake import Intake
from fedai_router.metrics import RouterMetrics
from fedai_router.offloading import PaidJob, WonJob, provider_entry
from fedai_router.outbound import Outbound
from fedai_router.planning import Planner
from fedai_router.pricing import Fees
from fedai_router.registry import Registry
from fedai_router.scheduler import Policy
from fedai_router.settlement import RouterSettlement
from fedai_router.store.peers import load_peers


class Federation:
    def __init__(
        self,
        *,
        keys: Keys,
        settings: RouterSettings,
        version: str,
        pool: asyncpg.Pool,
        registry: Registry,
        policy: Policy,
        intake: Intake,
        claims: Claims,
        planner: Planner,
        dispatcher: Dispatcher,
        completion: Completion,
        outbound: Outbound,
        endpoints: EndpointValidator,
        metrics: RouterMetrics,
        background: Background,
        fees: Fees,
        wallet: Wallet | None = None,
        refunds: RouterSettlement | None = None,  # a paid job's statement and refund (the provider role)
    ) -> None:
        self.keys = keys
        self.settings = settings
        self.fees = fees  # the router fee in force (ROUTER_FEE_*, or the admin API's): bids, prices, receipts
        self.pool = pool  # peers and federation_jobs
        self.registry = registry  # our fleet: what we announce and bid with
        self.policy = policy
        self.outbound = outbound
        self.completion = completion
        self.metrics = metrics
        self.background = background
        self.peers = PeerBook.for_settings(settings, metrics.registry, endpoints)
        self.announcer = Announcer(
            keys=keys,
            settings=settings,
            version=version,
            nodes=registry.nodes,
            tables=registry.tables,
            policy=policy,
            latency=metrics.node_latency,
            metrics=metrics.registry,
            fees=fees,
        )
        self.provider = Provider(
            keys=keys,
            settings=settings,
            intake=intake,
            claims=claims,
            planner=planner,
            dispatcher=dispatcher,
            completion=completion,
            pool=pool,
            metrics=metrics.registry,
            bidder=lambda: self.bidder,
            fees=fees,
            settlement=ProviderSettlement(
                keys, pool, wallet, network=settings.ln_network, required=settings.require_payment, refunds=refunds
            ),
        )
        self.auctioneer: Auctioneer | None = None  # with relays
        self.bidder: Bidder | None = None  # with relays, unless ROUTER_BIDDING=false
        self._offloading: Offloading | None = None  # with relays

    async def start(self, relays: RelayPool | None) -> None:
        """Restore the peers stored earlier and start measuring load; with relays, announce, learn peers, and
        subscribe to auctions (bids for ours; unless ROUTER_BIDDING=false, peers' RFBs and awards)."""
        self.peers.restore(await load_peers(self.pool))
        self.announcer.update(time.time())
        self.background.every(CHECK_INTERVAL_S, "federation announce", self.announcer.tick)
        if relays is None:
            return
        self.announcer.relays = relays
        await feed_peers(self.peers, relays, self.pool, self.background)
        keys, settings, pool, peers, registry = self.keys, self.settings, self.pool, self.peers, self.metrics.registry
        self.auctioneer = Auctioneer(
            keys=keys, settings=settings, relays=relays, pool=pool, peers=peers, metrics=registry
        )
        await self.auctioneer.start()
        if settings.bidding:
            quote = local_quote(
                settings,
                self.fees,
                self.registry.tables,
                self.policy,
                lambda: self.announcer.backpressure,
                held=lambda model: bidder.held(model),
            )
            bidder = Bidder(
                keys=keys,
                settings=settings,
                relays=relays,
                pool=pool,
                peers=peers,
                metrics=registry,
                spawn=self.background.spawn,
                quote=quote,
            )
            await bidder.start()
            self.bidder = bidder
        self._offloading = Offloading(
            keys=keys,
            settings=settings,
            auctioneer=self.auctioneer,
            peers=peers,
            outbound=self.outbound,
            pool=pool,
            completion=self.completion,
            metrics=self.metrics,
        )

    async def stop(self) -> None:
        """Its loops and jobs end with the router's background; relays are closed by the router."""

    # -- the request path (`fedai_router.offloading.Offloader`) ---------------------------------------------------

    def can_offload(self, request: InferenceRequest) -> bool:
        return self._offloading is not None and self._offloading.may_leave(request)

    async def offload(self, client_event: Event, request: InferenceRequest, local: FedaiError) -> Event:
        if self._offloading is None:
            raise local
        return await self._offloading.offload(client_event, request, local)

    async def win_job(self, request: InferenceRequest, *, hold_s: int, key: str) -> WonJob | None:
        if self._offloading is None:
            return None
        won = await self._offloading.win_job(request, hold_s=hold_s, key=key)
        return None if won is None else won_job(*won)

    async def provider_invoice(self, job: WonJob, *, quote: str, client: str, expires_at: int) -> Payee:
        offloading = self._running()
        return await offloading.provider_invoice(awarded_of(job), InvoiceFor(quote, client, expires_at))

    async def run_paid(self, origin: Origin, request: InferenceRequest, job: WonJob, paid: PaidJob) -> Event:
        offloading = self._running()
        if paid.request is None:  # the request path always has it: the payment request its proof claimed
            raise invalid("a paid offload names the payment request the client paid")
        entry = provider_entry(paid.request, job.provider)
        return await offloading.run_paid(origin, request, awarded_of(job), job.salt, entry, paid)

    def _running(self) -> Offloading:
        if self._offloading is None:
            raise FedaiError(ErrorCode.NO_CAPACITY, "federation is not running (no relays): retry later", 1000)
        return self._offloading

    # -- POST /federation/job -------------------------------------------------------------------------------------

    async def handle_job(self, body: bytes) -> Event:
        return await self.provider.handle(body)

    async def handle_invoice(self, body: bytes) -> Event:
        """`POST /federation/invoice`: our invoice for an award (docs/federation.md#settlement)."""
        return await self.provider.handle_invoice(body)

    # -- what the ops endpoints show (`fedai_router.ops.FederationView`) -----------------------------------------

    @property
    def backpressure(self) -> Backpressure:
        """NORMAL / BUSY / SATURATED from the share of fleet capacity in use, updated every second."""
        return self.announcer.backpressure

    @property
    def utilisation(self) -> float:
        return self.announcer.load.utilisation

    @property
    def surge(self) -> float:
        return self.announcer.surge

    def known_peers(self) -> int:
        return len(self.peers.known())

    def peer_summaries(self, now: float, *, detail: bool = True) -> list[dict[str, Any]]:
        return self.peers.summaries(now, detail=detail)
