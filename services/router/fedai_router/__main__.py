"""`python -m fedai_router`: run the router configured from the environment."""

from __future__ import annotations

import sys

from fedai.observability.logging import setup_logging
from fedai.service.config import ConfigError
from fedai.service.server import serve
from fedai_router.app import create_app
from fedai_router.config import RouterSettings


def main() -> int:
    try:
        settings = RouterSettings.from_env()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    setup_logging("router", settings.log_level)
    serve(create_app(settings), settings.host, settings.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
