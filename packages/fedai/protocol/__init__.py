"""The fedai wire protocol: NIP-01 events, keys, kinds, payloads, envelopes, errors, replay."""

from fedai.protocol.envelope import Opened, check_event, open_envelope, open_event, seal
from fedai.protocol.errors import ErrorCode, FedaiError, KeyFormatError
from fedai.protocol.event import Event, compute_id, decode_event, serialize_for_id, sign_event, verify_event
from fedai.protocol.keys import Keys, npub, parse_pubkey, parse_pubkeys
from fedai.protocol.kinds import Kind
from fedai.protocol.replay import MemoryReplayGuard, ReplayGuard, claim_or_raise

__all__ = [
    "ErrorCode",
    "Event",
    "FedaiError",
    "KeyFormatError",
    "Keys",
    "Kind",
    "MemoryReplayGuard",
    "Opened",
    "ReplayGuard",
    "check_event",
    "claim_or_raise",
    "compute_id",
    "decode_event",
    "npub",
    "open_envelope",
    "open_event",
    "parse_pubkey",
    "parse_pubkeys",
    "seal",
    "serialize_for_id",
    "sign_event",
    "verify_event",
]
