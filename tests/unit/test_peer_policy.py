"""Peer policy and the PeerBook's checks: every refusal has its label, and what passes is what the auction sees."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from fedai.protocol.envelope import seal
from fedai.protocol.event import Event, sign_event
from fedai.protocol.federation import (
    ModelPrice,
    RouterCaps,
    RouterLimits,
    RouterPrice,
    RouterStatus,
    Sla,
)
from fedai.protocol.keys import Keys
from fedai.protocol.kinds import Kind
from fedai.protocol.messages import Payload, to_builtins
from fedai_router.federation.peer_views import PeerPrice
from fedai_router.federation.peers import PeerBook
from fedai_router.federation.policy import PeerPolicy
from fedai_router.store.peers import PeerRow

NOW = 1_800_000_000.0
ME = Keys.generate()


def caps(models: list[str] | None = None, *, job_types: list[str] | None = None, max_privacy: int = 2) -> RouterCaps:
    return RouterCaps(
        endpoint="https://peer.example",
        job_types=job_types or ["text-generation"],
        models=models if models is not None else ["m"],
        limits=RouterLimits(max_tokens=1024, max_request_bytes=65536),
        max_privacy=max_privacy,
    )


def sheet(
    job_type: str = "text-generation", *, inp: int = 100, out: int = 200, surge: float = 1.0, model: str = "m"
) -> RouterPrice:
    return RouterPrice(
        job_type=job_type,
        base_msat=3,
        surge=surge,
        models=[ModelPrice(model=model, input_msat=inp, output_msat=out)],
        sla=Sla(p95_latency_ms=50),
    )


def status(backpressure: str = "NORMAL", p95: float = 50.0) -> RouterStatus:
    return RouterStatus(backpressure=backpressure, queue_depth=0, active_jobs=0, p95_latency_ms=p95, nodes=1)  # type: ignore[arg-type]


D = {Kind.ROUTER_CAPS: "caps", Kind.ROUTER_STATUS: "status"}


def announce(
    keys: Keys,
    payload: Payload | str,
    kind: int | None = None,
    *,
    d: str | None = None,
    created_at: float = NOW,
    expires: float | None = NOW + 180,
) -> Event:
    if kind is None:
        kind = {RouterCaps: Kind.ROUTER_CAPS, RouterPrice: Kind.ROUTER_PRICE, RouterStatus: Kind.ROUTER_STATUS}[
            type(payload)  # type: ignore[index]
        ]
    if d is None:
        d = payload.job_type if isinstance(payload, RouterPrice) else D[Kind(kind)]
    return seal(
        keys,
        kind,
        payload,
        expiration=int(expires) if expires is not None else None,
        extra_tags=[["d", d]],
        created_at=int(created_at),
    )


def book(**policy: Any) -> PeerBook:
    return PeerBook(
        ME.pubkey, PeerPolicy(**policy), skew_s=60, max_content_bytes=4096, ttl_s=300, registry=CollectorRegistry()
    )


async def learn(b: PeerBook, *events: Event, now: float = NOW) -> list[str]:
    return [await b.handle(e, None, now=now) for e in events]


def price_of(b: PeerBook, peer: str, job_type: str) -> PeerPrice:
    price = b.price(peer, "m", job_type, now=NOW)
    assert price is not None
    return price


def count(b: PeerBook, kind: str, result: str) -> float:
    return b.events.labels(kind, result)._value.get()


# -- policy ----------------------------------------------------------------------------------------------


def test_policy_states_and_their_precedence() -> None:
    a, b, c = (Keys.generate().pubkey for _ in range(3))
    assert PeerPolicy().state(a) == "ok"
    assert PeerPolicy(blocklist=frozenset({a}), allowlist=frozenset({a})).state(a) == "blocked"
    assert PeerPolicy(allowlist=frozenset({b})).state(a) == "not_allowed"
    assert PeerPolicy(allowlist=frozenset({b})).state(b) == "ok"
    assert PeerPolicy(mute=frozenset({c})).state(c) == "muted"
    wot = PeerPolicy(follow=frozenset({b}), wot_min=1, mute=frozenset({b}))
    assert wot.state(a) == "untrusted"
    assert wot.state(b) == "muted"  # a followed key passes the web of trust itself
    assert wot.admits(b) and not wot.choosable(b)


def test_an_operators_rule_overrides_the_environment_for_its_key() -> None:
    a, b, c, d = (Keys.generate().pubkey for _ in range(4))
    env = PeerPolicy(blocklist=frozenset({a}), allowlist=frozenset({a, c}), follow=frozenset({c}), wot_min=1)
    assert [env.state(k) for k in (a, b, c, d)] == ["blocked", "not_allowed", "ok", "not_allowed"]
    env.admin = {a: "allow", b: "mute", c: "block"}
    assert [env.state(k) for k in (a, b, c, d)] == ["ok", "muted", "blocked", "not_allowed"]
    assert env.choosable(a) and env.admits(b) and not env.choosable(b) and not env.admits(c)
    env.admin = {}
    assert env.state(a) == "blocked"


def contacts(keys: Keys, follows: list[str], created_at: int) -> Event:
    return sign_event(keys, 3, "", [["p", k] for k in follows] + [["p", "not-a-key"]], created_at)


def test_contact_lists_count_endorsements_and_only_the_newest_counts() -> None:
    f1, f2, stranger = Keys.generate(), Keys.generate(), Keys.generate()
    peer, other = Keys.generate().pubkey, Keys.generate().pubkey
    policy = PeerPolicy(follow=frozenset({f1.pubkey, f2.pubkey}), wot_min=2)
    assert policy.apply_contacts(contacts(f1, [peer, other], 100)) == {peer, other}
    assert policy.state(peer) == "untrusted"
    assert policy.apply_contacts(contacts(stranger, [peer], 100)) is None  # not a key we follow
    assert policy.apply_contacts(contacts(f2, [peer], 100)) == {peer}
    assert policy.state(peer) == "ok" and policy.endorsements(peer) == 2
    assert policy.apply_contacts(contacts(f2, [], 99)) is None  # older than the one held
    assert policy.apply_contacts(contacts(f2, [], 101)) == frozenset()  # f2 unfollows everyone
    assert policy.state(peer) == "untrusted" and policy.endorsements(peer) == 1
    assert policy.endorsements(other) == 1


# -- the checks --------------------------------------------------------------------------------------


async def test_valid_announcements_are_learned_and_shown() -> None:
    peer = Keys.generate()
    b = book()
    results = await learn(b, announce(peer, caps()), announce(peer, sheet()), announce(peer, status()))
    assert results == ["accepted"] * 3
    (view,) = b.peers_for("m", "text-generation", 1, now=NOW)
    assert (view.pubkey, view.endpoint, view.backpressure, view.p95_latency_ms) == (
        peer.pubkey,
        "https://peer.example",
        "NORMAL",
        50,
    )
    price = b.price(view, "m", "text-generation", now=NOW)
    assert price is not None and (price.input_msat, price.output_msat, price.base_msat) == (100, 200, 3)
    assert price.cost(1000, 500) == 3 + 100 + 100
    assert b.status(peer.pubkey, now=NOW) == status()
    assert b.endpoint(peer.pubkey) == "https://peer.example"
    assert count(b, "caps", "accepted") == 1


@pytest.mark.parametrize(
    ("make", "result"),
    [
        (lambda k: announce(k, caps(), created_at=NOW + 61), "future"),
        (lambda k: announce(k, caps(), expires=NOW), "expired"),
        (lambda k: announce(k, caps(), expires=NOW - 100), "expired"),
        (lambda k: announce(k, '{"endpoint": "x"}', Kind.ROUTER_CAPS), "malformed"),
        (lambda k: announce(k, "not json", Kind.ROUTER_STATUS), "malformed"),
        (lambda k: announce(k, '{"a": "' + "x" * 5000 + '"}', Kind.ROUTER_CAPS), "oversized"),
        (lambda k: announce(k, caps(), d="something-else"), "malformed"),
        (lambda k: announce(k, sheet("embedding"), d="text-generation"), "malformed"),
        (lambda k: seal(k, Kind.ROUTER_CAPS, caps(), extra_tags=[["d", "caps"], ["expiration", "x"]]), "malformed"),
        (lambda k: seal(k, Kind.ROUTER_STATUS, status(), created_at=int(NOW)), "malformed"),  # no d tag
        (lambda k: announce(k, caps(), kind=Kind.NODE_ANNOUNCE, d="caps"), "unexpected"),
    ],
)
async def test_bad_announcements_are_refused_and_counted(make: Any, result: str) -> None:
    peer = Keys.generate()
    b = book()
    event = make(peer)
    assert await learn(b, event) == [result]
    assert b.known() == []
    kind = {31020: "caps", 31021: "price", 31022: "status"}.get(event.kind, str(event.kind))
    assert count(b, kind, result) == 1


async def test_clock_skew_and_ttl_for_announcements_without_expiration() -> None:
    peer = Keys.generate()
    b = book()
    assert await learn(b, announce(peer, caps(), created_at=NOW + 59, expires=None)) == ["accepted"]
    assert b.peers_for("m", "text-generation", 0, now=NOW + 300)
    assert not b.peers_for("m", "text-generation", 0, now=NOW + 360)  # older than ROUTER_PEER_TTL_S


async def test_only_the_latest_announcement_per_peer_kind_and_d_counts() -> None:
    peer = Keys.generate()
    b = book()
    newer = announce(peer, sheet(inp=300), created_at=NOW - 1)
    older = announce(peer, sheet(inp=100), created_at=NOW - 5)
    other_job = announce(peer, sheet("embedding", inp=7), created_at=NOW - 10)
    assert await learn(
        b, announce(peer, caps(job_types=["text-generation", "embedding"])), newer, older, other_job, newer
    ) == ["accepted", "accepted", "stale", "accepted", "duplicate"]
    assert price_of(b, peer.pubkey, "text-generation").input_msat == 300
    assert price_of(b, peer.pubkey, "embedding").input_msat == 7
    # same second: the lower id wins (NIP-01), whichever arrives first
    first, second = (announce(peer, status(p95=p), created_at=NOW) for p in (1.0, 2.0))
    low, high = sorted([first, second], key=lambda e: e.id)
    assert await learn(b, high, low) == ["accepted", "accepted"]
    assert await learn(b, high) == ["stale"]
    assert b.status(peer.pubkey, now=NOW) == (status(p95=1.0) if low is first else status(p95=2.0))


async def test_own_announcements_are_ignored() -> None:
    b = book()
    assert await learn(b, announce(ME, caps())) == ["own"]
    assert b.known() == []


async def test_blocked_not_allowed_and_untrusted_are_never_learned_muted_is_never_chosen() -> None:
    blocked, stranger, muted, good, followed = (Keys.generate() for _ in range(5))
    b = book(blocklist=frozenset({blocked.pubkey}), mute=frozenset({muted.pubkey}))
    assert await learn(b, announce(blocked, caps()), announce(muted, caps()), announce(good, caps())) == [
        "blocked",
        "muted",
        "accepted",
    ]
    assert b.known() == sorted([muted.pubkey, good.pubkey])
    assert [v.pubkey for v in b.peers_for("m", "text-generation", 0, now=NOW)] == [good.pubkey]
    assert b.policy_state(muted.pubkey) == "muted"
    assert {s["pubkey"]: s["policy"] for s in b.summaries(NOW)} == {muted.pubkey: "muted", good.pubkey: "ok"}

    allow = book(allowlist=frozenset({good.pubkey}))
    assert await learn(allow, announce(stranger, caps()), announce(good, caps())) == ["not_allowed", "accepted"]
    assert count(allow, "caps", "not_allowed") == 1

    wot = book(follow=frozenset({followed.pubkey}), wot_min=1)
    assert await learn(wot, announce(stranger, caps()), announce(followed, caps())) == ["untrusted", "accepted"]
    assert wot.handle_contacts(contacts(followed, [stranger.pubkey], int(NOW)), now=NOW) == {stranger.pubkey}
    assert count(wot, "contacts", "accepted") == 1
    assert await learn(wot, announce(stranger, caps())) == ["accepted"]  # what a re-query delivers


async def test_peers_for_filters_on_model_job_type_privacy_saturation_and_orders_by_price() -> None:
    cheap, dear, unpriced, saturated, private, other = (Keys.generate() for _ in range(6))
    b = book()
    await learn(
        b,
        announce(cheap, caps()),
        announce(cheap, sheet(inp=10, out=10)),
        announce(dear, caps()),
        announce(dear, sheet(inp=10, out=10, surge=3.0)),
        announce(dear, status(p95=1)),
        announce(unpriced, caps()),
        announce(saturated, caps()),
        announce(saturated, sheet(inp=1, out=1)),
        announce(saturated, status("SATURATED")),
        announce(private, caps(max_privacy=0)),
        announce(private, sheet(inp=1, out=1)),
        announce(other, caps(["x"])),
    )
    assert [v.pubkey for v in b.peers_for("m", "text-generation", 1, now=NOW)] == [
        cheap.pubkey,
        dear.pubkey,
        unpriced.pubkey,
    ]
    assert private.pubkey in {v.pubkey for v in b.peers_for("m", "text-generation", 0, now=NOW)}
    assert b.peers_for("m", "text-generation", 3, now=NOW) == []  # PL3 never leaves
    assert b.peers_for("m", "embedding", 0, now=NOW) == []
    assert price_of(b, dear.pubkey, "text-generation").input_msat == 30  # surge
    assert b.price(dear.pubkey, "x", "text-generation", now=NOW) is None
    assert b.peers_for("m", "text-generation", 0, now=NOW + 181) == []  # every caps expired


async def test_restore_from_stored_rows_keeps_order_and_freshness() -> None:
    peer = Keys.generate()
    b = book()
    ts = datetime.fromtimestamp(NOW, UTC)
    meta = {"id": "0" * 64, "created_at": int(NOW), "expires_at": int(NOW + 100)}
    rows = [
        PeerRow(
            peer.pubkey,
            to_builtins(caps()),
            {"text-generation": to_builtins(sheet())},
            None,
            {"31020:caps": meta, "31021:text-generation": meta},
            ts,
            ts,
        ),
        PeerRow(Keys.generate().pubkey, {"endpoint": 5}, {}, None, {"31020:caps": meta}, ts, ts),  # no longer decodes
    ]
    assert b.restore(rows) == 1
    assert [v.pubkey for v in b.peers_for("m", "text-generation", 0, now=NOW)] == [peer.pubkey]
    assert b.peers_for("m", "text-generation", 0, now=NOW + 101) == []
    assert await learn(b, announce(peer, caps(), created_at=NOW - 1)) == ["stale"]


def test_pool_refusals_are_mirrored_into_the_metric() -> None:
    b = book()
    b.mirror_pool_stats({"invalid": 2, "oversized": 0, "over_budget": 5, "received": 10})
    b.mirror_pool_stats({"invalid": 3, "oversized": 1, "over_budget": 5})
    assert (count(b, "any", "invalid"), count(b, "any", "too_large"), count(b, "any", "over_budget")) == (3, 1, 5)


async def test_now_defaults_to_the_clock() -> None:
    peer = Keys.generate()
    b = book()
    now = time.time()
    assert await b.handle(announce(peer, caps(), created_at=now, expires=now + 5), None) == "accepted"
    assert [v.pubkey for v in b.peers_for("m", "text-generation", 0)] == [peer.pubkey]
    assert await b.handle(announce(peer, caps(), created_at=now + 1, expires=now - 1), None) == "expired"
