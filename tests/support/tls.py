"""A self-signed TLS certificate for 127.0.0.1, made with the openssl command, as a Lightning node makes its own."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SelfSigned:
    cert: Path
    key: Path

    @property
    def files(self) -> tuple[str, str]:
        return str(self.cert), str(self.key)


def self_signed(directory: Path, name: str = "tls") -> SelfSigned:
    """A new EC key and a certificate for IP 127.0.0.1 valid for a day."""
    cert, key = directory / f"{name}.cert", directory / f"{name}.key"
    options = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1"
    argv = [
        "openssl",
        *options.split(),
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    ]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return SelfSigned(cert, key)
