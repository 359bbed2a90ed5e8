"""A secret value (macaroon, rune, API key, NWC secret) that never shows in repr, str, logs or errors."""

from __future__ import annotations

import hmac
from pathlib import Path

REDACTED = "***"


class Secret:
    """Holds a secret string; `reveal()` is the only way to read it. Equal secrets compare equal."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(other._value.encode(), self._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not pickled")


def read_secret_file(path: Path, what: str) -> Secret:
    """The stripped text of a secret file; ValueError naming `what` and the path (never the content)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: cannot read {path} ({type(exc).__name__})") from None
    if not text:
        raise ValueError(f"{what}: {path} is empty")
    return Secret(text)
