"""A paying devnet (`fedai devnet --pay`): LNbits, a funded wallet for every party, payment turned on.

LNbits runs with its FakeWallet funding source (fedai.lnbits: real BOLT11 invoices and preimages, payments
settled between its own wallets), installed once into its cached venv and started afresh on every run with its
data in DATA_DIR/lnbits. Each party gets its own wallet in it: the client, the router (its fee) and every node
(its share); each wallet's spec (`lnbits+http://…?key=<admin key>`, a secret) is written to
DATA_DIR/wallets/<party>.uri (mode 0600) and only its path is ever printed or passed on (ROUTER_WALLET and
NODE_WALLET accept a file). Each node keeps its single-use claims in a database of its own on the embedded
PostgreSQL (NODE_DB_URL), as an operator's node would. Amounts are whole satoshis, since LNbits invoices
nothing else: node prices in sats per token (devnet_plan.node_prices) and a flat router fee.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fedai.cli.devnet_dir import DataDir
from fedai.cli.devnet_file import LnbitsEntry
from fedai.llamacpp.cache import Progress
from fedai.lnbits import LnbitsAdmin, LnbitsServer, LnbitsWallet, ensure_lnbits

NETWORK = "bitcoin"  # FakeWallet signs its invoices with mainnet's prefix, lnbc…
ROUTER_FEE_MSAT = 2000  # ROUTER_FEE_BASE_MSAT, a whole number of sats (ROUTER_FEE_PPM 0: a ppm fee is not)
CLIENT_SATS = 100_000
PAYEE_SATS = 1_000  # the router's and each node's float (what they would refund from): not paid by the demo
CLIENT, ROUTER = "client", "router"


def node_name(index: int) -> str:
    return f"node-{index + 1}"


def write_wallet_file(path: Path, spec: str) -> None:
    """Write a wallet spec (a secret) readable by this user only, whatever mode the file had before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (spec + "\n").encode())
    finally:
        os.close(fd)


def database_url(dsn: str, name: str) -> str:
    """`dsn` with its database replaced by `name`."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _create_databases(dsn: str, names: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for name in names:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')  # names are ours: fedai_node_N
    finally:
        await conn.close()


def node_databases(dsn: str, nodes: int) -> list[str]:
    """A database per node on the devnet's PostgreSQL (created once, kept across runs); their DSNs. Each node
    migrates its own at start."""
    names = [f"fedai_node_{index + 1}" for index in range(nodes)]
    asyncio.run(_create_databases(dsn, names))
    return [database_url(dsn, name) for name in names]


@dataclass
class DevnetPayments:
    """LNbits and the parties' wallets for one run of a paying devnet; `stop()` ends LNbits. Idempotent."""

    data_dir: DataDir
    nodes: int
    server: LnbitsServer | None = None
    wallet_files: dict[str, Path] = field(default_factory=dict)
    node_dsns: list[str] = field(default_factory=list)

    def start_lnbits(self, *, timeout: float, progress: Progress) -> LnbitsServer:
        """Install LNbits if it is not cached yet (about a minute, once), then start it on fresh data."""
        install = ensure_lnbits(progress=progress)
        shutil.rmtree(self.data_dir.lnbits, ignore_errors=True)  # new wallets every run: no password to keep
        self.server = LnbitsServer(
            install,
            self.data_dir.lnbits / "data",
            log_path=self.data_dir.fresh_log("lnbits"),
            ready_timeout=max(timeout, 120.0),
        )
        self.server.start()  # `self.server` is set first, so `stop()` ends it even if this is interrupted
        return self.server

    def create_wallets(self) -> dict[str, int]:
        """The superuser, then a funded wallet per party, each spec in its file; party → sats funded."""
        assert self.server is not None
        funded = {CLIENT: CLIENT_SATS, ROUTER: PAYEE_SATS} | {node_name(i): PAYEE_SATS for i in range(self.nodes)}
        with LnbitsAdmin(self.server.url) as admin:
            admin.first_install()
            for party, sats in funded.items():
                wallet: LnbitsWallet = admin.create_wallet(f"devnet {party}")
                admin.fund(wallet, sats)
                path = self.data_dir.wallet_file(party)
                write_wallet_file(path, wallet.uri())
                self.wallet_files[party] = path
        return funded

    def create_node_databases(self, dsn: str) -> None:
        self.node_dsns = node_databases(dsn, self.nodes)

    def router_env(self) -> dict[str, str]:
        """Payment required, the router's fee invoiced from its own wallet."""
        return {
            "ROUTER_REQUIRE_PAYMENT": "true",
            "ROUTER_WALLET": str(self.wallet_files[ROUTER]),
            "ROUTER_LN_NETWORK": NETWORK,
            "ROUTER_FEE_BASE_MSAT": str(ROUTER_FEE_MSAT),
            "ROUTER_FEE_PPM": "0",
        }

    def node_env(self, index: int) -> dict[str, str]:
        """Payment required, the node's share invoiced from its own wallet, its claims in its own database."""
        return {
            "NODE_REQUIRE_PAYMENT": "true",
            "NODE_WALLET": str(self.wallet_files[node_name(index)]),
            "NODE_LN_NETWORK": NETWORK,
            "NODE_DB_URL": self.node_dsns[index],
        }

    def entry(self) -> LnbitsEntry:
        """What devnet.json says about the wallets (paths only: the specs stay in their files)."""
        assert self.server is not None and self.server.log_path is not None
        files = {party: str(path) for party, path in self.wallet_files.items()}
        return LnbitsEntry(url=self.server.url, network=NETWORK, log=str(self.server.log_path), wallet_files=files)

    def running(self) -> bool:
        return self.server is not None and self.server.running()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
