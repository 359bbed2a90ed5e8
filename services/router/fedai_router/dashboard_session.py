"""Dashboard sessions (runbooks/admin.md#dashboard): after a NIP-98 login by a ROUTER_ADMIN_KEYS key, a short-lived
cookie `<payload>.<mac>` whose payload names the operator, its expiry and the session's CSRF token. The MAC key is
derived from the router's secret key, so every replica (same key) accepts it and nothing is stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "fedai_admin"
SESSION_S = 900  # 15 minutes: log in again after that


@dataclass(frozen=True, slots=True)
class Session:
    operator: str  # pubkey hex
    expires: int  # unix s
    csrf: str  # sent back in every form; a cross-site page cannot read it


class Sessions:
    def __init__(self, secret_hex: str, *, ttl_s: int = SESSION_S) -> None:
        self._key = hashlib.sha256(b"fedai-admin-session\x00" + bytes.fromhex(secret_hex)).digest()
        self.ttl_s = ttl_s

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def issue(self, operator: str, now: float | None = None) -> tuple[str, Session]:
        at = int(time.time() if now is None else now)
        session = Session(operator, at + self.ttl_s, secrets.token_urlsafe(24))
        raw = json.dumps({"o": session.operator, "e": session.expires, "c": session.csrf}).encode()
        payload = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return f"{payload}.{self._mac(payload.encode())}", session

    def read(self, cookie: str | None, operators: frozenset[str], now: float | None = None) -> Session | None:
        """The session a cookie carries if its MAC is ours, it has not expired, and its operator is still one."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1024:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(payload.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["o"]), int(data["e"]), str(data["c"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires < (time.time() if now is None else now) or session.operator not in operators:
            return None
        return session
