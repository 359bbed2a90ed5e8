"""Node configuration from environment variables (docs/decisions.md#configuration).

Every missing or invalid value raises `ConfigError` naming the variable, at start, before any socket opens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fedai.payments.config import check_network, check_wallet_spec
from fedai.payments.retention import DEFAULT_PAYMENT_RETENTION_S, payment_retention_s
from fedai.protocol.keys import Keys
from fedai.protocol.messages import INT4_MAX, MAX_RATE_MSAT
from fedai.service.config import ConfigError, Env
from fedai.service.stream_limits import StreamLimits
from fedai_node.refund_settings import RefundSettings
from fedai_node.runners import RUNNER_NAMES, URL_RUNNERS, RunnerSpec
from fedai_node.runners.mock import MOCK_MODEL_ID
from fedai_node.sandbox import check_sandbox, parse_mode

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEFAULT_PAYMENT_STALE_S = 300
# beyond NODE_RUNNER_TIMEOUT_MS, how long a request may still hold its claim: a paid stream's last write (bounded
# at 10 s) and the database statements around the run; a claim held longer belongs to a process that died
STALE_MARGIN_S = 60
MAX_PAYMENT_STALE_S = 86_400


@dataclass(frozen=True, slots=True)
class NodeSettings:
    keys: Keys = field(repr=False)
    router_pubkeys: frozenset[str]
    runner: str
    host: str = "127.0.0.1"
    port: int = 8090
    endpoint: str = "http://127.0.0.1:8090"
    router_endpoints: tuple[str, ...] = ()
    runner_url: str | None = None
    runner_api_key: str | None = field(default=None, repr=False)  # sent to the runner as a Bearer token
    model_id: str | None = MOCK_MODEL_ID  # None: advertise the models the runner lists
    model_aliases: tuple[str, ...] = ()  # other names routers may use for the node's (first) model
    context_window: int = 4096  # the mock's window; real runners' fallback when the server reports none
    price_input_msat: int = 1000  # msat per 1k input tokens
    price_output_msat: int = 2000  # msat per 1k output tokens
    job_types: tuple[str, ...] = ("text-generation",)
    region: str = ""
    heartbeat_ms: int = 5000
    capacity_max: int = 4
    max_prompt_bytes: int = 65536
    max_tokens: int = 1024
    runner_timeout_ms: int = 60_000  # also the total duration of one stream
    drain_timeout_s: float = 30.0  # NODE_DRAIN_TIMEOUT_S: on SIGTERM, how long streams and requests may finish
    stream_idle_s: float = 60.0  # waiting for the runner's next delta (keep-alives and empty events do not count)
    stream_max_output_bytes: int = 1024 * 1024  # UTF-8 bytes of all deltas of one stream
    stream_max_chunks: int = 32_768  # lowered per request to 4 x max_tokens + 16
    max_request_bytes: int = 262_144
    sandbox_mode: str = "off"
    sandbox_allowed_runners: tuple[str, ...] = ()
    sandbox_allowed_endpoints: tuple[str, ...] = ()
    require_payment: bool = False
    wallet: str | None = field(default=None, repr=False)  # NODE_WALLET: a URI or file (may hold a secret)
    ln_network: str = "bitcoin"  # NODE_LN_NETWORK: the network of the wallet's invoices
    refunds: RefundSettings = field(default_factory=RefundSettings)  # NODE_REFUND_*: usage-based settlement
    payment_retention_s: int = DEFAULT_PAYMENT_RETENTION_S  # NODE_PAYMENT_RETENTION_S: after a request expired
    payment_stale_s: int = DEFAULT_PAYMENT_STALE_S  # NODE_PAYMENT_STALE_S: a claim held longer is a dead process's
    relays: tuple[str, ...] = ()
    announce_s: int = 300
    db_url: str | None = None
    db_wait_s: float = 0.0  # NODE_DB_WAIT_S: how long NODE_DB_URL's server is waited for at start
    clock_skew_s: int = 60
    admin_keys: frozenset[str] = frozenset()  # NODE_ADMIN_KEYS: who may call /admin/api (off when empty)
    nip98_window_s: int = 60  # FEDAI_NIP98_WINDOW_S: an admin call's created_at tolerance
    mock_delay_ms: int = 0
    mock_token_ms: int = 0
    log_level: str = "INFO"

    @property
    def stream_limits(self) -> StreamLimits:
        """One stream's bounds: the total is NODE_RUNNER_TIMEOUT_MS, as for `/infer`."""
        return StreamLimits(
            self.runner_timeout_ms / 1000, self.stream_idle_s, self.stream_max_output_bytes, self.stream_max_chunks
        )

    @property
    def runner_spec(self) -> RunnerSpec:
        """What `make_runner` builds: NODE_RUNNER and the settings of its model server."""
        return RunnerSpec(
            name=self.runner,
            url=self.runner_url,
            timeout_s=self.runner_timeout_ms / 1000,
            model_id=self.model_id,
            context_window=self.context_window,
            api_key=self.runner_api_key,
            mock_delay_ms=self.mock_delay_ms,
            mock_token_ms=self.mock_token_ms,
        )


def _runner(env: Env) -> str:
    name = env.text("NODE_RUNNER").lower()
    if name not in RUNNER_NAMES:
        raise ConfigError(f"NODE_RUNNER={name!r} is unknown; available runners: {', '.join(RUNNER_NAMES)}")
    return name


def _log_level(env: Env) -> str:
    level = env.text("NODE_LOG_LEVEL", "INFO").upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"NODE_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {level!r}")
    return level


def _payment(env: Env) -> tuple[bool, str | None]:
    """NODE_REQUIRE_PAYMENT and NODE_WALLET: a paying node needs its own wallet, and a database for its claims."""
    required = env.flag("NODE_REQUIRE_PAYMENT", False)
    spec = env.optional("NODE_WALLET")
    wallet = check_wallet_spec(spec, "NODE_WALLET") if spec else None
    if required and wallet is None:
        # Fail closed: an operator who asks for payment must not silently serve for free.
        raise ConfigError("NODE_REQUIRE_PAYMENT=true needs NODE_WALLET (the node's own wallet invoices its work)")
    if wallet is not None and not env.optional("NODE_DB_URL"):
        raise ConfigError("NODE_WALLET needs NODE_DB_URL: the node keeps its single-use payment claims there")
    return required, wallet


def min_payment_stale_s(runner_timeout_ms: int) -> int:
    """The shortest NODE_PAYMENT_STALE_S: no request still running holds its claim that long."""
    return -(-runner_timeout_ms // 1000) + STALE_MARGIN_S


def payment_stale_s(env: Env, runner_timeout_ms: int) -> int:
    """NODE_PAYMENT_STALE_S: unset, 300 s or the minimum if that is more; set below the minimum, refused."""
    least = min_payment_stale_s(runner_timeout_ms)
    seconds = env.integer(
        "NODE_PAYMENT_STALE_S",
        max(DEFAULT_PAYMENT_STALE_S, least),
        minimum=1,
        maximum=max(MAX_PAYMENT_STALE_S, least),
    )
    if seconds < least:
        raise ConfigError(
            f"NODE_PAYMENT_STALE_S must be at least {least} s (NODE_RUNNER_TIMEOUT_MS plus {STALE_MARGIN_S} s), "
            f"so a claim is never released while its request runs; got {seconds}"
        )
    return seconds


def _admin_keys(env: Env) -> frozenset[str]:
    """NODE_ADMIN_KEYS: the admin API is on with them; it keeps its audit log and replay claims in NODE_DB_URL."""
    keys = env.pubkeys("NODE_ADMIN_KEYS", required=False)
    if keys and not env.optional("NODE_DB_URL"):
        raise ConfigError("NODE_ADMIN_KEYS needs NODE_DB_URL: the admin API keeps its changes and audit log there")
    return keys


def from_env(env: Env | None = None) -> NodeSettings:
    """Read and validate every NODE_* variable (and FEDAI_CLOCK_SKEW_S)."""
    env = env or Env()
    keys = env.keys("NODE_PRIVATE_KEY")
    router_pubkeys = env.pubkeys("ROUTER_PUBLIC_KEY")
    runner = _runner(env)
    host = env.text("NODE_HOST", "127.0.0.1")
    port = env.integer("NODE_PORT", 8090, minimum=1, maximum=65535)
    runner_url = env.url("NODE_RUNNER_URL") if env.optional("NODE_RUNNER_URL") else None
    if runner in URL_RUNNERS and runner_url is None:
        raise ConfigError(f"NODE_RUNNER_URL is required for NODE_RUNNER={runner}")
    sandbox_mode = parse_mode(env.text("NODE_SANDBOX_MODE", "off"))
    allowed_runners = tuple(name.lower() for name in env.items("NODE_SANDBOX_ALLOWED_RUNNERS"))
    allowed_endpoints = tuple(env.urls("NODE_SANDBOX_ALLOWED_ENDPOINTS"))
    check_sandbox(sandbox_mode, runner, runner_url, allowed_runners, allowed_endpoints)
    require_payment, wallet = _payment(env)
    runner_timeout_ms = env.integer("NODE_RUNNER_TIMEOUT_MS", 60_000, minimum=1)
    job_types = tuple(env.items("NODE_JOB_TYPES")) or ("text-generation",)
    return NodeSettings(
        keys=keys,
        router_pubkeys=router_pubkeys,
        runner=runner,
        host=host,
        port=port,
        endpoint=env.url("NODE_ENDPOINT", f"http://{host}:{port}"),
        router_endpoints=tuple(url.rstrip("/") for url in env.urls("ROUTER_ENDPOINT")),
        runner_url=runner_url,
        runner_api_key=env.optional("NODE_RUNNER_API_KEY"),
        model_id=env.optional("NODE_MODEL_ID") or (MOCK_MODEL_ID if runner == "mock" else None),
        model_aliases=tuple(env.items("NODE_MODEL_ALIASES")),
        context_window=env.integer("NODE_CONTEXT_WINDOW", 4096, minimum=1, maximum=INT4_MAX),
        price_input_msat=env.integer("NODE_PRICE_INPUT_MSAT", 1000, minimum=0, maximum=MAX_RATE_MSAT),
        price_output_msat=env.integer("NODE_PRICE_OUTPUT_MSAT", 2000, minimum=0, maximum=MAX_RATE_MSAT),
        job_types=job_types,
        region=env.optional("NODE_REGION") or "",
        heartbeat_ms=env.integer("NODE_HEARTBEAT_MS", 5000, minimum=100),
        capacity_max=env.integer("NODE_CAPACITY_MAX", 4, minimum=1, maximum=INT4_MAX),
        max_prompt_bytes=env.integer("NODE_MAX_PROMPT_BYTES", 65536, minimum=1),
        max_tokens=env.integer("NODE_MAX_TOKENS", 1024, minimum=1, maximum=INT4_MAX),
        runner_timeout_ms=runner_timeout_ms,
        drain_timeout_s=env.number("NODE_DRAIN_TIMEOUT_S", 30.0, minimum=0, maximum=86_400),
        stream_idle_s=env.number("NODE_STREAM_IDLE_S", 60.0, minimum=1, maximum=3600),
        stream_max_output_bytes=env.integer(
            "NODE_STREAM_MAX_OUTPUT_BYTES", 1024 * 1024, minimum=1024, maximum=4 * 1024 * 1024
        ),
        stream_max_chunks=env.integer("NODE_STREAM_MAX_CHUNKS", 32_768, minimum=16, maximum=1_000_000),
        max_request_bytes=env.integer("NODE_MAX_REQUEST_BYTES", 262_144, minimum=1024),
        sandbox_mode=sandbox_mode,
        sandbox_allowed_runners=allowed_runners,
        sandbox_allowed_endpoints=allowed_endpoints,
        require_payment=require_payment,
        wallet=wallet,
        ln_network=check_network(env.text("NODE_LN_NETWORK", "bitcoin"), "NODE_LN_NETWORK"),
        refunds=RefundSettings.from_env(env),
        payment_retention_s=payment_retention_s(env, "NODE_PAYMENT_RETENTION_S"),
        payment_stale_s=payment_stale_s(env, runner_timeout_ms),
        relays=tuple(env.urls("NODE_RELAYS", ("ws", "wss"))),
        announce_s=env.integer("NODE_ANNOUNCE_S", 300, minimum=1),
        db_url=env.optional("NODE_DB_URL"),
        db_wait_s=env.number("NODE_DB_WAIT_S", 0.0, minimum=0, maximum=3600),
        clock_skew_s=env.integer("FEDAI_CLOCK_SKEW_S", 60, minimum=1),
        admin_keys=_admin_keys(env),
        nip98_window_s=env.integer("FEDAI_NIP98_WINDOW_S", 60, minimum=1, maximum=600),
        mock_delay_ms=env.integer("NODE_MOCK_DELAY_MS", 0, minimum=0),
        mock_token_ms=env.integer("NODE_MOCK_TOKEN_MS", 0, minimum=0),
        log_level=_log_level(env),
    )


def log_summary(settings: NodeSettings, log: logging.Logger) -> None:
    """One start-up line with the non-secret settings an operator wants to see."""
    log.info(
        "node configured",
        extra={
            "pubkey": settings.keys.pubkey,
            "endpoint": settings.endpoint,
            "runner": settings.runner,
            "model": settings.model_id or "(discovered)",
            "routers": len(settings.router_pubkeys),
            "router_endpoints": len(settings.router_endpoints),
            "relays": len(settings.relays),
            "admin_api": bool(settings.admin_keys),
            "replay_store": "postgres" if settings.db_url else "memory",
        },
    )
