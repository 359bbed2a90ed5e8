"""The node's prices at run time: NODE_PRICE_INPUT_MSAT / NODE_PRICE_OUTPUT_MSAT for every model, unless an
operator set a model's through the admin API (runbooks/admin.md#node).

Routers check that a metering record charges at most the price they last heard (the heartbeat), so a raise must
not be charged before they hear it: until `settle` (called once the routers have been told), what a request is
charged is the lower of the old and the new rate. A cut is charged at once."""

from __future__ import annotations

from collections.abc import Mapping

from fedai.protocol.messages import Pricing


def lower(a: Pricing, b: Pricing) -> Pricing:
    return Pricing(input_msat=min(a.input_msat, b.input_msat), output_msat=min(a.output_msat, b.output_msat))


class NodePrices:
    def __init__(self, default: Pricing) -> None:
        self.default = default  # the environment's, for every model without its own
        self._set: dict[str, Pricing] = {}
        self._before: dict[str, Pricing] = {}  # a model's advertised price before a change routers may not know yet

    @property
    def overrides(self) -> Mapping[str, Pricing]:
        return self._set

    def advertised(self, model: str) -> Pricing:
        """What the descriptor (heartbeats, announcements) says `model` costs."""
        return self._set.get(model, self.default)

    def charged(self, model: str) -> Pricing:
        """What a request admitted now is charged: the advertised price, or the lower of it and the one before an
        unsettled change."""
        now = self.advertised(model)
        before = self._before.get(model)
        return now if before is None else lower(now, before)

    def set(self, model: str, pricing: Pricing | None) -> None:
        """`model`'s own price, or None: back to the environment's. Charged as `charged` says until `settle`."""
        self._before.setdefault(model, self.advertised(model))
        if pricing is None:
            self._set.pop(model, None)
        else:
            self._set[model] = pricing

    def settle(self) -> None:
        """The routers have heard the new prices: charge them from now."""
        self._before.clear()

    def load(self, prices: Mapping[str, Pricing]) -> None:
        """The prices stored by the admin API (at start, before any heartbeat)."""
        self._set = dict(prices)
        self._before.clear()
