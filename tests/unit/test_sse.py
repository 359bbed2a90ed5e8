"""SSE framing: what streams are made of. Line ends (LF, CRLF, CR) and boundaries split anywhere across feeds,
comments, ignored fields, and the event size bound."""

from __future__ import annotations

import pytest

from fedai.service.sse import SSEDecoder, SSEError, SSEvent, format_sse


def _split_everywhere(wire: bytes, expected: list[SSEvent]) -> None:
    for cut in range(len(wire) + 1):
        decoder = SSEDecoder()
        assert decoder.feed(wire[:cut]) + decoder.feed(wire[cut:]) == expected, cut


def test_round_trip_split_anywhere() -> None:
    wire = format_sse("chunk", b'{"seq":0,"delta":"he"}') + b": keep-alive\n\n" + format_sse("done", "{}")
    _split_everywhere(wire, [SSEvent("chunk", b'{"seq":0,"delta":"he"}'), SSEvent("done", b"{}")])


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_end_the_spec_allows_split_anywhere(eol: bytes) -> None:
    wire = eol.join([b"event: chunk", b"data: 1", b"", b": ping", b"", b"data: 2", b"", b""])
    _split_everywhere(wire, [SSEvent("chunk", b"1"), SSEvent("message", b"2")])


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\r") == []
    assert decoder.feed(b"") == []  # an empty read between the two halves changes nothing
    assert decoder.feed(b"\n") == []  # the LF closes the same line: not a blank line yet
    assert decoder.feed(b"\r\n") == [SSEvent("message", b"1")]


def test_crlf_and_default_event_name() -> None:
    assert SSEDecoder().feed(b"data: 1\r\n\r\n") == [SSEvent("message", b"1")]


def test_multiline_data_joined_other_fields_ignored_comment_only_blocks_dropped() -> None:
    wire = b": hello\n\nid: 7\nretry: 10\nevent: x\ndata: a\ndata\ndata:b\nbogus: 1\n\n"
    assert SSEDecoder().feed(wire) == [SSEvent("x", b"a\n\nb")]


def test_event_name_does_not_leak_into_the_next_event() -> None:
    assert SSEDecoder().feed(b"event: x\n\ndata: 1\n\n") == [SSEvent("message", b"1")]


def test_multiline_data_refused_on_write() -> None:
    with pytest.raises(ValueError, match="single line"):
        format_sse("chunk", b"a\nb")


def test_oversized_event_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    with pytest.raises(SSEError):
        decoder.feed(b"data: " + b"x" * 100)


def test_oversized_event_fed_a_byte_at_a_time_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=64)

    def feed_bytewise() -> None:
        for byte in b"data: " + b"x" * 100:
            decoder.feed(bytes([byte]))

    with pytest.raises(SSEError):
        feed_bytewise()


def test_many_complete_lines_count_towards_the_bound() -> None:
    with pytest.raises(SSEError):
        SSEDecoder(max_event_bytes=64).feed(b"data: 1234567890\n" * 10)
    with pytest.raises(SSEError):  # comments too: a block of keep-alives without a blank line is bounded
        SSEDecoder(max_event_bytes=64).feed(b": ping\n" * 20)


def test_the_bound_is_per_event() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    events = decoder.feed(format_sse("chunk", b"x" * 40) * 50)
    assert len(events) == 50
