"""`devnet.json`: what a running devnet tells other tools (docs/decisions.md#devnet). Read, write, find."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec

FILE_NAME = "devnet.json"
DEFAULT_DATA_DIR = Path(".fedai")


class DevnetFileError(ValueError):
    """devnet.json is missing or malformed."""


class RouterEntry(msgspec.Struct, kw_only=True):
    url: str
    pubkey: str
    npub: str


class NodeEntry(msgspec.Struct, kw_only=True):
    url: str
    pubkey: str
    npub: str
    model: str


class LlamaEntry(msgspec.Struct, kw_only=True):
    """The llama-server the devnet's nodes share (runner `llama`)."""

    url: str
    model: str  # the model id it serves (what nodes announce)
    log: str


class LnbitsEntry(msgspec.Struct, kw_only=True):
    """The LNbits (FakeWallet) a paying devnet (`--pay`) runs: every party's wallet lives in it."""

    url: str
    network: str  # the Lightning network its invoices are on (FakeWallet: `bitcoin`, lnbc…)
    log: str
    wallet_files: dict[str, str]  # party (client, router, node-N) → its wallet spec file (mode 0600)


class DevnetInfo(msgspec.Struct, kw_only=True):
    """The devnet's addresses, identities, client key path, logs and the pids of what it started."""

    relay_url: str
    database_url: str
    router: RouterEntry
    nodes: list[NodeEntry]
    client_key_file: str
    logs_dir: str
    pids: dict[str, int]
    data_dir: str = ""
    started_at: float = 0.0
    runner: str = "mock"  # `llama` (one shared llama-server) or the nodes' NODE_RUNNER
    llama: LlamaEntry | None = None
    admin_token_file: str = ""  # the router's operator token (mode 0600): `fedai status` etc. send it
    client_wallet_file: str = ""  # `--pay`: the client's wallet spec (mode 0600), for `--wallet`
    lnbits: LnbitsEntry | None = None  # `--pay`: the wallet server


def devnet_path(location: Path) -> Path:
    """`location` may be the devnet's data dir or the devnet.json file itself."""
    return location / FILE_NAME if location.is_dir() or location.suffix != ".json" else location


def write_devnet(data_dir: Path, info: DevnetInfo) -> Path:
    """Write DATA_DIR/devnet.json atomically (readers never see half a file)."""
    path = data_dir / FILE_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".devnet-", suffix=".json", dir=data_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(msgspec.json.format(msgspec.json.encode(info), indent=2) + b"\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_devnet(location: Path) -> DevnetInfo:
    """Read and validate a devnet.json (from its directory or its own path)."""
    path = devnet_path(location)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DevnetFileError(f"{path} not found (is `fedai devnet` running with that data dir?)") from None
    except OSError as exc:
        raise DevnetFileError(f"{path}: {exc.strerror}") from None
    try:
        return msgspec.json.decode(data, type=DevnetInfo)
    except msgspec.DecodeError as exc:
        raise DevnetFileError(f"{path} is not a valid devnet file: {exc}") from None


def default_devnet() -> Path | None:
    """The devnet to use when none is named: `$FEDAI_DATA_DIR/devnet.json` or `.fedai/devnet.json`, if present."""
    data_dir = Path(os.environ.get("FEDAI_DATA_DIR") or DEFAULT_DATA_DIR)
    path = data_dir / FILE_NAME
    return path if path.is_file() else None
