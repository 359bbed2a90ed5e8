"""`python -m fedai_node`: read NODE_* settings, then serve until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

from fedai.observability.logging import setup_logging
from fedai.service.config import ConfigError, Env
from fedai.service.server import serve
from fedai_node.app import create_app
from fedai_node.config import from_env


def main() -> int:
    try:
        settings = from_env(Env())
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    setup_logging("node", settings.log_level)
    serve(create_app(settings), settings.host, settings.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
