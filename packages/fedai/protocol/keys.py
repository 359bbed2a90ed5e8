"""secp256k1 identities: x-only public keys, BIP-340 signing, NIP-19 `npub`/`nsec` encoding."""

from __future__ import annotations

import os
import re
from functools import lru_cache

import bech32
from coincurve import PrivateKey, PublicKeyXOnly
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

from fedai.protocol.errors import KeyFormatError

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def nip19_encode(hrp: str, data: bytes) -> str:
    """Encode 32 raw bytes as NIP-19 bech32 (`npub`, `nsec`, `note`)."""
    if len(data) != 32:
        raise KeyFormatError(f"{hrp}: expected 32 bytes, got {len(data)}")
    words = bech32.convertbits(data, 8, 5, True)
    assert words is not None
    return str(bech32.bech32_encode(hrp, words))


def nip19_decode(value: str, hrp: str) -> bytes:
    """Decode a NIP-19 bech32 string of the given prefix to 32 bytes; refuse bad checksums and lengths."""
    got_hrp, words = bech32.bech32_decode(value.strip())
    if got_hrp is None or words is None:
        raise KeyFormatError(f"not a valid bech32 string (bad checksum or characters): {_redact(value)}")
    if got_hrp != hrp:
        raise KeyFormatError(f"expected a {hrp!r} string, got {got_hrp!r}")
    data = bech32.convertbits(words, 5, 8, False)
    if data is None or len(data) != 32:
        raise KeyFormatError(f"{hrp}: payload must be 32 bytes")
    return bytes(data)


def _redact(value: str) -> str:
    """Never echo a full secret in an error message."""
    return value[:8] + "…" if len(value) > 8 else value


def parse_pubkey(value: str) -> str:
    """Accept a 64-hex x-only key or an `npub`; return lowercase hex. Refuses points not on the curve."""
    value = value.strip()
    if value.startswith("npub1"):
        raw = nip19_decode(value, "npub")
    elif _HEX64.fullmatch(value):
        raw = bytes.fromhex(value)
    else:
        raise KeyFormatError(f"public key must be 64 hex characters or an npub, got {_redact(value)!r}")
    try:
        _xonly(raw)
    except ValueError as exc:
        raise KeyFormatError("public key is not a valid secp256k1 x coordinate") from exc
    return raw.hex()


def parse_pubkeys(value: str) -> frozenset[str]:
    """Parse a comma-separated list of public keys (hex or npub)."""
    return frozenset(parse_pubkey(part) for part in value.split(",") if part.strip())


def npub(pubkey_hex: str) -> str:
    return nip19_encode("npub", bytes.fromhex(pubkey_hex))


@lru_cache(maxsize=16384)
def _xonly(pub32: bytes) -> PublicKeyXOnly:
    return PublicKeyXOnly(pub32)


def schnorr_verify(pubkey_hex: str, sig_hex: str, msg32: bytes) -> bool:
    """BIP-340 verify; False for any malformed key or signature instead of raising."""
    try:
        key = _xonly(bytes.fromhex(pubkey_hex))
        sig = bytes.fromhex(sig_hex)
    except ValueError:
        return False
    if len(sig) != 64 or len(msg32) != 32:
        return False
    return bool(lib.secp256k1_schnorrsig_verify(GLOBAL_CONTEXT.ctx, sig, msg32, 32, key.public_key))


class Keys:
    """One secp256k1 identity. Keeps a prepared keypair so each signature costs one libsecp256k1 call."""

    __slots__ = ("_keypair", "_secret", "pubkey")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise KeyFormatError(f"secret key must be 32 bytes, got {len(secret)}")
        try:
            private = PrivateKey(secret)
        except ValueError as exc:
            raise KeyFormatError("secret key is out of range for secp256k1") from exc
        self._secret = secret
        self.pubkey: str = private.public_key_xonly.format().hex()
        keypair = ffi.new("secp256k1_keypair *")
        if not lib.secp256k1_keypair_create(GLOBAL_CONTEXT.ctx, keypair, secret):
            raise KeyFormatError("secret key was refused by libsecp256k1")
        self._keypair = keypair

    @classmethod
    def generate(cls) -> Keys:
        while True:
            try:
                return cls(os.urandom(32))
            except KeyFormatError:  # pragma: no cover - probability ~2^-128
                continue

    @classmethod
    def parse(cls, value: str) -> Keys:
        """Load from 64 hex characters or an `nsec`."""
        value = value.strip()
        if value.startswith("nsec1"):
            return cls(nip19_decode(value, "nsec"))
        if _HEX64.fullmatch(value):
            return cls(bytes.fromhex(value))
        raise KeyFormatError("secret key must be 64 hex characters or an nsec")

    @property
    def secret_hex(self) -> str:
        return self._secret.hex()

    @property
    def nsec(self) -> str:
        return nip19_encode("nsec", self._secret)

    @property
    def npub(self) -> str:
        return npub(self.pubkey)

    def sign(self, msg32: bytes, aux: bytes | None = None) -> bytes:
        """BIP-340 Schnorr signature over a 32-byte message, with fresh auxiliary randomness."""
        if len(msg32) != 32:
            raise ValueError("message must be 32 bytes")
        if aux is not None and len(aux) != 32:  # libsecp256k1 reads exactly 32 bytes from this pointer
            raise ValueError("aux randomness must be 32 bytes")
        sig = ffi.new("unsigned char[64]")
        if not lib.secp256k1_schnorrsig_sign32(GLOBAL_CONTEXT.ctx, sig, msg32, self._keypair, aux or os.urandom(32)):
            raise ValueError("signing failed")
        return bytes(ffi.buffer(sig, 64))

    def __repr__(self) -> str:
        return f"Keys(pubkey={self.pubkey[:12]}…)"
