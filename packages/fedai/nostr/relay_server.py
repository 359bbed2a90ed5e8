"""Run the embedded relay as a process until SIGINT or SIGTERM (what `fedai relay` launches)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence

from fedai.nostr.local_relay import DEFAULT_MAX_REQS, DEFAULT_NOTES_PER_MINUTE, start_local_relay

DEFAULT_PORT = 7777


async def serve(
    host: str,
    port: int | None,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[str], None] | None = None,
    max_reqs: int = DEFAULT_MAX_REQS,
    notes_per_minute: int = DEFAULT_NOTES_PER_MINUTE,
) -> None:
    """Serve the embedded relay on `host:port` (a free port for 0 or None) until `stop` is set."""
    handle = await start_local_relay(host, port or None, max_reqs=max_reqs, notes_per_minute=notes_per_minute)
    try:
        if on_ready is not None:
            on_ready(handle.url)
        await stop.wait()
    finally:
        handle.shutdown()


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal was closed
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover - event loops without signal support (Windows)
            signal.signal(sig, lambda _signum, _frame: loop.call_soon_threadsafe(stop.set))


def _announce(url: str) -> None:
    print(f"relay listening on {url}", flush=True)


async def _run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    await serve(
        args.host,
        args.port,
        stop,
        on_ready=_announce,
        max_reqs=args.max_reqs,
        notes_per_minute=args.notes_per_minute,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fedai.nostr", description="Run the embedded Nostr relay.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port, 0 for any free one (default: {DEFAULT_PORT})"
    )
    parser.add_argument("--max-reqs", type=int, default=DEFAULT_MAX_REQS, help="subscriptions per connection")
    parser.add_argument(
        "--notes-per-minute", type=int, default=DEFAULT_NOTES_PER_MINUTE, help="events accepted per minute"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 after a clean shutdown on a signal, 1 if the relay could not start."""
    args = parse_args(argv)
    try:
        asyncio.run(_run(args))
    except Exception as exc:  # noqa: BLE001 - report a failed start (e.g. port in use) as one line, not a traceback
        print(f"relay failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
