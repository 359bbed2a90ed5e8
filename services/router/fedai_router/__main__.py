"""`python -m fedai_router`: run the router configured from the environment."""

from __future__ import annotations

import sys

from fedai.service.server import run_service
from fedai_router.app import create_app
from fedai_router.config import RouterSettings


def main() -> int:
    return run_service("router", RouterSettings.from_env, create_app, lambda s: (s.host, s.port), lambda s: s.keys.npub)


if __name__ == "__main__":
    sys.exit(main())
