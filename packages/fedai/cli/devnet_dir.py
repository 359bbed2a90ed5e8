"""A devnet's data dir: where its keys, logs, Postgres data and devnet.json live, and the lock that makes it one's.

DATA_DIR/devnet.json   what other tools read (fedai.cli.devnet_file)
DATA_DIR/devnet.lock   held (flock) for the devnet's lifetime, with its pid
DATA_DIR/keys/         router.key, client.key, node-N.key, admin.token (mode 0700)
DATA_DIR/logs/         one log per process, started afresh on every run
DATA_DIR/pg/           the embedded PostgreSQL
DATA_DIR/lnbits/       `--pay`: LNbits' data, afresh on every run
DATA_DIR/wallets/      `--pay`: client.uri, router.uri, node-N.uri, each party's wallet spec (mode 0600, dir 0700)
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from fedai.cli.devnet_file import DEFAULT_DATA_DIR, FILE_NAME
from fedai.cli.keyfile import load_or_create_secret
from fedai.protocol.keys import Keys
from fedai.service.filelock import file_lock


@dataclass(frozen=True)
class DataDir:
    """The paths of one devnet's data dir (absolute), and what is done with them."""

    root: Path

    @classmethod
    def at(cls, path: Path) -> DataDir:
        return cls(path.expanduser().resolve())

    @property
    def pgdata(self) -> Path:
        return self.root / "pg"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def lnbits(self) -> Path:
        return self.root / "lnbits"

    @property
    def wallets(self) -> Path:
        return self.root / "wallets"

    def wallet_file(self, name: str) -> Path:
        """The wallet spec file of `name` (client, router, node-N) in a paying devnet."""
        return self.wallets / f"{name}.uri"

    @property
    def admin_token_file(self) -> Path:
        return self.keys / "admin.token"

    @property
    def devnet_file(self) -> Path:
        return self.root / FILE_NAME

    @property
    def is_default(self) -> bool:
        """The data dir the CLI finds on its own (so commands need no `--devnet`)."""
        return self.root == DEFAULT_DATA_DIR.resolve()

    def create(self) -> None:
        """Create the data dir, its logs and its keys directory (private to the user)."""
        for directory in (self.root, self.logs, self.keys):
            directory.mkdir(parents=True, exist_ok=True)
        self.keys.chmod(0o700)

    def key_file(self, name: str) -> Path:
        return self.keys / f"{name}.key"

    def key(self, name: str) -> Keys:
        """The keys of `name` (router, client, node-N), created on first use and kept across runs."""
        keys, _created = load_or_create_secret(self.key_file(name))
        return keys

    def fresh_log(self, name: str) -> Path:
        """The log path of process `name`, emptied: one run per log file, so tails show this run only."""
        path = self.logs / f"{name}.log"
        path.unlink(missing_ok=True)
        return path

    def lock(self) -> AbstractContextManager[None]:
        """One devnet per data dir: hold DATA_DIR/devnet.lock, or raise `LockHeld` naming the running one."""
        return file_lock(self.root / "devnet.lock", wait=False)
