"""Property tests of SSE decoding (hypothesis): any bytes, cut anywhere, give events or `SSEError` and nothing
else; the cuts never change the outcome; encoded events decode back whatever the line ends; and the work is
linear: each input byte is scanned for a line end at most once, however the input is cut."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedai.service import sse
from fedai.service.sse import SSEDecoder, SSEError, SSEvent

# bytes rich in the characters that matter to the parser
_ALPHABET = st.sampled_from([b"\n", b"\r", b"\r\n", b":", b" ", b"data", b"event", b"id", b"x", b"\x00", b"\xff"])
wire = st.one_of(st.binary(max_size=600), st.lists(_ALPHABET, max_size=200).map(b"".join))
cuts = st.lists(st.integers(min_value=0, max_value=600), max_size=12)


def pieces(data: bytes, at: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({min(c, len(data)) for c in at}):
        yield data[start:cut]
        start = cut
    yield data[start:]


def decode(data: bytes, at: list[int], max_event_bytes: int) -> list[SSEvent] | str:
    """The events, or "SSEError" (any other exception fails the test)."""
    decoder, events = SSEDecoder(max_event_bytes), []
    try:
        for piece in pieces(data, at):
            events.extend(decoder.feed(piece))
    except SSEError:
        return "SSEError"
    return events


@given(wire, cuts, st.integers(min_value=1, max_value=300))
@settings(max_examples=400)
def test_any_input_cut_anywhere_gives_events_or_the_typed_error(data: bytes, at: list[int], bound: int) -> None:
    outcome = decode(data, at, bound)
    assert outcome == "SSEError" or all(isinstance(e, SSEvent) for e in outcome)


@given(wire, cuts, st.integers(min_value=1, max_value=300))
@settings(max_examples=400)
def test_cuts_never_change_the_outcome(data: bytes, at: list[int], bound: int) -> None:
    assert decode(data, at, bound) == decode(data, [], bound)


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12)
payloads = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))
comments = st.binary(max_size=20).map(lambda b: b":" + b.replace(b"\n", b"").replace(b"\r", b""))


line_ends = st.sampled_from(["\n", "\r\n", "\r"])


@given(st.lists(st.tuples(names, payloads, st.lists(comments, max_size=2))), line_ends, cuts)
@settings(max_examples=300)
def test_encoded_events_decode_back_whatever_the_line_ends(
    events: list[tuple[str, bytes, list[bytes]]], eol: str, at: list[int]
) -> None:
    end = eol.encode()
    data = b"".join(
        b"".join(c + end for c in notes) + b"event: " + name.encode() + end + b"data: " + payload + end + end
        for name, payload, notes in events
    )
    assert decode(data, at, 1024) == [SSEvent(name, payload) for name, payload, _ in events]


class CountingScanner:
    """Stands in for the decoder's line-end pattern and counts the bytes it is asked to scan."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def finditer(self, data: bytes, pos: int = 0) -> Iterator[re.Match[bytes]]:
        self.scanned += len(data) - pos
        return self.pattern.finditer(data, pos)


@given(wire, st.lists(st.integers(min_value=0, max_value=600), max_size=60))
@settings(max_examples=300)
def test_each_byte_is_scanned_at_most_once(data: bytes, at: list[int]) -> None:
    scanner = CountingScanner(sse._EOL)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sse, "_EOL", scanner)
        decode(data, at, 10_000)
    assert scanner.scanned <= len(data)


def test_a_large_event_fed_one_byte_at_a_time_is_scanned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The case that took 4.9 s of CPU when every feed rescanned the buffer: 64 KiB, one byte per feed."""
    scanner = CountingScanner(sse._EOL)
    monkeypatch.setattr(sse, "_EOL", scanner)
    data = b"data: " + b"x" * 65_536 + b"\n\n"
    decoder, events = SSEDecoder(), []
    for i in range(len(data)):
        events.extend(decoder.feed(data[i : i + 1]))
    assert events == [SSEvent("message", b"x" * 65_536)]
    assert scanner.scanned == len(data)
