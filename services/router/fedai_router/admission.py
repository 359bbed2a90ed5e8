"""What a node may register: per-descriptor caps (pure checks) and how fast new registrations are accepted per
key, per source address and per relay. Every refusal is a typed error naming the bound and its variable, raised
before anything is claimed or stored (docs/security.md#registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import NodeDescriptor
from fedai_router.config import RegistryLimits
from fedai_router.index import Budget, RegistryRefusal
from fedai_router.ratelimit import RateLimiter


def budget(limits: RegistryLimits) -> Budget:
    return Budget(max_nodes=limits.max_nodes, max_names=limits.max_names, verified_reserve=limits.verified_reserve)


def _refuse(reason: str, what: str, value: int, bound: int, variable: str) -> RegistryRefusal:
    return RegistryRefusal(ErrorCode.INVALID_EVENT, reason, f"{what}: {value} is more than {bound} ({variable})")


def check_size(size: int, limits: RegistryLimits) -> None:
    """A heartbeat's body or an announcement's content, before the descriptor in it is parsed."""
    if size > limits.max_descriptor_bytes:
        raise RegistryRefusal(
            ErrorCode.TOO_LARGE,
            "descriptor_bytes",
            f"descriptor is {size} bytes, more than {limits.max_descriptor_bytes} (ROUTER_NODE_MAX_DESCRIPTOR_BYTES)",
        )


def check_descriptor(descriptor: NodeDescriptor, limits: RegistryLimits) -> None:
    """Refuse a descriptor over any per-node cap with `invalid_event` naming the cap and its variable."""
    if len(descriptor.models) > limits.max_models:
        raise _refuse("models", "models", len(descriptor.models), limits.max_models, "ROUTER_NODE_MAX_MODELS")
    chars = limits.max_name_chars
    for field_name, value in (("region", descriptor.region), ("software_version", descriptor.software_version)):
        if len(value) > chars:
            raise _refuse("name_length", f"{field_name} length", len(value), chars, "ROUTER_MODEL_NAME_MAX_CHARS")
    for model in descriptor.models:
        if len(model.aliases) > limits.max_aliases:
            what = f"aliases of model {model.id[:chars]!r}"
            raise _refuse("aliases", what, len(model.aliases), limits.max_aliases, "ROUTER_NODE_MAX_ALIASES")
        if len(model.job_types) > limits.max_job_types:
            what = f"job types of model {model.id[:chars]!r}"
            raise _refuse("job_types", what, len(model.job_types), limits.max_job_types, "ROUTER_NODE_MAX_JOB_TYPES")
        for name in (model.id, *model.aliases, *model.job_types):
            if len(name) > chars:
                what = f"length of name {name[:32]!r}..."
                raise _refuse("name_length", what, len(name), chars, "ROUTER_MODEL_NAME_MAX_CHARS")


class RegistrationGate:
    """Token buckets for new registrations (a new key, or a known key with new names): per key, per source
    address and per relay. This replica's view, like `RateLimiter`; N replicas admit up to N times as many."""

    def __init__(self, limits: RegistryLimits, metrics: CollectorRegistry | None = None) -> None:
        window = float(limits.register_window_s)
        self.limits = limits
        self.per_key = RateLimiter(limits.register_per_key, window)
        self.per_address = RateLimiter(limits.register_per_address, window)
        self.per_relay = RateLimiter(limits.announce_per_relay, window)
        self.refused = Counter(
            "fedai_router_registry_refused",
            "Heartbeats, announcements and reloaded rows refused by a registry bound, by source and reason",
            ["source", "reason"],
            registry=metrics,
        )

    def check(self, pubkey: str, *, address: str | None = None, relay: str | None = None) -> None:
        """Take one token from the key's bucket and from its source's (address or relay), or raise `rate_limited`
        naming the variable. The source is checked first: a flood of fresh keys is stopped there."""
        if address is not None:
            self._take(self.per_address, address, "rate_address", "source address", "ROUTER_REGISTER_PER_ADDRESS")
        if relay is not None:
            self._take(self.per_relay, relay, "rate_relay", "relay", "ROUTER_ANNOUNCE_NEW_PER_RELAY")
        self._take(self.per_key, pubkey, "rate_key", "key", "ROUTER_REGISTER_PER_KEY")

    def _take(self, limiter: RateLimiter, key: str, reason: str, what: str, variable: str) -> None:
        try:
            limiter.check(key)
        except FedaiError as err:
            raise RegistryRefusal(
                ErrorCode.RATE_LIMITED,
                reason,
                f"too many new node registrations from this {what} ({variable}={int(limiter.limit)} per "
                f"{self.limits.register_window_s} s, ROUTER_REGISTER_WINDOW_S)",
                retry_after_ms=err.retry_after_ms,
            ) from None
