"""The node's usage-based settlement (docs/payments.md#refunds): its signed metering record states what it used
of the share it was paid (its metered price, at most the share), what it refunds to the client's `refund_to`
and what it keeps (dust below NODE_REFUND_DUST_MSAT, or everything unused without a destination). The refund is
opened before the answer leaves, paid from the node's own wallet in the background, and retried by a loop
(NODE_REFUND_RETRY_S); the node's Postgres (NODE_DB_URL) holds it, so a restart or a second process never pays
it twice."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import asyncpg

from fedai.observability.payment_metrics import PaymentMetrics
from fedai.payments.destination import DestinationInvoices
from fedai.payments.refund import parse_destination, settle_share
from fedai.payments.wallet import Wallet
from fedai.protocol.messages import Settlement
from fedai.protocol.payment import invalid
from fedai.refunder import Refunder, RefundPolicy
from fedai.service.tasks import cancel_and_wait
from fedai.store.refunds import RefundStore
from fedai_node.refund_fetch import public_fetch
from fedai_node.refund_settings import RefundSettings

log = logging.getLogger("fedai.node.settlement")


class NodeSettlement:
    def __init__(self, settings: RefundSettings, metrics: PaymentMetrics, *, network: str) -> None:
        self._settings = settings
        self._metrics = metrics
        self._network = network
        self.refunder: Refunder | None = None  # set by `start`, on the NODE_DB_URL pool
        self._loop: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()

    def start(self, pool: asyncpg.Pool, wallet: Wallet) -> None:
        s = self._settings
        fetch = public_fetch(allow_private=s.allow_private)
        invoices = DestinationInvoices(fetch, network=self._network, allow_http=s.allow_private)
        policy = RefundPolicy(s.max_fee_msat, s.max_attempts, s.allow_private)
        worker = f"node-{secrets.token_hex(6)}"
        self.refunder = Refunder(
            RefundStore(pool),
            wallet,
            invoices,
            role="node",
            worker=worker,
            policy=policy,
            observe=self._metrics.observe_refund,
        )
        self._loop = asyncio.create_task(self._retry_loop(), name="fedai-node-refunds")

    async def stop(self) -> None:
        await cancel_and_wait([self._loop, *self._attempts])

    def count_proof(self, outcome: str) -> None:
        """A forwarded proof: its claim's outcome (`claimed` or the refusal), then `consumed` or `released`."""
        self._metrics.proofs.labels("node", outcome).inc()

    def check_destination(self, refund_to: str | None) -> None:
        if refund_to is None:
            return
        try:
            parse_destination(refund_to, allow_http=self._settings.allow_private)
        except ValueError as exc:
            raise invalid(str(exc)) from None

    def statement(self, payment_hash: str, share_msat: int, price_msat: int, refund_to: str | None) -> Settlement:
        refunding = refund_to is not None and self.refunder is not None
        return settle_share("node", payment_hash, share_msat, price_msat, self._settings.dust_msat, refunding=refunding)

    async def after_answer(self, statement: Settlement, refund_to: str | None) -> None:
        """Count what was earned and kept; open the refund and pay it in the background."""
        self._metrics.earned.labels("node").inc(statement.used_msat + statement.kept_msat)
        self._metrics.refund_msat.labels("node", "kept").inc(statement.kept_msat)
        if self.refunder is None or refund_to is None or statement.refund_msat == 0:
            return
        if await self.refunder.open(statement, refund_to):
            self._metrics.refund_msat.labels("node", "refunded").inc(statement.refund_msat)
            task = asyncio.create_task(self._attempt(statement.payment_hash), name="fedai-node-refund")
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)

    async def _attempt(self, payment_hash: str) -> None:
        assert self.refunder is not None
        try:
            await self.refunder.attempt(payment_hash)
        except (OSError, asyncpg.PostgresError) as exc:  # the refund stays open: the retry loop takes it
            log.warning("refund attempt failed", extra={"error": type(exc).__name__})

    async def _retry_loop(self) -> None:
        assert self.refunder is not None
        while True:
            await asyncio.sleep(self._settings.retry_s)
            try:
                await self.refunder.store.release_stale(time.time() - 5 * self._settings.retry_s)
                await self.refunder.retry_due(self._settings.retry_s)
            except (OSError, asyncpg.PostgresError) as exc:  # the database or the wallet is back at the next pass
                log.warning("refund retries failed", extra={"error": type(exc).__name__})
