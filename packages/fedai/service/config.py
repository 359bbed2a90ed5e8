"""Read service configuration from environment variables; every failure names the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from fedai.protocol.errors import KeyFormatError
from fedai.protocol.keys import Keys, parse_pubkeys


class ConfigError(ValueError):
    """Missing or invalid configuration, raised at start with the variable's name."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Env:
    """Typed accessors over a mapping of environment variables (os.environ by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def text(self, name: str, default: str | None = None) -> str:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{name} is required")
            return default
        return value

    def optional(self, name: str) -> str | None:
        return self.raw(name)

    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {number}")
        return number

    def number(self, name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if number != number or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
        return number

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def keys(self, name: str) -> Keys:
        """A secret key (hex or nsec). Never echoes the value."""
        value = self.text(name)
        try:
            return Keys.parse(value)
        except KeyFormatError as exc:
            raise ConfigError(f"{name}: {exc}") from None

    def pubkeys(self, name: str, *, required: bool = True) -> frozenset[str]:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(f"{name} is required")
            return frozenset()
        try:
            keys = parse_pubkeys(value)
        except KeyFormatError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if required and not keys:
            raise ConfigError(f"{name} is required")
        return keys

    def items(self, name: str) -> list[str]:
        value = self.raw(name)
        return [part.strip() for part in value.split(",") if part.strip()] if value else []

    def urls(self, name: str, schemes: tuple[str, ...] = ("http", "https")) -> list[str]:
        urls = self.items(name)
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in schemes or not parts.hostname:
                raise ConfigError(f"{name}: {url!r} is not a {'/'.join(schemes)} URL")
        return urls

    def url(self, name: str, default: str | None = None) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{name}: {value!r} is not an http(s) URL")
        return value.rstrip("/")
