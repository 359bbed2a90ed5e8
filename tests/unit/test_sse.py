"""SSE framing: what streams are made of."""

from __future__ import annotations

import pytest

from fedai.service.sse import SSEDecoder, SSEError, SSEvent, format_sse


def test_round_trip_split_anywhere() -> None:
    wire = format_sse("chunk", b'{"seq":0,"delta":"he"}') + b": keep-alive\n\n" + format_sse("done", "{}")
    for cut in range(len(wire)):
        decoder = SSEDecoder()
        events = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
        assert events == [SSEvent("chunk", b'{"seq":0,"delta":"he"}'), SSEvent("done", b"{}")]


def test_crlf_and_default_event_name() -> None:
    assert SSEDecoder().feed(b"data: 1\r\n\r\n") == [SSEvent("message", b"1")]


def test_multiline_data_refused_on_write() -> None:
    with pytest.raises(ValueError, match="single line"):
        format_sse("chunk", b"a\nb")


def test_oversized_event_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    with pytest.raises(SSEError):
        decoder.feed(b"data: " + b"x" * 100)
