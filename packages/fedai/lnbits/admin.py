"""Set up a fresh LNbits: the first install (the superuser), wallets, and funds for them.

A fresh LNbits redirects every route to `/first_install` until a superuser name and password are set
(`PUT /api/v1/auth/first_install`); that call and `POST /api/v1/auth` answer a bearer token. With it,
`POST /api/v1/account` creates a wallet (its id, admin key and invoice key) and `PUT /users/api/v1/balance`
credits one (the admin UI's "add funds", in sats). Keys and the token are secrets: never logged, not in reprs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

SUPERUSER = "fedai"
TIMEOUT_S = 30.0


class LnbitsAdminError(RuntimeError):
    """LNbits refused a set-up call; the message names the call and LNbits' `detail`."""


@dataclass(frozen=True)
class LnbitsWallet:
    """One LNbits wallet: the admin key spends, the invoice key only receives and reads."""

    url: str
    id: str
    name: str
    admin_key: str = field(repr=False)
    invoice_key: str = field(repr=False)

    def uri(self, *, admin: bool = True) -> str:
        """The wallet as `fedai.payments` opens it: `lnbits+http://host:port/?key=…` (admin key: can pay)."""
        scheme, _, rest = self.url.partition("://")
        return f"lnbits+{scheme}://{rest.rstrip('/')}/?key={self.admin_key if admin else self.invoice_key}"


class LnbitsAdmin:
    """The superuser's calls on one LNbits (`first_install` once, then `login` on later runs)."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def first_install(self, password: str | None = None, username: str = SUPERUSER) -> str:
        """Set the superuser of a fresh LNbits; returns the password (a random one unless given)."""
        password = password or secrets.token_urlsafe(18)
        body = {"username": username, "password": password, "password_repeat": password}
        self._token = self._call("PUT", "/api/v1/auth/first_install", body)["access_token"]
        return password

    def login(self, password: str, username: str = SUPERUSER) -> None:
        """Log the superuser in (an LNbits whose first install was done earlier)."""
        body = {"username": username, "password": password}
        self._token = self._call("POST", "/api/v1/auth", body)["access_token"]

    def create_wallet(self, name: str) -> LnbitsWallet:
        """A new wallet (of a new LNbits account) named `name`."""
        made = self._call("POST", "/api/v1/account", {"name": name})
        return LnbitsWallet(self.url, made["id"], made["name"], made["adminkey"], made["inkey"])

    def fund(self, wallet: LnbitsWallet, sats: int) -> None:
        """Credit `sats` to `wallet` out of thin air (FakeWallet's superuser top-up)."""
        if sats <= 0:
            raise ValueError("fund a wallet with a positive number of sats")
        self._call("PUT", "/users/api/v1/balance", {"id": wallet.id, "amount": sats}, bearer=True)

    def _call(self, method: str, path: str, body: dict[str, Any], *, bearer: bool = False) -> dict[str, Any]:
        headers = {}
        if bearer:
            if self._token is None:
                raise LnbitsAdminError(f"{method} {path} needs the superuser: call first_install or login first")
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise LnbitsAdminError(f"{method} {path}: {type(exc).__name__} talking to {self.url}") from None
        if response.status_code >= 300:
            raise LnbitsAdminError(f"{method} {path}: HTTP {response.status_code} {_detail(response)}")
        answer = response.json()
        if not isinstance(answer, dict):
            raise LnbitsAdminError(f"{method} {path}: expected a JSON object")
        return answer


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        detail = ""
    return str(detail)[:200]
