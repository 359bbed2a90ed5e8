"""Router configuration from environment variables (docs/decisions.md#configuration).

One file, over 400 lines: every ROUTER_* variable is read, bounded and refused here, so an operator's question
"what does this variable do, and what values does it take" has one answer. Groups with their own settings type
already live beside their code (`settlement_settings.py`, `fedai.payments.config`, `fedai.payments.retention`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from fedai.payments.config import check_network, check_wallet_spec
from fedai.payments.retention import DEFAULT_PAYMENT_RETENTION_S, payment_retention_s
from fedai.protocol.errors import KeyFormatError
from fedai.protocol.keys import Keys, parse_pubkey
from fedai.service.config import ConfigError, Env
from fedai.service.stream_limits import StreamLimits
from fedai_router.client_wallets import WalletBinding, parse_wallet_bindings
from fedai_router.pricing import MAX_FEE_BASE_MSAT
from fedai_router.scheduler.types import Policy, Weights
from fedai_router.settlement_settings import SettlementSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# --- the bounded registry and scheduled pruning (docs/security.md#registry) ---------------------------------


@dataclass(frozen=True)
class RegistryLimits:
    """What one node may register, and what all nodes together may make a replica hold."""

    max_models: int = 8  # ROUTER_NODE_MAX_MODELS: models in one descriptor
    max_aliases: int = 4  # ROUTER_NODE_MAX_ALIASES: aliases of one model
    max_job_types: int = 4  # ROUTER_NODE_MAX_JOB_TYPES: job types of one model
    max_name_chars: int = 96  # ROUTER_MODEL_NAME_MAX_CHARS: model ids, aliases, job types, region, version
    max_descriptor_bytes: int = 16 * 1024  # ROUTER_NODE_MAX_DESCRIPTOR_BYTES: heartbeat/announce event, pre-parse
    max_names: int = 2_000  # ROUTER_MAX_MODEL_NAMES: distinct model names (ids and aliases) overall
    max_nodes: int = 5_000  # ROUTER_MAX_NODES: nodes held in memory
    verified_reserve: float = 0.25  # ROUTER_REGISTRY_VERIFIED_RESERVE: share of both budgets only verified nodes use
    register_window_s: int = 600  # ROUTER_REGISTER_WINDOW_S
    register_per_key: int = 10  # ROUTER_REGISTER_PER_KEY: registrations (new key or new names) per key and window
    register_per_address: int = 20  # ROUTER_REGISTER_PER_ADDRESS: ... per source address and window
    announce_per_relay: int = 200  # ROUTER_ANNOUNCE_NEW_PER_RELAY: ... learned from one relay per window

    @classmethod
    def from_env(cls, env: Env) -> RegistryLimits:
        return cls(
            max_models=env.integer("ROUTER_NODE_MAX_MODELS", 8, minimum=1, maximum=256),
            max_aliases=env.integer("ROUTER_NODE_MAX_ALIASES", 4, minimum=0, maximum=32),
            max_job_types=env.integer("ROUTER_NODE_MAX_JOB_TYPES", 4, minimum=1, maximum=64),
            max_name_chars=env.integer("ROUTER_MODEL_NAME_MAX_CHARS", 96, minimum=8, maximum=200),
            max_descriptor_bytes=env.integer(
                "ROUTER_NODE_MAX_DESCRIPTOR_BYTES", 16 * 1024, minimum=1024, maximum=1024 * 1024
            ),
            max_names=env.integer("ROUTER_MAX_MODEL_NAMES", 2_000, minimum=1, maximum=1_000_000),
            max_nodes=env.integer("ROUTER_MAX_NODES", 5_000, minimum=1, maximum=1_000_000),
            verified_reserve=env.number("ROUTER_REGISTRY_VERIFIED_RESERVE", 0.25, minimum=0, maximum=0.9),
            register_window_s=env.integer("ROUTER_REGISTER_WINDOW_S", 600, minimum=1, maximum=86_400),
            register_per_key=env.integer("ROUTER_REGISTER_PER_KEY", 10, minimum=1, maximum=100_000),
            register_per_address=env.integer("ROUTER_REGISTER_PER_ADDRESS", 20, minimum=1, maximum=1_000_000),
            announce_per_relay=env.integer("ROUTER_ANNOUNCE_NEW_PER_RELAY", 200, minimum=1, maximum=1_000_000),
        )


DAY_S = 86_400


@dataclass(frozen=True)
class Retention:
    """How long rows are kept before the housekeeping job deletes them (0: keep; never for nodes)."""

    interval_s: int = 300  # ROUTER_PRUNE_INTERVAL_S: how often the job runs
    batch: int = 1_000  # ROUTER_PRUNE_BATCH: rows per DELETE (each its own short transaction)
    max_batches: int = 100  # ROUTER_PRUNE_MAX_BATCHES: per table and run; the rest waits for the next run
    nodes_s: int = DAY_S  # ROUTER_NODE_RETENTION_S: since the last heartbeat or announcement
    quotes_s: int = 7 * DAY_S  # ROUTER_QUOTE_RETENTION_S: after the quote expired
    chains_s: int = 7 * DAY_S  # ROUTER_CHAIN_RETENTION_S
    attempts_s: int = 7 * DAY_S  # ROUTER_ATTEMPT_RETENTION_S: failed dispatch attempts
    manifests_s: int = 30 * DAY_S  # ROUTER_MANIFEST_RETENTION_S: manifests (and health) of nodes no longer known
    payments_s: int = DEFAULT_PAYMENT_RETENTION_S  # ROUTER_PAYMENT_RETENTION_S: after a payment request expired

    @classmethod
    def from_env(cls, env: Env) -> Retention:
        year = 366 * DAY_S
        return cls(
            interval_s=env.integer("ROUTER_PRUNE_INTERVAL_S", 300, minimum=1, maximum=DAY_S),
            batch=env.integer("ROUTER_PRUNE_BATCH", 1_000, minimum=1, maximum=100_000),
            max_batches=env.integer("ROUTER_PRUNE_MAX_BATCHES", 100, minimum=1, maximum=100_000),
            nodes_s=env.integer("ROUTER_NODE_RETENTION_S", DAY_S, minimum=60, maximum=year),
            quotes_s=env.integer("ROUTER_QUOTE_RETENTION_S", 7 * DAY_S, minimum=0, maximum=10 * year),
            chains_s=env.integer("ROUTER_CHAIN_RETENTION_S", 7 * DAY_S, minimum=0, maximum=10 * year),
            attempts_s=env.integer("ROUTER_ATTEMPT_RETENTION_S", 7 * DAY_S, minimum=0, maximum=10 * year),
            manifests_s=env.integer("ROUTER_MANIFEST_RETENTION_S", 30 * DAY_S, minimum=0, maximum=10 * year),
            payments_s=payment_retention_s(env, "ROUTER_PAYMENT_RETENTION_S"),
        )


@dataclass(frozen=True)
class RouterSettings:
    keys: Keys
    host: str = "127.0.0.1"
    port: int = 8080
    db_url: str | None = None
    db_url_variable: str = "ROUTER_DB_URL"  # the variable db_url came from, for errors that name it
    db_wait_s: float = 0.0  # ROUTER_DB_WAIT_S: how long a configured server that is not up yet is waited for
    data_dir: Path = Path(".fedai")
    relays: list[str] = field(default_factory=list)
    max_request_bytes: int = 256 * 1024
    rate_limit_max: int = 120
    rate_limit_window_ms: int = 60_000
    allow_private_endpoints: bool = False
    dns_concurrency: int = 8  # endpoint lookups at once (heartbeat checks and connecting), in threads of their own
    dns_timeout_ms: int = 2_000  # per lookup, waiting for a slot included
    client_allowlist: frozenset[str] = frozenset()
    client_blocklist: frozenset[str] = frozenset()
    clock_skew_s: int = 60
    node_timeout_ms: int = 60_000
    node_connect_timeout_ms: int = 2_000
    # streams read from nodes (docs/security.md#streams)
    stream_max_s: float = 600.0  # total duration of one stream
    stream_idle_s: float = 60.0  # waiting for the node's next delta (keep-alive comments do not count)
    stream_max_output_bytes: int = 1024 * 1024  # UTF-8 bytes of all deltas
    stream_max_chunks: int = 32_768  # lowered per request to 4 x max_tokens + 16
    max_attempts: int = 3
    drain_timeout_s: float = 30.0  # ROUTER_DRAIN_TIMEOUT_S: on SIGTERM, how long requests in flight may finish
    heartbeat_ttl_ms: int = 30_000
    announce_ttl_s: int = 900
    quote_ttl_s: int = 120
    # a node may meter at most this many input tokens: tokens_per_byte x prompt bytes + overhead (verify.py)
    input_tokens_per_byte: int = 1
    input_tokens_overhead: int = 1024
    fee_base_msat: int = 0
    fee_ppm: int = 0
    # payments (docs/payments.md#the-flow)
    require_payment: bool = False  # ROUTER_REQUIRE_PAYMENT: /infer is served paid only (402 otherwise)
    wallet: str | None = field(default=None, repr=False)  # ROUTER_WALLET: URI or file (may hold a secret)
    ln_network: str = "bitcoin"  # ROUTER_LN_NETWORK: the network invoices are checked against
    payment_ttl_s: int = 600  # ROUTER_PAYMENT_TTL_S: a payment request's life (never past its quote's)
    settlement: SettlementSettings = field(default_factory=SettlementSettings)  # reconciliation, refunds
    registry_refresh_ms: int = 1_000
    admin_sync_ms: int = 1_000  # ROUTER_ADMIN_SYNC_MS: how often a replica checks for operators' changes
    registry_limits: RegistryLimits = field(default_factory=RegistryLimits)  # bounded registry
    retention: Retention = field(default_factory=Retention)  # scheduled pruning
    db_pool_max: int = 10
    log_level: str = "INFO"
    weights: Weights = field(default_factory=Weights)
    sched_top_n: int = 1
    retry_budget_ratio: float = 0.2
    retry_budget_min_per_s: float = 5.0
    # the edge: who may call what, from where (docs/security.md#edge)
    public_url: str | None = None  # the base URL clients use; NIP-98 is refused without it (`u` tags name it)
    api_keys: dict[str, str] = field(default_factory=dict)  # sha256(key) hex -> client pubkey
    api_key_wallets: dict[str, WalletBinding] = field(default_factory=dict)  # ROUTER_API_KEY_WALLETS
    edge_refunds: bool | None = None  # ROUTER_EDGE_REFUNDS: refund links for bound wallets (unset: if public is https)
    nip98_window_s: int = 60  # NIP-98 created_at tolerance; the replay store keeps ids at least this long
    admin_token_sha256: frozenset[str] = frozenset()  # sha256 hex of operator tokens (Authorization: Bearer)
    admin_keys: frozenset[str] = frozenset()  # pubkeys whose NIP-98 signature opens the operator view
    metrics_public: bool = False  # serve /metrics without operator credentials
    trusted_proxies: tuple[IPNetwork, ...] = ()  # peers whose X-Forwarded-For is believed
    addr_rate_limit_max: int = 1200  # requests per source address (IPv6: per /64) and window, every route
    addr_rate_limit_window_ms: int = 60_000
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
    # federation bounds (docs/security.md#federation)
    fed_min_privacy: int = 1  # offloaded jobs leave at least at this level (PL1: sealed to the provider)
    fed_bid_hold_s: int = 30  # an open bid holds capacity at most this long, whatever the RFB's expiration
    fed_max_deadline_s: int = 600  # no bid on an RFB whose deadline is further away than this
    fed_max_open_bids_per_peer: int = 32  # open bids held for one requester
    fed_min_reputation: float = 0.0  # a peer below this smoothed success rate wins no award (0: off)
    peer_max: int = 1_000  # peers kept (memory and table); stale first, then strangers make room for trusted keys
    peer_max_price_sheets: int = 16  # price sheets (distinct `d` tags) kept per peer

    def max_privacy(self, job_type: str | None) -> int:
        """The highest privacy level a job of this type may be offloaded or accepted at."""
        return min(self.fed_max_privacy, self.fed_privacy_by_job.get(job_type or "text-generation", 3))

    def offload_privacy(self, requested: int) -> int:
        """The level a job leaves at: what the client asked, raised to `fed_min_privacy` (never lowered)."""
        return max(requested, self.fed_min_privacy)

    @property
    def stream_limits(self) -> StreamLimits:
        return StreamLimits(self.stream_max_s, self.stream_idle_s, self.stream_max_output_bytes, self.stream_max_chunks)

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
            db_url_variable="ROUTER_DB_URL" if env.optional("ROUTER_DB_URL") else "DATABASE_URL",
            db_wait_s=env.number("ROUTER_DB_WAIT_S", 0.0, minimum=0, maximum=3600),
            data_dir=Path(env.text("FEDAI_DATA_DIR", ".fedai")),
            relays=env.urls("ROUTER_RELAYS", ("ws", "wss")),
            max_request_bytes=env.integer("ROUTER_MAX_REQUEST_BYTES", 256 * 1024, minimum=1024),
            rate_limit_max=env.integer("ROUTER_RATE_LIMIT_MAX", 120, minimum=1),
            rate_limit_window_ms=env.integer("ROUTER_RATE_LIMIT_WINDOW_MS", 60_000, minimum=1),
            allow_private_endpoints=env.flag("ROUTER_ALLOW_PRIVATE_ENDPOINTS", False),
            dns_concurrency=env.integer("ROUTER_DNS_CONCURRENCY", 8, minimum=1, maximum=256),
            dns_timeout_ms=env.integer("ROUTER_DNS_TIMEOUT_MS", 2_000, minimum=10, maximum=60_000),
            client_allowlist=env.pubkeys("ROUTER_CLIENT_ALLOWLIST", required=False),
            client_blocklist=env.pubkeys("ROUTER_CLIENT_BLOCKLIST", required=False),
            clock_skew_s=env.integer("FEDAI_CLOCK_SKEW_S", 60, minimum=1),
            node_timeout_ms=env.integer("ROUTER_NODE_TIMEOUT_MS", 60_000, minimum=10),
            node_connect_timeout_ms=env.integer("ROUTER_NODE_CONNECT_TIMEOUT_MS", 2_000, minimum=10),
            stream_max_s=env.number("ROUTER_STREAM_MAX_S", 600.0, minimum=1, maximum=86_400),
            stream_idle_s=env.number("ROUTER_STREAM_IDLE_S", 60.0, minimum=1, maximum=3600),
            stream_max_output_bytes=env.integer(
                "ROUTER_STREAM_MAX_OUTPUT_BYTES", 1024 * 1024, minimum=1024, maximum=4 * 1024 * 1024
            ),
            stream_max_chunks=env.integer("ROUTER_STREAM_MAX_CHUNKS", 32_768, minimum=16, maximum=1_000_000),
            max_attempts=env.integer("ROUTER_MAX_ATTEMPTS", 3, minimum=1, maximum=10),
            drain_timeout_s=env.number("ROUTER_DRAIN_TIMEOUT_S", 30.0, minimum=0, maximum=86_400),
            heartbeat_ttl_ms=env.integer("ROUTER_HEARTBEAT_TTL_MS", 30_000, minimum=100),
            announce_ttl_s=env.integer("ROUTER_ANNOUNCE_TTL_S", 900, minimum=1),
            quote_ttl_s=env.integer("ROUTER_QUOTE_TTL_S", 120, minimum=1),
            input_tokens_per_byte=env.integer("ROUTER_INPUT_TOKENS_PER_BYTE", 1, minimum=1, maximum=16),
            input_tokens_overhead=env.integer("ROUTER_INPUT_TOKENS_OVERHEAD", 1024, minimum=0, maximum=1_000_000),
            fee_base_msat=env.integer("ROUTER_FEE_BASE_MSAT", 0, minimum=0, maximum=MAX_FEE_BASE_MSAT),
            fee_ppm=env.integer("ROUTER_FEE_PPM", 0, minimum=0, maximum=1_000_000),
            require_payment=env.flag("ROUTER_REQUIRE_PAYMENT", False),
            wallet=check_wallet_spec(spec, "ROUTER_WALLET") if (spec := env.optional("ROUTER_WALLET")) else None,
            ln_network=check_network(env.text("ROUTER_LN_NETWORK", "bitcoin"), "ROUTER_LN_NETWORK"),
            payment_ttl_s=env.integer("ROUTER_PAYMENT_TTL_S", 600, minimum=60, maximum=86_400),
            settlement=SettlementSettings.from_env(env),
            registry_refresh_ms=env.integer("ROUTER_REGISTRY_REFRESH_MS", 1_000, minimum=50),
            admin_sync_ms=env.integer("ROUTER_ADMIN_SYNC_MS", 1_000, minimum=50, maximum=60_000),
            registry_limits=RegistryLimits.from_env(env),
            retention=Retention.from_env(env),
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
            api_key_wallets=parse_wallet_bindings(env.optional("ROUTER_API_KEY_WALLETS") or ""),
            edge_refunds=env.flag("ROUTER_EDGE_REFUNDS") if env.optional("ROUTER_EDGE_REFUNDS") else None,
            nip98_window_s=env.integer("FEDAI_NIP98_WINDOW_S", 60, minimum=1, maximum=600),
            admin_token_sha256=parse_digests("ROUTER_ADMIN_TOKEN_SHA256", env.items("ROUTER_ADMIN_TOKEN_SHA256")),
            admin_keys=env.pubkeys("ROUTER_ADMIN_KEYS", required=False),
            metrics_public=env.flag("ROUTER_METRICS_PUBLIC", False),
            trusted_proxies=parse_networks("ROUTER_TRUSTED_PROXIES", env.items("ROUTER_TRUSTED_PROXIES")),
            addr_rate_limit_max=env.integer("ROUTER_ADDR_RATE_LIMIT_MAX", 1200, minimum=1),
            addr_rate_limit_window_ms=env.integer("ROUTER_ADDR_RATE_LIMIT_WINDOW_MS", 60_000, minimum=1),
            fed_max_privacy=env.integer("ROUTER_FED_MAX_PRIVACY", 2, minimum=0, maximum=2),
            fed_privacy_by_job=parse_privacy_by_job(env.optional("ROUTER_FED_PRIVACY_BY_JOB_TYPE") or ""),
            fed_max_cost_msat=env.integer("ROUTER_FED_MAX_COST_MSAT", 1_000_000, minimum=0),
            fed_spend_cap_msat=env.integer("ROUTER_FED_SPEND_CAP_MSAT", 10_000_000, minimum=0),
            fed_spend_window_s=env.integer("ROUTER_FED_SPEND_WINDOW_S", 3600, minimum=1),
            fed_max_attempts=env.integer("ROUTER_FED_MAX_ATTEMPTS", 2, minimum=1, maximum=5),
            fed_job_timeout_ms=env.integer("ROUTER_FED_JOB_TIMEOUT_MS", 120_000, minimum=100, maximum=86_400_000),
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
            # federation bounds
            fed_min_privacy=env.integer("ROUTER_FED_MIN_PRIVACY", 1, minimum=0, maximum=2),
            fed_bid_hold_s=env.integer("ROUTER_FED_BID_HOLD_S", 30, minimum=1, maximum=600),
            fed_max_deadline_s=env.integer("ROUTER_FED_MAX_DEADLINE_S", 600, minimum=1, maximum=86_400),
            fed_max_open_bids_per_peer=env.integer("ROUTER_FED_MAX_OPEN_BIDS_PER_PEER", 32, minimum=1, maximum=1024),
            fed_min_reputation=env.number("ROUTER_FED_MIN_REPUTATION", 0.0, minimum=0, maximum=1),
            peer_max=env.integer("ROUTER_PEER_MAX", 1_000, minimum=1, maximum=100_000),
            peer_max_price_sheets=env.integer("ROUTER_PEER_MAX_PRICE_SHEETS", 16, minimum=1, maximum=1024),
        )
        if settings.client_allowlist & settings.client_blocklist:
            raise ConfigError("ROUTER_CLIENT_ALLOWLIST and ROUTER_CLIENT_BLOCKLIST share keys")
        check_peer_settings(settings)
        check_retention(settings)
        check_payment_settings(settings)
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


def parse_digests(name: str, values: list[str]) -> frozenset[str]:
    """Comma list of sha256 hex digests (of tokens that are never stored)."""
    for value in values:
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ConfigError(f"{name}: each entry is the 64 lowercase hex sha256 of a token (`fedai admin-token new`)")
    return frozenset(values)


def parse_networks(name: str, values: list[str]) -> tuple[IPNetwork, ...]:
    """Comma list of addresses or CIDR blocks (`10.0.0.0/8`, `::1`)."""
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not an IP address or CIDR block") from None
    return tuple(networks)


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
    if settings.fed_min_privacy > settings.fed_max_privacy:
        raise ConfigError(
            "ROUTER_FED_MIN_PRIVACY is above ROUTER_FED_MAX_PRIVACY: nothing could be offloaded"
            " (set ROUTER_FED_MIN_PRIVACY=0 to let jobs leave in plaintext)"
        )


def check_payment_settings(settings: RouterSettings) -> None:
    """A paying router that charges a fee invoices it from its own wallet (fail closed: never serve for free)."""
    if settings.require_payment and (settings.fee_base_msat or settings.fee_ppm) and settings.wallet is None:
        raise ConfigError(
            "ROUTER_REQUIRE_PAYMENT=true with a fee (ROUTER_FEE_BASE_MSAT, ROUTER_FEE_PPM) needs ROUTER_WALLET"
        )


def check_retention(settings: RouterSettings) -> None:
    """A node must stay known at least as long as it can count as fresh."""
    fresh_s = max(settings.heartbeat_ttl_ms / 1000, settings.announce_ttl_s)
    if settings.retention.nodes_s < fresh_s:
        raise ConfigError(
            f"ROUTER_NODE_RETENTION_S ({settings.retention.nodes_s}) is shorter than a node stays fresh "
            f"(ROUTER_HEARTBEAT_TTL_MS / ROUTER_ANNOUNCE_TTL_S: {fresh_s:g} s)"
        )
