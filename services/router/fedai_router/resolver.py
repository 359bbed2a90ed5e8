"""DNS resolution for everything the router connects to or checks: bounded in concurrency and in time.

`getaddrinfo` blocks a thread until the system resolver answers, and a name an attacker controls can be made to
answer slowly. Lookups therefore run in a small thread pool of their own (never the event loop's shared default
pool), at most `concurrency` at once; a lookup that does not finish within `timeout_s`, waiting for a slot
included, raises `ResolveTimeout`. A slot is held until its thread really returns, so slow lookups can never
pile up more threads than the bound. The same resolver answers the heartbeat-time endpoint check
(`fedai_router.endpoints`) and the outbound connector (`fedai_router.outbound`), which is an aiohttp resolver.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
# (host, port, family, flags) -> getaddrinfo's list; tests replace it to simulate DNS answers (rebinding)
Lookup = Callable[[str, int, int, int], Sequence[AddrInfo]]


class ResolveTimeout(OSError):
    """A lookup did not finish in time (or waited too long for a free slot)."""

    def __init__(self) -> None:
        super().__init__(errno.ETIMEDOUT, "name resolution timed out")


def system_lookup(host: str, port: int, family: int, flags: int) -> Sequence[AddrInfo]:
    """The system resolver (blocking: runs in the resolver's threads)."""
    return socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM, flags=flags)


def _numeric_host(sockaddr: tuple[Any, ...], family: int) -> str:
    """The address as text; an IPv6 address with a scope keeps it (`fe80::1%eth0`), as connecting needs it."""
    if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
        host, _ = socket.getnameinfo(sockaddr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        return host
    return str(sockaddr[0])


class BoundedResolver(AbstractResolver):
    """getaddrinfo in `concurrency` threads of its own, each lookup within `timeout_s`."""

    def __init__(self, concurrency: int, timeout_s: float, lookup: Lookup = system_lookup) -> None:
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.lookup = lookup
        self.running = 0  # lookups in a thread now
        self.waiting = 0  # lookups waiting for a slot
        self._slots = asyncio.Semaphore(concurrency)
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fedai-dns")

    async def addresses(self, host: str, port: int, family: int = socket.AF_UNSPEC, flags: int = 0) -> list[str]:
        """The numeric addresses `host` resolves to. Raises OSError (`ResolveTimeout` when too slow)."""
        infos = await self._infos(host, port, family, flags)
        return [_numeric_host(info[4], info[0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """aiohttp's resolver interface (IP literals never get here: the connector's socket guard sees those)."""
        infos = await self._infos(host, port, family, socket.AI_ADDRCONFIG)
        results: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            if fam not in (socket.AF_INET, socket.AF_INET6) or (fam == socket.AF_INET6 and len(sockaddr) < 4):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=_numeric_host(sockaddr, fam),
                    port=int(sockaddr[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise OSError(errno.EADDRNOTAVAIL, "name has no usable address")
        return results

    async def _infos(self, host: str, port: int, family: int, flags: int) -> Sequence[AddrInfo]:
        loop = asyncio.get_running_loop()
        self.waiting += 1
        acquired = False
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._slots.acquire()
                acquired = True
                self.waiting -= 1
                self.running += 1
                try:
                    job = loop.run_in_executor(self._executor, self.lookup, host, port, family, flags)
                except BaseException:  # the pool is shut down: the router is stopping
                    self.running -= 1
                    self._slots.release()
                    raise
                job.add_done_callback(self._release)
                # shielded: on timeout the thread runs on and its slot stays taken until it returns
                return await asyncio.shield(job)
        except TimeoutError:
            raise ResolveTimeout() from None
        finally:
            if not acquired:
                self.waiting -= 1

    def _release(self, job: asyncio.Future[Sequence[AddrInfo]]) -> None:
        self.running -= 1
        self._slots.release()
        if not job.cancelled():
            job.exception()  # retrieved here, so a lookup nobody waits for any more logs no warning

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
