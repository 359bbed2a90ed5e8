"""The HTTP plumbing REST wallet backends share: TLS with the configured certificate, no redirects, no proxies from
the environment, bounded answers, and transport failures as WalletUnavailable (never with a secret in the text)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fedai.payments.errors import WalletUnavailable
from fedai.payments.secret import Secret
from fedai.protocol.jsonguard import too_deep

MAX_BODY = 1 << 20  # a wallet's answer is small; a larger one is refused before it is held


@dataclass(frozen=True, slots=True)
class Reply:
    """A backend's answer: the HTTP status and the JSON documents of its body (one, or one per line)."""

    status: int
    documents: list[Any]

    @property
    def body(self) -> Any:
        """The single JSON document (None for an empty body)."""
        return self.documents[0] if self.documents else None


def tls_context(cert: Path | None) -> ssl.SSLContext:
    """Verification against `cert` (a self-signed node certificate), or the system's CAs without one."""
    return ssl.create_default_context(cafile=str(cert) if cert is not None else None)


class RestClient:
    """One backend's HTTP client. `name` prefixes every error message (e.g. "lnd at host:8080")."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        headers: Mapping[str, Secret],
        verify: ssl.SSLContext,
        timeout_s: float,
        max_body: int = MAX_BODY,
    ) -> None:
        self.name = name
        self._max_body = max_body
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={key: value.reveal() for key, value in headers.items()},
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,  # no proxy or CA bundle from the environment: the operator's configuration only
        )

    async def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> Reply:
        """Send one request and read its bounded answer; WalletUnavailable for anything but an HTTP answer."""
        timeout = httpx.Timeout(timeout_s) if timeout_s is not None else httpx.USE_CLIENT_DEFAULT
        try:
            async with self._http.stream(method, path, json=body, timeout=timeout) as response:
                raw = await self._read(response)
        except httpx.TimeoutException:
            raise WalletUnavailable(f"{self.name}: no answer in time", "timeout") from None
        except httpx.HTTPError as exc:
            raise WalletUnavailable(f"{self.name}: unreachable ({type(exc).__name__})", "unreachable") from None
        if 300 <= response.status_code < 400:
            raise WalletUnavailable(f"{self.name}: answered a redirect (HTTP {response.status_code})", "bad_reply")
        return Reply(response.status_code, self._documents(raw, response.status_code))

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")  # of the encoded body: a first, cheap refusal
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise WalletUnavailable(f"{self.name}: answer larger than {self._max_body} bytes", "bad_reply")
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():  # decoded (gzip, deflate…), counted as it expands
            total += len(chunk)
            if total > self._max_body:
                raise WalletUnavailable(f"{self.name}: answer larger than {self._max_body} bytes", "bad_reply")
            chunks.append(chunk)
        return b"".join(chunks)

    def _documents(self, raw: bytes, status: int) -> list[Any]:
        """The body as JSON: one document, or one per line (a streamed answer); nesting bounded before parsing."""
        if too_deep(raw):
            raise WalletUnavailable(f"{self.name}: answered JSON nested too deep", "bad_reply")
        try:
            text = raw.decode("utf-8").strip()
            if not text:
                return []
            try:
                return [json.loads(text)]
            except ValueError:
                return [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            raise WalletUnavailable(
                f"{self.name}: answered HTTP {status} with a body that is not JSON", "bad_reply"
            ) from None

    async def aclose(self) -> None:
        await self._http.aclose()
