"""Server-Sent Events: the framing of every streamed answer (`event:` name, one `data:` line of JSON)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_EVENT_BYTES = 1024 * 1024


def format_sse(event: str, data: bytes | str) -> bytes:
    """One SSE event. `data` must be a single line (compact JSON is)."""
    payload = data.encode() if isinstance(data, str) else data
    if b"\n" in payload or b"\r" in payload:
        raise ValueError("SSE data must be a single line")
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


@dataclass(frozen=True, slots=True)
class SSEvent:
    event: str
    data: bytes


class SSEError(ValueError):
    """The stream is not well-formed SSE, or an event exceeds the size bound."""


class SSEDecoder:
    """Incremental parser: feed bytes as they arrive, get complete events. Bounded: an event larger than
    `max_event_bytes` raises instead of growing the buffer without limit."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[SSEvent]:
        self._buffer += data
        events: list[SSEvent] = []
        while True:
            end, sep = self._boundary()
            if end < 0:
                if len(self._buffer) > self._max:
                    raise SSEError(f"SSE event exceeds {self._max} bytes")
                return events
            block, self._buffer = self._buffer[:end], self._buffer[end + sep :]
            parsed = _parse_block(block)
            if parsed is not None:
                events.append(parsed)

    def _boundary(self) -> tuple[int, int]:
        candidates = [(self._buffer.find(sep), len(sep)) for sep in (b"\n\n", b"\r\n\r\n")]
        found = [c for c in candidates if c[0] >= 0]
        return min(found) if found else (-1, 0)


def _parse_block(block: bytes) -> SSEvent | None:
    event = "message"
    data: list[bytes] = []
    for raw in block.splitlines():
        if not raw or raw.startswith(b":"):
            continue  # blank or comment (keep-alive)
        name, _, value = raw.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"data":
            data.append(value)
    if not data:
        return None
    return SSEvent(event, b"\n".join(data))
