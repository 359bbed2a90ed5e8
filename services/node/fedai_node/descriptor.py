"""The node's descriptor (models, pricing, capacity, endpoint) and its signed node.announce event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import fedai
from fedai.protocol.envelope import seal
from fedai.protocol.event import Event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Capacity, ModelInfo, NodeDescriptor, Pricing
from fedai_node.config import NodeSettings
from fedai_node.prices import NodePrices
from fedai_node.runners.base import RunnerModel

ANNOUNCE_D_TAG = "fedai-node"
ANNOUNCE_T_TAG = "fedai"


def pricing(settings: NodeSettings) -> Pricing:
    return Pricing(input_msat=settings.price_input_msat, output_msat=settings.price_output_msat)


def build_descriptor(
    settings: NodeSettings,
    models: Sequence[RunnerModel],
    in_flight: int,
    latency_ms: Mapping[str, float] | None = None,
    primary: str | None = None,
    *,
    draining: bool = False,
    prices: NodePrices | None = None,
) -> NodeDescriptor:
    """What routers schedule on: `max_tokens` is the node's effective cap, not only the model's. `primary` is
    the model `NODE_MODEL_ALIASES` name (default `NODE_MODEL_ID`). `prices`: the run-time ones (the admin API's),
    else NODE_PRICE_* for every model."""
    prices = prices or NodePrices(pricing(settings))
    primary = primary or settings.model_id
    latency_ms = latency_ms or {}
    return NodeDescriptor(
        endpoint=settings.endpoint,
        models=[
            ModelInfo(
                id=m.id,
                context_window=m.context_window,
                max_tokens=min(settings.max_tokens, m.max_tokens),
                pricing=prices.advertised(m.id),
                job_types=list(settings.job_types),
                latency_estimate_ms=round(latency_ms.get(m.id, 0.0), 3),
                aliases=list(settings.model_aliases) if m.id == primary else [],
            )
            for m in models
        ],
        capacity=Capacity(max_concurrent=settings.capacity_max, in_flight=in_flight),
        region=settings.region,
        software_version=fedai.__version__,
        draining=draining,
    )


def announce_event(keys: Keys, descriptor: NodeDescriptor) -> Event:
    """Signed node.announce (kind 31023, addressable): relays keep only the latest per node."""
    tags = [["d", ANNOUNCE_D_TAG], ["t", ANNOUNCE_T_TAG], *(["model", m.id] for m in descriptor.models)]
    return seal(keys, Kind.NODE_ANNOUNCE, descriptor, extra_tags=tags)
