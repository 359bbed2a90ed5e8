"""NIP-44 v2 encryption between two keys (through rust-nostr's audited implementation, nostr-sdk 0.45.1)."""

from __future__ import annotations

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.keys import Keys


def encrypt(keys: Keys, recipient: str, plaintext: str) -> str:
    """Ciphertext (base64) of `plaintext` from `keys` to the x-only pubkey `recipient`."""
    import nostr_sdk as ns

    secret = ns.SecretKey.parse(keys.secret_hex)
    return str(ns.nip44_encrypt(secret, ns.PublicKey.parse(recipient), plaintext, ns.Nip44Version.V2))


def decrypt(keys: Keys, sender: str, ciphertext: str) -> str:
    """Plaintext of a NIP-44 v2 `ciphertext` from `sender` to `keys`; a typed error if it does not open."""
    import nostr_sdk as ns

    try:
        return str(ns.nip44_decrypt(ns.SecretKey.parse(keys.secret_hex), ns.PublicKey.parse(sender), ciphertext))
    except Exception as exc:  # noqa: BLE001 - the binding raises its own error types; all mean "does not open"
        raise FedaiError(ErrorCode.INVALID_EVENT, f"sealed payload does not open ({type(exc).__name__})") from None
