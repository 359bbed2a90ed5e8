"""Container health check: GET $FEDAI_HEALTH_URL answers 200 (exit 0), else exit 1; or, with a host:port in
$FEDAI_HEALTH_TCP, that port accepts a connection (the relay). Standard library only."""

import os
import socket
import sys
import urllib.request

tcp = os.environ.get("FEDAI_HEALTH_TCP", "")
try:
    if tcp:
        host, port = tcp.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).close()
    else:
        url = os.environ.get("FEDAI_HEALTH_URL", "http://127.0.0.1:8080/health")
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - the container's own loopback
            sys.exit(0 if answer.status == 200 else 1)
except (OSError, ValueError) as exc:
    print(f"unhealthy: {exc}")
    sys.exit(1)
