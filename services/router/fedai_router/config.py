"""Router configuration from environment variables (names from DESIGN.md section 7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedai.protocol.errors import KeyFormatError
from fedai.protocol.keys import Keys, parse_pubkey
from fedai.service.config import ConfigError, Env
from fedai_router.pricing import MAX_FEE_BASE_MSAT
from fedai_router.scheduler.types import Policy, Weights


@dataclass(frozen=True)
class RouterSettings:
    keys: Keys
    host: str = "127.0.0.1"
    port: int = 8080
    db_url: str | None = None
    data_dir: Path = Path(".fedai")
    relays: list[str] = field(default_factory=list)
    max_request_bytes: int = 256 * 1024
    rate_limit_max: int = 120
    rate_limit_window_ms: int = 60_000
    allow_private_endpoints: bool = False
    client_allowlist: frozenset[str] = frozenset()
    client_blocklist: frozenset[str] = frozenset()
    clock_skew_s: int = 60
    node_timeout_ms: int = 60_000
    node_connect_timeout_ms: int = 2_000
    max_attempts: int = 3
    heartbeat_ttl_ms: int = 30_000
    announce_ttl_s: int = 900
    quote_ttl_s: int = 120
    # a node may meter at most this many input tokens: tokens_per_byte x prompt bytes + overhead (verify.py)
    input_tokens_per_byte: int = 1
    input_tokens_overhead: int = 1024
    fee_base_msat: int = 0
    fee_ppm: int = 0
    registry_refresh_ms: int = 1_000
    db_pool_max: int = 10
    log_level: str = "INFO"
    weights: Weights = field(default_factory=Weights)
    sched_top_n: int = 1
    retry_budget_ratio: float = 0.2
    retry_budget_min_per_s: float = 5.0
    public_url: str | None = None  # the base URL clients use (NIP-98 `u` tags are checked against it)
    api_keys: dict[str, str] = field(default_factory=dict)  # sha256(key) hex -> client pubkey
    nip98_window_s: int = 60
    # federation: what we accept and what we spend (docs/federation.md)
    fed_max_privacy: int = 2  # the highest privacy level we offload or accept from peers (3 never leaves)
    fed_privacy_by_job: dict[str, int] = field(default_factory=dict)  # per job type, below the maximum
    fed_max_cost_msat: int = 1_000_000  # per offloaded job, unless the request caps it lower
    fed_spend_cap_msat: int = 10_000_000  # per peer and window
    fed_spend_window_s: int = 3600
    fed_max_attempts: int = 2  # offload attempts (auctions) per request
    fed_job_timeout_ms: int = 120_000
    # auctions (docs/federation.md, "Auctions")
    auction_ttl_ms: int = 1_500  # how long the requester collects bids
    posted_ttl_ms: int = 500  # posted-price routing: how long to wait for the chosen peer's bid
    reauction_cooldown_ms: int = 5_000  # no new auction of the same job within this (retries excepted)
    peer_breaker_failures: int = 3  # consecutive failed jobs that open a peer's circuit breaker
    peer_breaker_cooldown_s: int = 60
    auction_w_price: float = 1.0  # bid score weights (fedai_router.federation.choice)
    auction_w_eta: float = 1.0  # per second of ETA
    auction_w_reputation: float = 2.0
    bidding: bool = True  # answer peers' RFBs (when ROUTER_RELAYS is set)
    # announcements and peer policy (docs/federation.md, "Announcements", "Peers and policy")
    announce_s: int = 60  # re-publish caps, prices and status at least this often
    busy_at: float = 0.7  # fraction of fleet capacity in use from which we announce BUSY
    saturated_at: float = 0.95  # ... and SATURATED
    surge_start: float = 0.5  # surge rises above 1.0 from this fraction in use
    surge_max: float = 2.0  # ... to this at full use
    peer_allowlist: frozenset[str] = frozenset()  # only these peers (empty: any)
    peer_blocklist: frozenset[str] = frozenset()  # never these
    peer_mute: frozenset[str] = frozenset()  # learned, never chosen
    follow: frozenset[str] = frozenset()  # keys we trust; their kind-3 contact lists feed the web of trust
    peer_wot_min: int = 0  # a peer must be followed (kind 3) by at least this many keys of `follow`
    peer_rate: int = 600  # inbound relay events per author and minute (the relay pool's author budget)
    peer_max_content_bytes: int = 128 * 1024  # announcement content bound, checked before parsing
    peer_ttl_s: int = 300  # an announcement without `expiration` counts as fresh this long

    def max_privacy(self, job_type: str | None) -> int:
        """The highest privacy level a job of this type may be offloaded or accepted at."""
        return min(self.fed_max_privacy, self.fed_privacy_by_job.get(job_type or "text-generation", 3))

    @property
    def policy(self) -> Policy:
        return Policy(
            heartbeat_ttl_s=self.heartbeat_ttl_ms / 1000,
            announce_ttl_s=self.announce_ttl_s,
            weights=self.weights,
            random_top_n=self.sched_top_n,
        )

    @classmethod
    def from_env(cls, env: Env | None = None) -> RouterSettings:
        env = env or Env()
        settings = cls(
            keys=env.keys("ROUTER_PRIVATE_KEY"),
            host=env.text("ROUTER_HOST", "127.0.0.1"),
            port=env.integer("ROUTER_PORT", 8080, minimum=0, maximum=65535),
            db_url=env.optional("ROUTER_DB_URL") or env.optional("DATABASE_URL"),
            data_dir=Path(env.text("FEDAI_DATA_DIR", ".fedai")),
            relays=env.urls("ROUTER_RELAYS", ("ws", "wss")),
            max_request_bytes=env.integer("ROUTER_MAX_REQUEST_BYTES", 256 * 1024, minimum=1024),
            rate_limit_max=env.integer("ROUTER_RATE_LIMIT_MAX", 120, minimum=1),
            rate_limit_window_ms=env.integer("ROUTER_RATE_LIMIT_WINDOW_MS", 60_000, minimum=1),
            allow_private_endpoints=env.flag("ROUTER_ALLOW_PRIVATE_ENDPOINTS", False),
            client_allowlist=env.pubkeys("ROUTER_CLIENT_ALLOWLIST", required=False),
            client_blocklist=env.pubkeys("ROUTER_CLIENT_BLOCKLIST", required=False),
            clock_skew_s=env.integer("FEDAI_CLOCK_SKEW_S", 60, minimum=1),
            node_timeout_ms=env.integer("ROUTER_NODE_TIMEOUT_MS", 60_000, minimum=10),
            node_connect_timeout_ms=env.integer("ROUTER_NODE_CONNECT_TIMEOUT_MS", 2_000, minimum=10),
            max_attempts=env.integer("ROUTER_MAX_ATTEMPTS", 3, minimum=1, maximum=10),
            heartbeat_ttl_ms=env.integer("ROUTER_HEARTBEAT_TTL_MS", 30_000, minimum=100),
            announce_ttl_s=env.integer("ROUTER_ANNOUNCE_TTL_S", 900, minimum=1),
            quote_ttl_s=env.integer("ROUTER_QUOTE_TTL_S", 120, minimum=1),
            input_tokens_per_byte=env.integer("ROUTER_INPUT_TOKENS_PER_BYTE", 1, minimum=1, maximum=16),
            input_tokens_overhead=env.integer("ROUTER_INPUT_TOKENS_OVERHEAD", 1024, minimum=0, maximum=1_000_000),
            fee_base_msat=env.integer("ROUTER_FEE_BASE_MSAT", 0, minimum=0, maximum=MAX_FEE_BASE_MSAT),
            fee_ppm=env.integer("ROUTER_FEE_PPM", 0, minimum=0, maximum=1_000_000),
            registry_refresh_ms=env.integer("ROUTER_REGISTRY_REFRESH_MS", 1_000, minimum=50),
            db_pool_max=env.integer("ROUTER_DB_POOL_MAX", 10, minimum=2),
            log_level=env.text("ROUTER_LOG_LEVEL", "INFO"),
            weights=Weights(
                price=env.number("ROUTER_W_PRICE", 1.0, minimum=0, maximum=1000),
                load=env.number("ROUTER_W_LOAD", 1.0, minimum=0, maximum=1000),
                latency_per_s=env.number("ROUTER_W_LATENCY", 1.0, minimum=0, maximum=1000),
                reliability=env.number("ROUTER_W_RELIABILITY", 2.0, minimum=0, maximum=1000),
                trust=env.number("ROUTER_W_TRUST", 0.2, minimum=0, maximum=1000),
                unverified=env.number("ROUTER_W_UNVERIFIED", 0.5, minimum=0, maximum=1000),
            ),
            sched_top_n=env.integer("ROUTER_SCHED_TOP_N", 1, minimum=1, maximum=100),
            retry_budget_ratio=env.number("ROUTER_RETRY_BUDGET_RATIO", 0.2, minimum=0, maximum=10),
            retry_budget_min_per_s=env.number("ROUTER_RETRY_BUDGET_MIN_PER_S", 5.0, minimum=0, maximum=1e6),
            public_url=env.url("ROUTER_PUBLIC_URL") if env.optional("ROUTER_PUBLIC_URL") else None,
            api_keys=parse_api_keys(env.optional("ROUTER_API_KEYS") or ""),
            nip98_window_s=env.integer("FEDAI_NIP98_WINDOW_S", 60, minimum=1, maximum=600),
            fed_max_privacy=env.integer("ROUTER_FED_MAX_PRIVACY", 2, minimum=0, maximum=2),
            fed_privacy_by_job=parse_privacy_by_job(env.optional("ROUTER_FED_PRIVACY_BY_JOB_TYPE") or ""),
            fed_max_cost_msat=env.integer("ROUTER_FED_MAX_COST_MSAT", 1_000_000, minimum=0),
            fed_spend_cap_msat=env.integer("ROUTER_FED_SPEND_CAP_MSAT", 10_000_000, minimum=0),
            fed_spend_window_s=env.integer("ROUTER_FED_SPEND_WINDOW_S", 3600, minimum=1),
            fed_max_attempts=env.integer("ROUTER_FED_MAX_ATTEMPTS", 2, minimum=1, maximum=5),
            fed_job_timeout_ms=env.integer("ROUTER_FED_JOB_TIMEOUT_MS", 120_000, minimum=100),
            auction_ttl_ms=env.integer("ROUTER_AUCTION_TTL_MS", 1_500, minimum=10, maximum=60_000),
            posted_ttl_ms=env.integer("ROUTER_POSTED_TTL_MS", 500, minimum=10, maximum=60_000),
            reauction_cooldown_ms=env.integer("ROUTER_REAUCTION_COOLDOWN_MS", 5_000, minimum=0),
            peer_breaker_failures=env.integer("ROUTER_PEER_BREAKER_FAILURES", 3, minimum=1, maximum=1000),
            peer_breaker_cooldown_s=env.integer("ROUTER_PEER_BREAKER_COOLDOWN_S", 60, minimum=0),
            auction_w_price=env.number("ROUTER_AUCTION_W_PRICE", 1.0, minimum=0, maximum=1000),
            auction_w_eta=env.number("ROUTER_AUCTION_W_ETA", 1.0, minimum=0, maximum=1000),
            auction_w_reputation=env.number("ROUTER_AUCTION_W_REPUTATION", 2.0, minimum=0, maximum=1000),
            bidding=env.flag("ROUTER_BIDDING", True),
            announce_s=env.integer("ROUTER_ANNOUNCE_S", 60, minimum=1, maximum=86_400),
            busy_at=env.number("ROUTER_BUSY_AT", 0.7, minimum=0.01, maximum=1),
            saturated_at=env.number("ROUTER_SATURATED_AT", 0.95, minimum=0.01, maximum=1),
            surge_start=env.number("ROUTER_SURGE_START", 0.5, minimum=0, maximum=1),
            surge_max=env.number("ROUTER_SURGE_MAX", 2.0, minimum=1, maximum=100),
            peer_allowlist=env.pubkeys("ROUTER_PEER_ALLOWLIST", required=False),
            peer_blocklist=env.pubkeys("ROUTER_PEER_BLOCKLIST", required=False),
            peer_mute=env.pubkeys("ROUTER_PEER_MUTE", required=False),
            follow=env.pubkeys("ROUTER_FOLLOW", required=False),
            peer_wot_min=env.integer("ROUTER_PEER_WOT_MIN", 0, minimum=0, maximum=1000),
            peer_rate=env.integer("ROUTER_PEER_RATE", 600, minimum=1),
            peer_max_content_bytes=env.integer("ROUTER_PEER_MAX_CONTENT_BYTES", 128 * 1024, minimum=1024),
            peer_ttl_s=env.integer("ROUTER_PEER_TTL_S", 300, minimum=1),
        )
        if settings.client_allowlist & settings.client_blocklist:
            raise ConfigError("ROUTER_CLIENT_ALLOWLIST and ROUTER_CLIENT_BLOCKLIST share keys")
        check_peer_settings(settings)
        return settings


def parse_api_keys(value: str) -> dict[str, str]:
    """`ROUTER_API_KEYS`: comma list of `<client npub or hex>:<sha256 hex of the key>` (keys are never stored)."""
    mapping: dict[str, str] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        client, sep, digest = entry.rpartition(":")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError("ROUTER_API_KEYS: each entry is <npub or hex pubkey>:<64 hex sha256 of the key>")
        try:
            mapping[digest] = parse_pubkey(client)
        except KeyFormatError as exc:
            raise ConfigError(f"ROUTER_API_KEYS: {exc}") from None
    return mapping


def parse_privacy_by_job(value: str) -> dict[str, int]:
    """`ROUTER_FED_PRIVACY_BY_JOB_TYPE`: comma list of `<job type>=<level 0-2>`."""
    levels: dict[str, int] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        job_type, sep, level = entry.partition("=")
        if not sep or not job_type or level not in {"0", "1", "2"}:
            raise ConfigError("ROUTER_FED_PRIVACY_BY_JOB_TYPE: each entry is <job type>=<0, 1 or 2>")
        levels[job_type.strip()] = int(level)
    return levels


def check_peer_settings(settings: RouterSettings) -> None:
    """Announcement thresholds and peer lists that cannot work together fail at start."""
    if settings.busy_at >= settings.saturated_at:
        raise ConfigError("ROUTER_BUSY_AT must be below ROUTER_SATURATED_AT")
    if settings.peer_allowlist & settings.peer_blocklist:
        raise ConfigError("ROUTER_PEER_ALLOWLIST and ROUTER_PEER_BLOCKLIST share keys")
    if settings.peer_wot_min > len(settings.follow):
        raise ConfigError("ROUTER_PEER_WOT_MIN is larger than the number of keys in ROUTER_FOLLOW")
