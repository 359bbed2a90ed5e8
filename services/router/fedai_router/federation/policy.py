"""Which peer routers we listen to and may choose: allowlist, blocklist, mute, follows and web of trust.

Pure and in memory. `PeerPolicy.state(pubkey)` is the verdict for a key right now; contact lists (NIP-02 kind 3)
of the keys we follow feed the web-of-trust count. Filters combine with AND; the first failing one names the
state: `blocked`, `not_allowed`, `untrusted`, then `muted` (learned, never chosen), else `ok`.

An operator's rule for a key (`admin`, set through the admin API and shared by replicas through Postgres) comes
first and overrides the environment's lists for that key: `block` → blocked, `mute` → muted, `allow` → ok.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from fedai.protocol.event import Event

PolicyState = Literal["ok", "muted", "blocked", "not_allowed", "untrusted"]
REFUSED: frozenset[str] = frozenset({"blocked", "not_allowed", "untrusted"})
ADMIN_STATES: dict[str, PolicyState] = {"allow": "ok", "block": "blocked", "mute": "muted"}
CONTACTS_KIND = 3  # NIP-02 contact list
MAX_CONTACTS = 10_000  # p tags read from one contact list

_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True, slots=True)
class ContactList:
    event_id: str
    created_at: int
    follows: frozenset[str]


def contacts_of(event: Event) -> frozenset[str]:
    """The well-formed `p` keys of a kind-3 event (at most `MAX_CONTACTS`)."""
    keys: list[str] = []
    for tag in event.tags:
        if len(tag) >= 2 and tag[0] == "p" and _HEX64.match(tag[1]):
            keys.append(tag[1])
            if len(keys) >= MAX_CONTACTS:
                break
    return frozenset(keys)


def newer(created_at: int, event_id: str, than_created_at: int, than_id: str) -> bool:
    """NIP-01 replaceable order: the later `created_at` wins; on a tie, the lower id."""
    return created_at > than_created_at or (created_at == than_created_at and event_id < than_id)


@dataclass
class PeerPolicy:
    """The operator's rules (`ROUTER_PEER_*`, `ROUTER_FOLLOW`) plus what the followed keys' contact lists say."""

    allowlist: frozenset[str] = frozenset()
    blocklist: frozenset[str] = frozenset()
    mute: frozenset[str] = frozenset()
    follow: frozenset[str] = frozenset()
    wot_min: int = 0
    admin: dict[str, str] = field(default_factory=dict)  # pubkey -> "allow" | "block" | "mute" (runbooks/admin.md)
    _lists: dict[str, ContactList] = field(default_factory=dict)
    _endorsements: Counter[str] = field(default_factory=Counter)

    def state(self, pubkey: str) -> PolicyState:
        rule = self.admin.get(pubkey)
        if rule is not None:
            return ADMIN_STATES[rule]
        if pubkey in self.blocklist:
            return "blocked"
        if self.allowlist and pubkey not in self.allowlist:
            return "not_allowed"
        if self.wot_min > 0 and pubkey not in self.follow and self._endorsements[pubkey] < self.wot_min:
            return "untrusted"
        if pubkey in self.mute:
            return "muted"
        return "ok"

    def admits(self, pubkey: str) -> bool:
        """True when events from `pubkey` may be learned (possibly muted)."""
        return self.state(pubkey) not in REFUSED

    def choosable(self, pubkey: str) -> bool:
        """True when `pubkey` may be chosen for work (learned and not muted)."""
        return self.state(pubkey) == "ok"

    def followed(self, pubkey: str) -> bool:
        return pubkey in self.follow

    def endorsements(self, pubkey: str) -> int:
        """How many keys of `follow` list `pubkey` in their latest contact list."""
        return self._endorsements[pubkey]

    def apply_contacts(self, event: Event) -> frozenset[str] | None:
        """Take a followed key's kind-3 list if it is newer than the one held. Returns the keys it newly
        endorses (possibly none), or None when the event is not a newer list of a followed key."""
        if event.kind != CONTACTS_KIND or event.pubkey not in self.follow:
            return None
        held = self._lists.get(event.pubkey)
        if held is not None and not newer(event.created_at, event.id, held.created_at, held.event_id):
            return None
        follows = contacts_of(event) - {event.pubkey}
        before = held.follows if held is not None else frozenset()
        self._endorsements.subtract(before - follows)
        self._endorsements.update(follows - before)
        self._endorsements = +self._endorsements  # drop zero counts
        self._lists[event.pubkey] = ContactList(event.id, event.created_at, follows)
        return follows - before
