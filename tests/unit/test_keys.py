"""fedai.protocol.keys: parsing, NIP-19 encoding, and the cached-keypair BIP-340 signer."""

from __future__ import annotations

import hashlib
import os

import bech32
import pytest
from coincurve import PrivateKey, PublicKeyXOnly

from fedai.protocol.errors import KeyFormatError
from fedai.protocol.keys import (
    Keys,
    nip19_decode,
    nip19_encode,
    npub,
    parse_pubkey,
    parse_pubkeys,
    schnorr_verify,
)

# NIP-19 spec examples.
NIP19_NPUB = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
NIP19_PUB_HEX = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
NIP19_NSEC = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
NIP19_SEC_HEX = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"

# BIP-340 test vector 0 (secret 3, aux 0, message 0).
BIP340_SEC = (3).to_bytes(32, "big")
BIP340_PUB = "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
BIP340_SIG0 = (
    "e907831f80848d1069a5371b402410364bdf1c5f8307b0084c55f1ce2dca8215"
    "25f66a4a85ea8b71e482a74f382d2ce5ebeee8fdb2172f477df4900d310536c0"
)

# x = 5 is not the x coordinate of any secp256k1 point (5^3 + 7 = 132 is not a square mod p).
OFF_CURVE_X = (5).to_bytes(32, "big").hex()
SECP256K1_N = int("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16)


def _flip_char(s: str, index: int) -> str:
    """Replace one bech32 data character with a different valid one."""
    alphabet = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    c = s[index]
    replacement = alphabet[(alphabet.index(c) + 1) % len(alphabet)]
    return s[:index] + replacement + s[index + 1 :]


# --- NIP-19 spec examples -------------------------------------------------------------------------------


def test_nip19_npub_spec_example_decodes() -> None:
    assert parse_pubkey(NIP19_NPUB) == NIP19_PUB_HEX
    assert nip19_decode(NIP19_NPUB, "npub").hex() == NIP19_PUB_HEX


def test_nip19_npub_spec_example_encodes() -> None:
    assert npub(NIP19_PUB_HEX) == NIP19_NPUB
    assert nip19_encode("npub", bytes.fromhex(NIP19_PUB_HEX)) == NIP19_NPUB


def test_nip19_nsec_spec_example_round_trip() -> None:
    keys = Keys.parse(NIP19_NSEC)
    assert keys.secret_hex == NIP19_SEC_HEX
    assert keys.nsec == NIP19_NSEC
    assert Keys.parse(NIP19_SEC_HEX).nsec == NIP19_NSEC
    # the pubkey derived from the secret matches what coincurve derives independently
    expected_pub = PrivateKey(bytes.fromhex(NIP19_SEC_HEX)).public_key_xonly.format().hex()
    assert keys.pubkey == expected_pub
    assert keys.npub == npub(expected_pub)


# --- generate / parse round trips -----------------------------------------------------------------------


def test_generate_gives_distinct_valid_identities() -> None:
    a, b = Keys.generate(), Keys.generate()
    assert a.pubkey != b.pubkey
    assert a.secret_hex != b.secret_hex
    for k in (a, b):
        assert len(k.pubkey) == 64
        assert k.pubkey == k.pubkey.lower()
        assert parse_pubkey(k.pubkey) == k.pubkey


@pytest.mark.parametrize("form", ["hex", "HEX", "nsec", "padded"])
def test_parse_round_trip(form: str) -> None:
    original = Keys.generate()
    value = {
        "hex": original.secret_hex,
        "HEX": original.secret_hex.upper(),
        "nsec": original.nsec,
        "padded": f"  {original.nsec}\n",
    }[form]
    parsed = Keys.parse(value)
    assert parsed.secret_hex == original.secret_hex
    assert parsed.pubkey == original.pubkey
    assert parsed.nsec == original.nsec
    assert parsed.npub == original.npub


def test_npub_round_trip_through_parse_pubkey() -> None:
    keys = Keys.generate()
    encoded = npub(keys.pubkey)
    assert encoded.startswith("npub1")
    assert len(encoded) == 63
    assert parse_pubkey(encoded) == keys.pubkey
    assert parse_pubkey(keys.pubkey.upper()) == keys.pubkey
    assert parse_pubkey(f" {encoded} ") == keys.pubkey


def test_parse_pubkeys_list() -> None:
    a, b = Keys.generate(), Keys.generate()
    got = parse_pubkeys(f"{a.pubkey}, {b.npub},,{a.npub} ,")
    assert got == frozenset({a.pubkey, b.pubkey})
    assert parse_pubkeys("") == frozenset()
    assert parse_pubkeys(" , ") == frozenset()
    with pytest.raises(KeyFormatError):
        parse_pubkeys(f"{a.pubkey},nonsense")


def test_repr_does_not_reveal_secret() -> None:
    keys = Keys.parse(NIP19_SEC_HEX)
    text = repr(keys)
    assert NIP19_SEC_HEX not in text
    assert NIP19_NSEC not in text
    assert keys.pubkey[:12] in text


# --- refusals -------------------------------------------------------------------------------------------


def _assert_secret_not_leaked(exc: KeyFormatError, *secrets: str) -> None:
    message = str(exc)
    for secret in secrets:
        assert secret not in message
        assert secret.lower() not in message.lower()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        NIP19_SEC_HEX[:-1],  # 63 hex
        NIP19_SEC_HEX + "0",  # 65 hex
        NIP19_SEC_HEX[:-2] + "zz",  # non-hex
        NIP19_SEC_HEX[:-1] + "g",
        "0x" + NIP19_SEC_HEX[2:],
        NIP19_NSEC[:-1],  # truncated bech32
        _flip_char(NIP19_NSEC, 20),  # bad checksum
        _flip_char(NIP19_NSEC, len(NIP19_NSEC) - 1),  # bad checksum in the checksum itself
        NIP19_NSEC.upper(),  # uppercase bech32 is not an nsec here
        NIP19_NSEC[:10] + NIP19_NSEC[10:20].upper() + NIP19_NSEC[20:],  # mixed case
        NIP19_NPUB,  # npub where an nsec is expected
        "nsec1" + NIP19_NPUB[5:],  # npub data with an nsec prefix: checksum covers the prefix
        "00" * 32,  # zero is not a valid secret
        f"{SECP256K1_N:064x}",  # the group order is out of range
        "ff" * 32,
    ],
)
def test_secret_key_refusals(value: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        Keys.parse(value)
    _assert_secret_not_leaked(info.value, NIP19_SEC_HEX, NIP19_NSEC)


@pytest.mark.parametrize(
    "value",
    [
        "",
        NIP19_PUB_HEX[:-1],
        NIP19_PUB_HEX + "a",
        NIP19_PUB_HEX[:-1] + "x",
        _flip_char(NIP19_NPUB, 20),
        NIP19_NPUB[:-1],
        NIP19_NPUB.upper(),
        NIP19_NPUB[:12] + NIP19_NPUB[12:30].upper() + NIP19_NPUB[30:],
        NIP19_NSEC,  # nsec where an npub is expected
        OFF_CURVE_X,  # not on the curve
        "ff" * 32,  # >= field prime
        "00" * 32,
        npub(OFF_CURVE_X),  # well-formed npub of an off-curve x
    ],
)
def test_pubkey_refusals(value: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        parse_pubkey(value)
    # an nsec pasted by mistake must not be echoed in full
    _assert_secret_not_leaked(info.value, NIP19_NSEC, NIP19_SEC_HEX)


def test_off_curve_x_really_is_off_curve() -> None:
    with pytest.raises(ValueError, match="could not be parsed"):
        PublicKeyXOnly(bytes.fromhex(OFF_CURVE_X))


def test_nip19_decode_wrong_prefix_and_lengths() -> None:
    with pytest.raises(KeyFormatError, match="expected a 'nsec'"):
        nip19_decode(NIP19_NPUB, "nsec")
    with pytest.raises(KeyFormatError, match="expected a 'npub'"):
        nip19_decode(NIP19_NSEC, "npub")
    for size in (31, 33, 0):
        words = bech32.convertbits(b"\x01" * size, 8, 5, True)
        assert words is not None
        wrong = bech32.bech32_encode("npub", words)
        with pytest.raises(KeyFormatError, match="32 bytes"):
            nip19_decode(wrong, "npub")
        with pytest.raises(KeyFormatError):
            parse_pubkey(wrong)
    with pytest.raises(KeyFormatError, match="32 bytes"):
        nip19_encode("npub", b"\x00" * 31)


def test_nip19_decode_error_message_redacts_secret() -> None:
    bad = _flip_char(NIP19_NSEC, 30)
    with pytest.raises(KeyFormatError) as info:
        nip19_decode(bad, "nsec")
    assert bad not in str(info.value)
    assert bad[:40] not in str(info.value)


def test_keys_constructor_length_check() -> None:
    with pytest.raises(KeyFormatError, match="32 bytes"):
        Keys(b"\x01" * 31)
    with pytest.raises(KeyFormatError, match="32 bytes"):
        Keys(b"\x01" * 33)


# --- signing (the cached libsecp256k1 keypair: docs/decisions.md#coincurve) -----------------------------


def test_sign_verify_round_trip() -> None:
    keys = Keys.generate()
    for _ in range(20):
        msg = os.urandom(32)
        sig = keys.sign(msg)
        assert len(sig) == 64
        assert schnorr_verify(keys.pubkey, sig.hex(), msg)
        # and independently through coincurve's own verifier
        assert PublicKeyXOnly(bytes.fromhex(keys.pubkey)).verify(sig, msg)


def test_sign_matches_bip340_vector_0() -> None:
    keys = Keys(BIP340_SEC)
    assert keys.pubkey == BIP340_PUB
    sig = keys.sign(bytes(32), aux=bytes(32))
    assert sig.hex() == BIP340_SIG0
    assert schnorr_verify(BIP340_PUB, BIP340_SIG0, bytes(32))


def test_sign_with_fixed_aux_is_deterministic_and_matches_coincurve() -> None:
    keys = Keys.generate()
    msg = hashlib.sha256(b"fedai").digest()
    aux = os.urandom(32)
    sig = keys.sign(msg, aux=aux)
    assert keys.sign(msg, aux=aux) == sig
    assert PrivateKey(bytes.fromhex(keys.secret_hex)).sign_schnorr(msg, aux) == sig


def test_signatures_use_fresh_aux_randomness() -> None:
    keys = Keys.generate()
    msg = os.urandom(32)
    first, second = keys.sign(msg), keys.sign(msg)
    assert first != second
    assert schnorr_verify(keys.pubkey, first.hex(), msg)
    assert schnorr_verify(keys.pubkey, second.hex(), msg)


def test_many_identities_sign_with_their_own_keypair() -> None:
    """Each Keys keeps its own cached keypair: no identity signs with another's key."""
    identities = [Keys.generate() for _ in range(8)]
    msg = os.urandom(32)
    sigs = [k.sign(msg) for k in identities]
    for i, k in enumerate(identities):
        for j, sig in enumerate(sigs):
            assert schnorr_verify(k.pubkey, sig.hex(), msg) is (i == j)


def test_verify_fails_for_other_message_key_or_tampered_signature() -> None:
    keys, other = Keys.generate(), Keys.generate()
    msg = os.urandom(32)
    sig = keys.sign(msg)
    assert schnorr_verify(keys.pubkey, sig.hex(), msg)
    assert not schnorr_verify(keys.pubkey, sig.hex(), bytes(b ^ 1 if i == 0 else b for i, b in enumerate(msg)))
    assert not schnorr_verify(other.pubkey, sig.hex(), msg)
    tampered = bytearray(sig)
    tampered[63] ^= 0x01
    assert not schnorr_verify(keys.pubkey, tampered.hex(), msg)
    tampered = bytearray(sig)
    tampered[0] ^= 0x80
    assert not schnorr_verify(keys.pubkey, tampered.hex(), msg)


@pytest.mark.parametrize(
    ("pubkey", "sig", "msg_len"),
    [
        ("zz" * 32, "00" * 64, 32),  # non-hex key
        (OFF_CURVE_X, "00" * 64, 32),  # off-curve key
        ("ab" * 31, "00" * 64, 32),  # short key
        (BIP340_PUB, "00" * 63, 32),  # short signature
        (BIP340_PUB, "00" * 65, 32),  # long signature
        (BIP340_PUB, "g" * 128, 32),  # non-hex signature
        (BIP340_PUB, BIP340_SIG0, 31),  # short message
        (BIP340_PUB, BIP340_SIG0, 33),  # long message
    ],
)
def test_schnorr_verify_malformed_inputs_return_false(pubkey: str, sig: str, msg_len: int) -> None:
    assert schnorr_verify(pubkey, sig, bytes(msg_len)) is False


def test_sign_refuses_wrong_lengths() -> None:
    keys = Keys.generate()
    with pytest.raises(ValueError, match="32 bytes"):
        keys.sign(b"\x00" * 31)
    with pytest.raises(ValueError, match="32 bytes"):
        keys.sign(b"\x00" * 33)
    # aux randomness shorter than 32 bytes would make libsecp256k1 read past the buffer
    with pytest.raises(ValueError, match="32 bytes"):
        keys.sign(bytes(32), aux=b"\x01" * 5)
    with pytest.raises(ValueError, match="32 bytes"):
        keys.sign(bytes(32), aux=b"\x01" * 33)
