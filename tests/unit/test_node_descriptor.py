"""The node descriptor and its signed node.announce event."""

from __future__ import annotations

import fedai
from fedai.protocol.event import verify_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import NodeDescriptor, decode_payload
from fedai.service.config import Env
from fedai_node.config import from_env
from fedai_node.descriptor import announce_event, build_descriptor
from fedai_node.runners.base import RunnerModel

NODE = Keys.generate()


def test_descriptor_and_announce() -> None:
    settings = from_env(
        Env(
            {
                "NODE_PRIVATE_KEY": NODE.secret_hex,
                "ROUTER_PUBLIC_KEY": Keys.generate().pubkey,
                "NODE_RUNNER": "mock",
                "NODE_ENDPOINT": "http://node.example:8090",
                "NODE_MAX_TOKENS": "300",
                "NODE_REGION": "eu-west",
                "NODE_CAPACITY_MAX": "3",
            }
        )
    )
    models = [RunnerModel("a", 4096, 4096), RunnerModel("b", 2048, 100)]
    descriptor = build_descriptor(settings, models, in_flight=2, latency_ms={"a": 12.3456})
    assert descriptor.endpoint == "http://node.example:8090"
    assert [(m.id, m.max_tokens, m.context_window) for m in descriptor.models] == [("a", 300, 4096), ("b", 100, 2048)]
    assert descriptor.models[0].pricing.input_msat == 1000
    assert descriptor.models[0].pricing.output_msat == 2000
    assert descriptor.models[0].job_types == ["text-generation"]
    assert descriptor.models[0].latency_estimate_ms == 12.346
    assert (descriptor.capacity.max_concurrent, descriptor.capacity.in_flight) == (3, 2)
    assert (descriptor.region, descriptor.software_version) == ("eu-west", fedai.__version__)

    event = announce_event(NODE, descriptor)
    verify_event(event)
    assert event.kind == Kind.NODE_ANNOUNCE
    assert event.pubkey == NODE.pubkey
    assert event.tags == [["d", "fedai-node"], ["t", "fedai"], ["model", "a"], ["model", "b"]]
    assert decode_payload(event.content, NodeDescriptor) == descriptor
