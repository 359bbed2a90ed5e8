"""One node's `/infer/stream`, read under its bounds: opened (errors until the first event allow failover), its
events decoded and each chunk verified, and its end (released for keep-alive, or dropped)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from fedai.protocol.errors import FedaiError
from fedai.protocol.event import decode_event
from fedai.protocol.jsonguard import decode_json
from fedai.protocol.messages import StreamChunk
from fedai.service.sse import SSEDecoder, SSEError, SSEvent
from fedai.service.stream_limits import StreamBudget
from fedai_router.completion import Metered
from fedai_router.dispatch import MAX_NODE_REPLY_BYTES
from fedai_router.node_state import NodeState
from fedai_router.outbound import Outbound
from fedai_router.verify import Binding, NodeFault, Verified, verify_chunk, verify_reply

MAX_CHUNK_EVENT_BYTES = 256 * 1024


@dataclass
class NodeStream:
    """An open `/infer/stream` call to a node whose first event has arrived."""

    resp: aiohttp.ClientResponse
    decoder: SSEDecoder
    budget: StreamBudget
    node: NodeState
    binding: Binding
    pending: list[SSEvent] = field(default_factory=list)
    started: float = 0.0  # perf_counter at the call (set once failover chose this node)
    attempt: int = 0
    deltas: list[str] = field(default_factory=list)

    async def events(self) -> AsyncIterator[SSEvent]:
        """The node's events; raises `StreamCapExceeded` when the time or wire bound runs out."""
        while True:
            while self.pending:
                yield self.pending.pop(0)
            data = await self._read()
            if not data:
                return
            self.budget.received(len(data))
            self.pending.extend(self.decoder.feed(data))

    async def _read(self) -> bytes:
        """The next bytes, waiting no longer than the budget allows (only this wait counts as idle time)."""
        budget = self.budget
        window = asyncio.timeout(budget.window())
        began = budget.clock()
        try:
            async with window:
                return await self.resp.content.readany()
        except TimeoutError:
            if window.expired():
                raise budget.timed_out() from None
            raise
        finally:
            budget.waited(budget.clock() - began)

    def chunk(self, event: SSEvent) -> StreamChunk:
        """A verified chunk, counted against the output bounds (it joins `deltas` even when it trips one, so the
        node's final output can still be checked against everything it sent)."""
        chunk = verify_chunk(decode_event(event.data, MAX_CHUNK_EVENT_BYTES), self.binding, len(self.deltas))
        self.deltas.append(chunk.delta)
        self.budget.delta(chunk.delta)
        return chunk

    def done(self, event: SSEvent) -> Verified:
        return verify_reply(event.data, self.binding, streamed_output="".join(self.deltas))

    def metered(self, v: Verified) -> Metered:
        """The verified end of this stream, as completing the request needs it."""
        return Metered(self.node.pubkey, self.binding.forwarded, v.response, v.metering, v.record, self.attempt)

    def close(self) -> None:
        """Drop the connection (after a failure, or when the node must see a hang-up)."""
        self.resp.close()

    async def release(self) -> None:
        """After a clean end: read the body's tail so the keep-alive connection goes back to the pool."""
        try:
            async with asyncio.timeout(1.0):
                while await self.resp.content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError):
            self.resp.close()
            return
        self.resp.release()


async def open_node_stream(
    outbound: Outbound, client_timeout: aiohttp.ClientTimeout, node: NodeState, binding: Binding, budget: StreamBudget
) -> NodeStream:
    """Call the node's /infer/stream and wait for its first event: errors until then allow failover."""
    url, body = node.endpoint + "/infer/stream", binding.forwarded.to_json()
    resp = await outbound.open_stream(url, body, target="node", client_timeout=client_timeout)
    # one event at most as large as a whole /infer reply: the final event carries the output
    stream = NodeStream(resp, SSEDecoder(MAX_NODE_REPLY_BYTES), budget, node, binding)
    try:
        async for event in stream.events():
            if event.event == "error":
                raise error_event(event)
            stream.pending.insert(0, event)  # chunk or done: hand it to the relay
            return stream
        raise NodeFault("node stream ended before its first event")
    except (TimeoutError, aiohttp.ClientError, SSEError) as exc:
        stream.close()
        raise outbound.stream_failure("node", exc) from None
    except BaseException:
        stream.close()
        raise


def error_event(event: SSEvent) -> FedaiError:
    """A node's typed `error` event."""
    try:
        return FedaiError.from_dict(decode_json(event.data))
    except FedaiError:  # not JSON, or nested past the depth bound
        return NodeFault("node sent a malformed error event")
