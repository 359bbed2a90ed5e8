"""The client's stream checks: each chunk signed by the router for this request and in sequence, and the
chunks together equal to the output the node signed."""

from __future__ import annotations

import pytest

from fedai.protocol.envelope import seal
from fedai.protocol.errors import FedaiError
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import StreamChunk
from fedai.sdk.chain import ChainError
from fedai.sdk.stream import StreamVerifier
from fedai.service.sse import SSEvent
from tests.unit.test_sdk_chain import CLIENT, MALLORY, ROUTER, build


def chunk(request_id: str, seq: int, delta: str, keys=ROUTER) -> SSEvent:  # type: ignore[no-untyped-def]
    event = seal(keys, Kind.STREAM_CHUNK, StreamChunk(seq=seq, delta=delta), to=CLIENT.pubkey, reply_to=request_id)
    return SSEvent("chunk", event.to_json())


def test_genuine_stream() -> None:
    request, answer = build(output="4 and 4")
    v = StreamVerifier(request, ROUTER.pubkey)
    deltas = [v.handle(chunk(request.id, i, d)) for i, d in enumerate(["4", " and", " 4"])]
    assert v.handle(SSEvent("done", answer.to_json())) is None
    assert deltas == ["4", " and", " 4"] and v.finished().output == "4 and 4"


@pytest.mark.parametrize(
    ("events", "step"),
    [
        (lambda rid: [chunk(rid, 0, "4", keys=MALLORY)], "stream chunk"),  # not the router's signature
        (lambda rid: [chunk("0" * 64, 0, "4")], "stream chunk"),  # another request's chunk
        (lambda rid: [chunk(rid, 1, "4")], "stream chunk"),  # out of sequence
        (lambda rid: [chunk(rid, 0, "5")], "stream"),  # chunks differ from the signed output
    ],
)
def test_bad_streams_are_refused(events, step: str) -> None:  # type: ignore[no-untyped-def]
    request, answer = build(output="4")
    v = StreamVerifier(request, ROUTER.pubkey)
    with pytest.raises(ChainError) as err:
        _feed(v, [*events(request.id), SSEvent("done", answer.to_json())])
    assert err.value.step == step


def _feed(v: StreamVerifier, events: list[SSEvent]) -> None:
    for event in events:
        v.handle(event)


def test_error_event_is_typed_and_a_missing_end_is_an_error() -> None:
    request, _ = build()
    v = StreamVerifier(request, ROUTER.pubkey)
    with pytest.raises(FedaiError) as err:
        v.handle(SSEvent("error", b'{"error":{"code":"upstream_timeout","message":"slow"}}'))
    assert err.value.code == "upstream_timeout"
    with pytest.raises(FedaiError) as err:
        v.finished()
    assert err.value.code == "upstream_error"
