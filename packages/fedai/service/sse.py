"""Server-Sent Events: the framing of every streamed answer (`event:` name, one `data:` line of JSON).

The decoder follows the WHATWG SSE parsing rules: lines end with CRLF, LF or CR; a blank line ends an event;
lines starting with `:` are comments (keep-alives); `event` names the event, `data` lines are joined with LF;
other fields (`id`, `retry`, unknown names) are ignored. It is incremental and linear: each fed byte is scanned
for a line end once, and a line split across feeds is copied at most twice, however the input is cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_EVENT_BYTES = 1024 * 1024

_EOL = re.compile(rb"\r\n|\r|\n")  # the only place bytes are scanned (tests count its work)


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
    """Incremental parser: feed bytes as they arrive, get complete events. Bounded: an event (its lines, comments
    included, up to the blank line that ends it) larger than `max_event_bytes` raises `SSEError` instead of
    growing without limit."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._partial = bytearray()  # the current line's bytes from earlier feeds (no line end seen yet)
        self._skip_lf = False  # the last feed ended with CR: a LF opening the next one belongs to it
        self._size = 0  # bytes of the current event's complete lines
        self._name = ""
        self._data: list[bytes] = []

    def feed(self, data: bytes) -> list[SSEvent]:
        if not data:
            return []
        events: list[SSEvent] = []
        start = 0
        if self._skip_lf and data[:1] == b"\n":
            start = 1
        self._skip_lf = False
        for match in _EOL.finditer(data, start):
            piece = data[start : match.start()]
            if self._partial:
                self._partial += piece
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = piece
            start = match.end()
            self._line(line, events)
        if start < len(data):
            self._partial += data[start:]
            if self._size + len(self._partial) > self._max:
                raise SSEError(f"SSE event exceeds {self._max} bytes")
        elif data and data[-1] == 0x0D:
            self._skip_lf = True
        return events

    def _line(self, line: bytes, events: list[SSEvent]) -> None:
        if not line:  # blank line: dispatch
            if self._data:
                events.append(SSEvent(self._name or "message", b"\n".join(self._data)))
            self._size, self._name, self._data = 0, "", []
            return
        self._size += len(line) + 1
        if self._size > self._max:
            raise SSEError(f"SSE event exceeds {self._max} bytes")
        if line[0] == 0x3A:  # ":" comment (keep-alive)
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"event":
            self._name = value.decode("utf-8", "replace")
        elif name == b"data":
            self._data.append(value)
