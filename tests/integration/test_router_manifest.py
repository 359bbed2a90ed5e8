"""POST /manifest on a real router (real HTTP, real Postgres): a node's own signed manifest sets its initial
trust, every replica applies it, observation takes over; forged, misaddressed, stale, replayed, malformed or
oversized manifests are refused and leave nothing behind."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from fedai.profile.manifest import D_TAG, build_manifest_event, make_manifest
from fedai.protocol.envelope import open_envelope, seal
from fedai.protocol.event import Event, compute_id, sign_event
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import (
    Ack,
    BenchScores,
    Capacity,
    HardwareProfile,
    ModelInfo,
    NodeDescriptor,
    NodeManifest,
    Pricing,
    encode_payload,
)
from fedai_router.manifests import trust_from_manifest
from fedai_router.node_state import DEFAULT_TRUST
from tests.support.fake_node import register
from tests.support.router import RunningRouter, running_router
from tests.support.wait import eventually

BIG = HardwareProfile(os="linux", arch="x86_64", cpu="AMD EPYC", cores="17+", ram="64GiB+", disk_free="256GiB+")
FULL_BENCH = BenchScores(
    sha256_ops_s=2.5e6, memcpy_mib_s=12_000, stride_mib_s=9_000, cpu_band="high", memory_band="high", duration_ms=900.0
)
EXPECTED = 0.78  # docs/manifests.md: 0.5 + 0.08 (17+ cores) + 0.08 (64GiB+) + 0.08 + 0.04 (bench high/high)


def _manifest(created_at: int | None = None) -> NodeManifest:
    return make_manifest(BIG, FULL_BENCH, created_at=created_at)


def _descriptor() -> NodeDescriptor:
    return NodeDescriptor(
        endpoint="http://127.0.0.1:9",
        models=[ModelInfo(id="m1", context_window=2048, max_tokens=512, pricing=Pricing(input_msat=1, output_msat=1))],
        capacity=Capacity(max_concurrent=2),
    )


async def _post(router: RunningRouter, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(router.url + "/manifest", content=body)


async def _status_trust(router: RunningRouter, pubkey: str) -> float | None:
    async with httpx.AsyncClient() as http:
        nodes = (await http.get(router.url + "/status", headers=router.admin)).json()["nodes"]
    return next((float(n["trust"]) for n in nodes if n["pubkey"] == pubkey), None)


async def _stored(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch("SELECT pubkey, event_id, trust FROM node_manifests ORDER BY pubkey")]


async def _claimed(pool: asyncpg.Pool, event_id: str) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM nonces WHERE id = $1", event_id))


def _ack(router: RunningRouter, node: Keys, event: Event, response: httpx.Response) -> Ack:
    assert response.status_code == 200, response.text
    return open_envelope(
        response.content, Ack, kinds=(Kind.ACK,), recipient=node.pubkey, signers=(router.pubkey,), reply_to=event.id
    ).payload


async def test_manifest_signed_by_the_node_sets_its_trust(router: RunningRouter, db_pool: asyncpg.Pool) -> None:
    node = Keys.generate()
    assert (await register(router.url, router.pubkey, node, _descriptor())).status_code == 200
    assert await _status_trust(router, node.pubkey) == DEFAULT_TRUST
    manifest = _manifest()
    assert trust_from_manifest(manifest) == pytest.approx(EXPECTED)
    event = build_manifest_event(node, manifest, to=router.pubkey)
    ack = _ack(router, node, event, await _post(router, event.to_json()))
    assert (ack.status, ack.detail) == ("ok", f"trust={EXPECTED:.4f}")
    assert await _status_trust(router, node.pubkey) == pytest.approx(EXPECTED)
    row = await db_pool.fetchrow("SELECT * FROM node_manifests WHERE pubkey = $1", node.pubkey)
    assert row is not None
    assert (row["event_id"], row["trust"], int(row["created_at"].timestamp())) == (event.id, EXPECTED, event.created_at)
    assert row["event"] == event.to_dict() and row["manifest"]["profile"]["cores"] == "17+"
    assert await _claimed(db_pool, event.id)
    async with httpx.AsyncClient() as http:
        assert 'route="manifest"' in (await http.get(router.url + "/metrics", headers=router.admin)).text


async def test_manifest_before_registration_applies_when_the_node_registers(
    router: RunningRouter, db_pool: asyncpg.Pool
) -> None:
    node = Keys.generate()
    event = build_manifest_event(node, _manifest(), to=router.pubkey)
    ack = _ack(router, node, event, await _post(router, event.to_json()))
    assert ack.detail == f"trust={EXPECTED:.4f}; applies when the node registers"
    assert [r["pubkey"] for r in await _stored(db_pool)] == [node.pubkey]
    assert await _status_trust(router, node.pubkey) is None  # not a node yet
    assert (await register(router.url, router.pubkey, node, _descriptor())).status_code == 200
    assert await _status_trust(router, node.pubkey) == pytest.approx(EXPECTED)


async def test_every_replica_applies_a_manifest(router: RunningRouter, database_url: str) -> None:
    node = Keys.generate()
    assert (await register(router.url, router.pubkey, node, _descriptor())).status_code == 200
    async with running_router(database_url, keys=router.keys) as replica:
        await eventually(lambda: node.pubkey in replica.service.registry.nodes, what="replica sees the node")
        event = build_manifest_event(node, _manifest(), to=router.pubkey)
        _ack(router, node, event, await _post(router, event.to_json()))  # sent to the first replica only
        nodes = replica.service.registry.nodes
        await eventually(lambda: nodes[node.pubkey].trust == pytest.approx(EXPECTED), what="replica applies trust")
        assert await _status_trust(replica, node.pubkey) == pytest.approx(EXPECTED)
        assert replica.service.registry.tables["m1"].trust[0] == pytest.approx(EXPECTED)  # the scheduler's row


async def test_trust_gives_way_to_observed_reliability(router: RunningRouter) -> None:
    node = Keys.generate()
    assert (await register(router.url, router.pubkey, node, _descriptor())).status_code == 200
    event = build_manifest_event(node, _manifest(), to=router.pubkey)
    _ack(router, node, event, await _post(router, event.to_json()))
    registry = router.service.registry
    state = registry.nodes[node.pubkey]
    for _ in range(60):  # a node that promised much and fails every call
        await registry.failed(state, "upstream_error")
    after_failures = await _status_trust(router, node.pubkey)
    assert after_failures is not None and after_failures < DEFAULT_TRUST < EXPECTED
    for _ in range(200):  # then serves well for a long time
        await registry.succeeded(state, 12.0)
    recovered = await _status_trust(router, node.pubkey)
    assert recovered is not None and recovered > EXPECTED  # observation outweighs the manifest either way
    assert state.manifest_trust == pytest.approx(EXPECTED)  # the manifest's value itself is unchanged


def _resign(keys: Keys, event: Event, **changes: Any) -> Event:
    """`event` with `changes`, correctly signed by `keys` (so only the change itself can be refused)."""
    fields = {"kind": event.kind, "tags": event.tags, "content": event.content, "created_at": event.created_at}
    fields.update(changes)
    return sign_event(keys, fields["kind"], fields["content"], fields["tags"], fields["created_at"])


def _forged_pubkey(victim: Keys, attacker: Keys, router: str) -> bytes:
    forged = build_manifest_event(attacker, _manifest(), to=router)
    return msgspec.structs.replace(forged, pubkey=victim.pubkey).to_json()


def _forged_and_re_ided(victim: Keys, attacker: Keys, router: str) -> bytes:
    forged = build_manifest_event(attacker, _manifest(), to=router)
    digest = compute_id(victim.pubkey, forged.created_at, forged.kind, forged.tags, forged.content)
    return msgspec.structs.replace(forged, pubkey=victim.pubkey, id=digest.hex()).to_json()


def _measured_later(keys: Keys, router: str, measured_at: int) -> bytes:
    """Signed now, but claiming measurements from the future."""
    return seal(keys, Kind.NODE_MANIFEST, _manifest(measured_at), to=router, extra_tags=[["d", D_TAG]]).to_json()


def _case(name: str, victim: Keys, attacker: Keys, router: str) -> bytes:
    """One refused body; all of them concern `victim`, the registered node."""
    good = build_manifest_event(victim, _manifest(), to=router)
    now = int(time.time())
    d_and_p = [["d", D_TAG], ["p", router]]
    cases = {
        "pubkey_swapped": lambda: _forged_pubkey(victim, attacker, router),
        "re_ided": lambda: _forged_and_re_ided(victim, attacker, router),
        "wrong_recipient": lambda: build_manifest_event(victim, _manifest(), to=attacker.pubkey).to_json(),
        "stale": lambda: build_manifest_event(victim, _manifest(), to=router, created_at=now - 3600).to_json(),
        "malformed_content": lambda: _resign(victim, good, content='{"profile": {"os": "linux"}}').to_json(),
        "not_json_content": lambda: _resign(victim, good, content="not json").to_json(),
        "wrong_kind": lambda: _resign(victim, good, kind=Kind.NODE_HEARTBEAT).to_json(),
        "no_d_tag": lambda: _resign(victim, good, tags=[["p", router]]).to_json(),
        "measured_in_the_future": lambda: _measured_later(victim, router, now + 3600),
        "oversized": lambda: _resign(victim, good, tags=[*d_and_p, ["x", "a" * 17_000]]).to_json(),
        "not_json_body": lambda: b"{not json",
    }
    return cases[name]()


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("pubkey_swapped", 400, "invalid_event"),  # another key's manifest: the id no longer matches
        ("re_ided", 401, "invalid_signature"),  # … and with the id recomputed, the signature fails
        ("wrong_recipient", 403, "wrong_recipient"),
        ("stale", 401, "stale"),
        ("malformed_content", 400, "invalid_event"),
        ("not_json_content", 400, "invalid_event"),
        ("wrong_kind", 400, "invalid_event"),
        ("no_d_tag", 400, "invalid_event"),
        ("measured_in_the_future", 400, "invalid_request"),
        ("oversized", 413, "too_large"),
        ("not_json_body", 400, "invalid_json"),
    ],
)
async def test_refused_manifests_leave_nothing_behind(
    router: RunningRouter, db_pool: asyncpg.Pool, case: str, status: int, code: str
) -> None:
    victim, attacker = Keys.generate(), Keys.generate()
    assert (await register(router.url, router.pubkey, victim, _descriptor())).status_code == 200
    body = _case(case, victim, attacker, router.pubkey)
    response = await _post(router, body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await _stored(db_pool) == []
    assert await _status_trust(router, victim.pubkey) == DEFAULT_TRUST
    if body.startswith(b'{"'):
        sent_id = msgspec.json.decode(body)["id"]
        assert not await _claimed(db_pool, sent_id)  # refused before the replay step: the id stays unused


async def test_replayed_manifest_is_refused(router: RunningRouter, db_pool: asyncpg.Pool) -> None:
    node = Keys.generate()
    event = build_manifest_event(node, _manifest(), to=router.pubkey)
    _ack(router, node, event, await _post(router, event.to_json()))
    before = await _stored(db_pool)
    again = await _post(router, event.to_json())
    assert again.status_code == 409 and again.json()["error"]["code"] == "replay"
    assert await _stored(db_pool) == before


async def test_an_older_manifest_does_not_replace_a_newer_one(router: RunningRouter, db_pool: asyncpg.Pool) -> None:
    node = Keys.generate()
    now = int(time.time())
    newer = build_manifest_event(node, _manifest(now - 10), to=router.pubkey, created_at=now - 10)
    _ack(router, node, newer, await _post(router, newer.to_json()))
    weak = make_manifest(
        HardwareProfile(os="linux", arch="x86_64", cpu="ARM", cores="1-2", ram="<4GiB", disk_free="<4GiB"),
        None,
        created_at=now - 20,
    )
    older = build_manifest_event(node, weak, to=router.pubkey, created_at=now - 20)
    refused = await _post(router, older.to_json())
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_request"
    assert "newer manifest" in refused.json()["error"]["message"]
    assert not await _claimed(db_pool, older.id)
    assert [r["event_id"] for r in await _stored(db_pool)] == [newer.id]
    latest = build_manifest_event(node, weak, to=router.pubkey)
    ack = _ack(router, node, latest, await _post(router, latest.to_json()))
    assert ack.detail.startswith(f"trust={DEFAULT_TRUST:.4f}")
    assert [(r["event_id"], r["trust"]) for r in await _stored(db_pool)] == [(latest.id, DEFAULT_TRUST)]


async def test_manifest_payload_must_be_the_manifest_schema(router: RunningRouter, db_pool: asyncpg.Pool) -> None:
    """A heartbeat's descriptor sent as kind 31024 is a schema error, not a manifest."""
    node = Keys.generate()
    wrong = sign_event(node, Kind.NODE_MANIFEST, encode_payload(_descriptor()), [["p", router.pubkey], ["d", D_TAG]])
    response = await _post(router, wrong.to_json())
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_event"
    assert await _stored(db_pool) == []


async def test_refresh_picks_up_a_row_whose_commit_lagged(router: RunningRouter, db_pool: asyncpg.Pool) -> None:
    """A row stamped (now()) before the latest one already read, but committed after it, is still applied."""
    registry = router.service.registry
    first = Keys.generate()
    event = build_manifest_event(first, _manifest(), to=router.pubkey)
    _ack(router, first, event, await _post(router, event.to_json()))
    await registry.refresh()
    late = Keys.generate()
    lagged = build_manifest_event(late, _manifest())
    await db_pool.execute(
        "INSERT INTO node_manifests (pubkey, event_id, manifest, event, trust, created_at, updated_at)"
        " SELECT $1, $2, manifest, event, 0.61, created_at, updated_at - interval '2 seconds' FROM node_manifests"
        " WHERE pubkey = $3",
        late.pubkey,
        lagged.id,
        first.pubkey,
    )
    await registry.refresh()
    assert registry.manifest_trust[late.pubkey] == pytest.approx(0.61)
