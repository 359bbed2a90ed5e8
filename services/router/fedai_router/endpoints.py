"""Node and peer endpoints: their shape, the address rule, and the early (heartbeat / announcement time) check.

Loopback, private, link-local and other non-global addresses are refused, as are DNS names that resolve to
them, unless ROUTER_ALLOW_PRIVATE_ENDPOINTS is on (docs/decisions.md#private-endpoints). The verdict here is early and
friendly (a registering node hears why); the guard that holds is `fedai_router.outbound`, which judges with
`is_public_address` every address the router is about to connect to, since a name can resolve differently by
then (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import time
from urllib.parse import urlsplit

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai_router.resolver import BoundedResolver, ResolveTimeout

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: the last 32 bits are an IPv4 address
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 SIIT
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated (RFC 4291), never a public destination
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated (RFC 3879), private in practice

PRIVATE_HINT = "set ROUTER_ALLOW_PRIVATE_ENDPOINTS=true on the router for local testing or a private network"


def parse_endpoint(url: str) -> tuple[str, int]:
    """Check the URL's shape; return (host, port). Pure."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint must be an http or https URL")
    if not parts.hostname:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint has no host")
    if parts.username is not None or parts.password is not None:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint must not carry credentials")
    if parts.query or parts.fragment:
        raise FedaiError(ErrorCode.INVALID_REQUEST, "endpoint must not have a query or fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and would reach (mapped, SIIT, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(address: str) -> bool:
    """True only for a globally routable unicast address. An address with a zone (`fe80::1%eth0`) is never
    public; IPv6 forms that carry an IPv4 address are judged by it; anything that does not parse (including
    legacy numeric IPv4 forms such as `2130706433` or `127.1`) is refused. Pure."""
    if "%" in address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return embedded.is_global and not embedded.is_multicast
        if ip in _IPV4_COMPATIBLE or ip in _SITE_LOCAL:
            return False
    return ip.is_global and not ip.is_multicast


def looks_like_ip(host: str) -> bool:
    """The host is written as an address, not a name (aiohttp's rule: it then connects without resolving). Pure."""
    return ":" in host or host.replace(".", "").isdigit()


def address_kind(address: str) -> str:
    """What a non-public address is, for a refusal: unspecified, loopback, link-local, private or non-public.
    Pure."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "non-public"
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip) or ip
    for kind in ("unspecified", "loopback", "link_local", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


def _private(url: str, how: str, addresses: list[str]) -> FedaiError:
    """The refusal of a non-public endpoint: which URL, what kind of address, and the variable that allows it."""
    kinds = sorted({address_kind(a) for a in addresses if not is_public_address(a)}) or ["non-public"]
    article = "an" if kinds[0][0] in "aeiou" else "a"
    return FedaiError(
        ErrorCode.FORBIDDEN, f"endpoint {url[:200]} {how} {article} {' and '.join(kinds)} address; {PRIVATE_HINT}"
    )


def check_shape(url: str, allow_private: bool) -> tuple[str, int]:
    """The URL's shape, and an address written in it judged at once (no DNS). Returns (host, port). Pure."""
    host, port = parse_endpoint(url)
    if not allow_private and looks_like_ip(host) and not is_public_address(host):
        raise _private(url, "is", [host])
    return host, port


class EndpointValidator:
    """Resolves and checks endpoints; caches verdicts briefly so heartbeats don't resolve DNS every beat."""

    def __init__(self, allow_private: bool, resolver: BoundedResolver, cache_ttl_s: float = 60.0) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, FedaiError | None]] = {}

    async def check(self, url: str) -> None:
        host, port = check_shape(url, self.allow_private)
        if self.allow_private or looks_like_ip(host):
            return
        now = time.monotonic()
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            if cached[1] is not None:
                raise cached[1]
            return
        error = await self._resolve_and_judge(url, host, port)
        self._cache[url] = (now + self._ttl, error)
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        if error is not None:
            raise error

    async def _resolve_and_judge(self, url: str, host: str, port: int) -> FedaiError | None:
        try:
            addresses = await self.resolver.addresses(host, port)
        except ResolveTimeout:  # not a verdict on the endpoint: not cached
            raise FedaiError(ErrorCode.UPSTREAM_TIMEOUT, "endpoint host did not resolve in time; try again") from None
        except (OSError, UnicodeError):
            return FedaiError(ErrorCode.INVALID_REQUEST, "endpoint host does not resolve")
        if not addresses:
            return FedaiError(ErrorCode.INVALID_REQUEST, "endpoint host does not resolve")
        if not all(is_public_address(address) for address in addresses):
            return _private(url, "resolves to", addresses)
        return None
