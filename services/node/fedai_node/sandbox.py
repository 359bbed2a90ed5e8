"""Sandbox policy: which runners and runner endpoints an operator allows this node to use.

`NODE_SANDBOX_MODE` is `off` (default) or `restricted`. The allowlists apply whenever they are set;
`restricted` additionally requires `NODE_SANDBOX_ALLOWED_RUNNERS` so the policy can't be empty by accident.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedai.service.config import ConfigError

MODES = ("off", "restricted")
_ALIASES = {"off": "off", "disabled": "off", "restricted": "restricted", "on": "restricted"}


def parse_mode(value: str) -> str:
    mode = _ALIASES.get(value.strip().lower())
    if mode is None:
        raise ConfigError(f"NODE_SANDBOX_MODE must be one of {', '.join(MODES)}, got {value!r}")
    return mode


def url_has_prefix(url: str, prefix: str) -> bool:
    """True if `url` is `prefix` or lies under it. `http://a:1` does not cover `http://a:1.evil.example`."""
    if url == prefix or url.rstrip("/") == prefix.rstrip("/"):
        return True
    return url.startswith(prefix if prefix.endswith("/") else prefix + "/")


def check_sandbox(
    mode: str,
    runner: str,
    runner_url: str | None,
    allowed_runners: Sequence[str],
    allowed_endpoints: Sequence[str],
) -> None:
    """Refuse a runner or runner URL outside the operator's allowlists. Raises `ConfigError`."""
    if mode == "restricted" and not allowed_runners:
        raise ConfigError("NODE_SANDBOX_ALLOWED_RUNNERS is required when NODE_SANDBOX_MODE=restricted")
    if allowed_runners and runner not in allowed_runners:
        raise ConfigError(
            f"NODE_RUNNER={runner!r} is not in NODE_SANDBOX_ALLOWED_RUNNERS ({', '.join(allowed_runners)})"
        )
    if (
        allowed_endpoints
        and runner_url is not None
        and not any(url_has_prefix(runner_url, p) for p in allowed_endpoints)
    ):
        raise ConfigError("NODE_RUNNER_URL does not start with any prefix in NODE_SANDBOX_ALLOWED_ENDPOINTS")
