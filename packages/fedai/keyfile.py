"""Keys from arguments or files, shared by the SDK and the CLI: one loader, one normaliser, one way to write a
secret-key file (mode 0600). A public key in any form (npub, hex) becomes lowercase hex through
`fedai.protocol.keys.parse_pubkey`; a secret (nsec, hex) becomes `Keys`. Errors never echo a secret."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fedai.protocol.errors import KeyFormatError
from fedai.protocol.keys import Keys, parse_pubkey

SECRET_FILE_MODE = 0o600
MAX_KEY_FILE_BYTES = 4096


class KeyInputError(ValueError):
    """A key argument or key file that cannot be used; the message is one line and never contains the secret."""


@dataclass(frozen=True)
class ParsedKey:
    """A public key, and the secret it came from when the input was a secret."""

    pubkey: str
    keys: Keys | None
    source: str  # "argument" or the file path


def _read_key_file(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise KeyInputError(f"{path}: too large to be a key file")
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyInputError(f"{path}: cannot read key file ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise KeyInputError(f"{path}: not a text key file") from None


def _looks_like_path(value: str) -> bool:
    """No key has a path separator, a leading `~` or `.`, or a file extension; a path usually has one of them."""
    return os.sep in value or "/" in value or value.startswith(("~", ".")) or Path(value).suffix != ""


def _text_and_source(value: str) -> tuple[str, str]:
    """A value naming an existing file is read from it; anything else is the key itself."""
    path = Path(value).expanduser()
    if path.is_file():
        return _read_key_file(path), str(path)
    if path.is_dir():
        raise KeyInputError(f"{path}: is a directory, not a key file")
    return value.strip(), "argument"


def _unusable(source: str, text: str, expected: str) -> KeyInputError:
    """The error for text that is no key: a missing file when the argument reads as a path."""
    if source == "argument" and _looks_like_path(text):
        return KeyInputError(f"{Path(text).expanduser()}: file not found")
    where = f"file {source}" if source != "argument" else "the argument"
    return KeyInputError(f"{where} is not {expected}")


def load_secret(value: str) -> Keys:
    """A secret key (64 hex or nsec) given directly or as the path of a file holding one."""
    text, source = _text_and_source(value)
    try:
        return Keys.parse(text)
    except KeyFormatError:
        raise _unusable(source, text, "a secret key (expected 64 hex characters or an nsec)") from None


def secret_keys(value: Keys | str | None) -> Keys:
    """What the SDK's clients take as `keys`: `Keys`, a secret (nsec, hex), a key file's path, or None (a new key)."""
    if value is None:
        return Keys.generate()
    return value if isinstance(value, Keys) else load_secret(value)


def parse_any(value: str, *, public: bool = False) -> ParsedKey:
    """A secret (nsec, hex) or public key (npub, or hex with `public=True`), direct or from a file.

    Bare 64-hex input is read as a secret key unless `public` is set: both look the same.
    """
    text, source = _text_and_source(value)
    try:
        if text.startswith("npub1") or (public and not text.startswith("nsec1")):
            return ParsedKey(parse_pubkey(text), None, source)
        keys = Keys.parse(text)
    except KeyFormatError:
        expected = "an npub or 64 hex characters" if public else "an nsec, npub or 64 hex characters"
        raise _unusable(source, text, f"a key (expected {expected})") from None
    return ParsedKey(keys.pubkey, keys, source)


def write_secret_file(path: Path, keys: Keys, *, overwrite: bool = False) -> None:
    """Write the hex secret to `path`, created with mode 0600 (never wider, whatever the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, SECRET_FILE_MODE)
    except FileExistsError:
        raise KeyInputError(f"{path} already exists (refusing to overwrite a key)") from None
    except OSError as exc:
        raise KeyInputError(f"{path}: cannot write key file ({exc.strerror or type(exc).__name__})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), SECRET_FILE_MODE)
        handle.write(keys.secret_hex + "\n")


def load_or_create_secret(path: Path) -> tuple[Keys, bool]:
    """Reuse the key in `path` (tightening its mode to 0600) or create one; returns (keys, created)."""
    if path.exists():
        keys = load_secret(str(path))
        if stat.S_IMODE(path.stat().st_mode) != SECRET_FILE_MODE:
            path.chmod(SECRET_FILE_MODE)
        return keys, False
    keys = Keys.generate()
    write_secret_file(path, keys)
    return keys, True
