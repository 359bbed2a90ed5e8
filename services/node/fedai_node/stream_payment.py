"""A paid stream's payment on the node (docs/payments.md#paid-streams, #refunds): the claim held while the stream
runs, consumed once an event went out (released when none did), and the settlement of the share once it ended.

The settlement is the one `/infer` states: the metered price of what was produced (complete, or partial after a
cancel, a tripped bound, a hang-up or a mid-stream failure) against the share paid. It is signed in the `done`
event's metering record when there is one, and its refund is opened in every case where work was done, so a
client whose stream was cut short still gets back the unused part of what it paid."""

from __future__ import annotations

from fedai.protocol.messages import Settlement
from fedai_node.payments import Held, NodePayments
from fedai_node.reply import ReplySigner
from fedai_node.runners.base import RunnerResult
from fedai_node.serving import Admitted


class StreamPayment:
    """One paid stream's claim (`held`) and its settlement, computed once from the stream's final result."""

    def __init__(self, payments: NodePayments, held: Held, signer: ReplySigner, admitted: Admitted) -> None:
        self._payments = payments
        self._admitted = admitted  # the request's pricing is the one in force when it was admitted
        self._held = held
        self._signer = signer
        self._stated: tuple[RunnerResult, Settlement | None] | None = None

    def statement(self, result: RunnerResult) -> Settlement | None:
        """What the node states of its share for `result` (the same statement for the same result)."""
        if self._stated is None or self._stated[0] is not result:
            self._stated = (result, self._payments.statement(self._held, self._signer.price(self._admitted, result)))
        return self._stated[1]

    async def end(self, started: bool, result: RunnerResult | None) -> None:
        """The stream is over: consume the claim if an event went out (and open the refund of what was not used),
        release it otherwise."""
        await self._payments.settle(self._held, served=started)
        if started and result is not None:
            await self._payments.after_answer(self._held, self.statement(result))
