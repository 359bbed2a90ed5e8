"""`python -m fedai_node`: read NODE_* settings, then serve until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from fedai.service.server import run_service
from fedai_node.app import create_app
from fedai_node.config import from_env


def main() -> int:
    return run_service("node", from_env, create_app, lambda s: (s.host, s.port), lambda s: s.keys.npub)


if __name__ == "__main__":
    sys.exit(main())
