"""Bounds on one streamed answer, shared by the router (reading a node), the node (reading its runner) and the
SDK (reading a router): total duration, idle time, output bytes, chunk count and bytes on the wire.

Idle time is the time spent *waiting for the sender* since its last delta: keep-alive comments, empty or unknown
events do not count as activity, and time the reader spends elsewhere (writing to a slow client, the caller's
own code between deltas) is not charged to the sender. The total is wall time from the start of the stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from fedai.protocol.errors import ErrorCode, FedaiError

CHUNKS_PER_TOKEN = 4  # honest runners send at most one delta per generated token; this leaves room for splits
CHUNK_SLACK = 16
WIRE_BYTES_PER_OUTPUT_BYTE = 8  # a delta byte is JSON-escaped twice on the wire (at most 7 bytes for 1)
WIRE_BYTES_PER_CHUNK = 1024  # a signed chunk event's own size without its delta (~600 bytes)
WIRE_SLACK = 256 * 1024  # the final event's signatures, metering and headers


class StreamCapExceeded(FedaiError):
    """A stream tripped one of its bounds. `cap` names it: duration, idle, output_bytes, chunks, wire_bytes."""

    def __init__(self, cap: str, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.cap = cap


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The bounds of one stream. `max_chunks` is a ceiling: `for_request` lowers it for small `max_tokens`."""

    max_s: float = 600.0
    idle_s: float = 60.0
    max_output_bytes: int = 1024 * 1024
    max_chunks: int = 32_768

    def __post_init__(self) -> None:
        if not (self.max_s > 0 and self.idle_s > 0 and self.max_output_bytes > 0 and self.max_chunks > 0):
            raise ValueError("stream limits must be positive")

    def for_request(self, max_tokens: int) -> StreamLimits:
        """The limits for a request asking for `max_tokens`: no more chunks than its tokens could make."""
        return replace(self, max_chunks=min(self.max_chunks, CHUNKS_PER_TOKEN * max(max_tokens, 0) + CHUNK_SLACK))

    @property
    def max_wire_bytes(self) -> int:
        """What the whole stream may weigh on the wire (events with their signatures, the final event)."""
        return WIRE_BYTES_PER_OUTPUT_BYTE * self.max_output_bytes + WIRE_BYTES_PER_CHUNK * self.max_chunks + WIRE_SLACK


class StreamBudget:
    """One stream's use of its limits. The reader asks `window()` before each read (how long it may wait),
    reports the time it waited with `waited`, the bytes it read with `received`, and each delta with
    `delta`; each raises `StreamCapExceeded` once a bound is crossed."""

    def __init__(
        self,
        limits: StreamLimits,
        *,
        what: str = "stream",
        started: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.what = what
        self.clock = clock
        self.started = clock() if started is None else started
        self.deadline = self.started + limits.max_s
        self.idle = 0.0  # seconds waited since the last delta
        self.chunks = 0
        self.output_bytes = 0
        self.wire_bytes = 0
        self.tripped: str | None = None  # the first bound that tripped

    def _trip(self, cap: str, code: ErrorCode, message: str) -> StreamCapExceeded:
        self.tripped = self.tripped or cap
        return StreamCapExceeded(cap, code, message)

    def window(self) -> float:
        """Seconds the next read may wait for the sender; raises if no time is left."""
        left = min(self.deadline - self.clock(), self.limits.idle_s - self.idle)
        if left <= 0:
            raise self.timed_out()
        return left

    def waited(self, seconds: float) -> None:
        self.idle += max(seconds, 0.0)

    def timed_out(self) -> StreamCapExceeded:
        """The time bound that ran out (the total if both did)."""
        if self.clock() >= self.deadline:
            message = f"{self.what} exceeded its time limit of {self.limits.max_s:g} s"
            return self._trip("duration", ErrorCode.UPSTREAM_TIMEOUT, message)
        return self._trip(
            "idle", ErrorCode.UPSTREAM_TIMEOUT, f"{self.what} sent no output for {self.limits.idle_s:g} s"
        )

    def check_time(self) -> None:
        """For readers that cannot bound a read's wait: raise if a time bound has passed."""
        self.window()

    def received(self, nbytes: int) -> None:
        self.wire_bytes += nbytes
        if self.wire_bytes > self.limits.max_wire_bytes:
            raise self._trip(
                "wire_bytes", ErrorCode.UPSTREAM_ERROR, f"{self.what} exceeded {self.limits.max_wire_bytes} bytes"
            )

    def delta(self, text: str) -> None:
        """One delta of output: counted against the chunk and byte bounds; it resets the idle time."""
        self.chunks += 1
        self.output_bytes += len(text.encode())
        if self.chunks > self.limits.max_chunks:
            raise self._trip(
                "chunks", ErrorCode.UPSTREAM_ERROR, f"{self.what} exceeded {self.limits.max_chunks} chunks"
            )
        if self.output_bytes > self.limits.max_output_bytes:
            message = f"{self.what} exceeded {self.limits.max_output_bytes} bytes of output"
            raise self._trip("output_bytes", ErrorCode.UPSTREAM_ERROR, message)
        self.idle = 0.0

    def grace(self, seconds: float) -> None:
        """After a bound tripped or the caller left: room to read the sender's last events (its final event with
        the metering of what it produced) for at most `seconds`, with every count bound doubled."""
        limits = self.limits
        self.limits = replace(limits, max_output_bytes=limits.max_output_bytes * 2, max_chunks=limits.max_chunks * 2)
        self.deadline = self.clock() + seconds
        self.idle = 0.0
