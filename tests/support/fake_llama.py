"""Stand-ins for llama-server binaries, for tests that must not build llama.cpp.

- `serving`: a Python script that takes llama-server's arguments, answers `/health` 200 and `/completion`.
- `dying_on_completion`: the same, but it kills itself with SIGILL on the first `/completion` (a native
  binary on the wrong CPU that starts, then dies once a quantized model's kernels run).
- `sigill`: a shell script that kills itself with SIGILL at once (`kill -ILL $$`): exit status -4.
- `sigill_via_shell`: a shell script whose child dies with SIGILL; the shell exits 132 (128 + 4).
- `failing`: prints a load error and exits 1 (not an illegal instruction).
Core dumps are switched off in each, so a test leaves no `core` file behind.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

Writer = Callable[[Path], Path]  # writes a stand-in binary at the path and returns it

SERVER = """\
import http.server, json, os, resource, signal, sys
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
argv = sys.argv[1:]
port = int(argv[argv.index("--port") + 1])
DIE = {die}
print("stand-in llama-server", " ".join(argv), flush=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, {{"status": "ok"}})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if DIE:
            print("loading Q4_1 kernels", flush=True)
            os.kill(os.getpid(), signal.SIGILL)
        self._send(200, {{"content": " hi there", "tokens_predicted": 4}})

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""
SIGILL = "#!/bin/sh\nulimit -c 0\necho 'starting llama-server'\nkill -ILL $$\n"
SIGILL_VIA_SHELL = "#!/bin/sh\nulimit -c 0\nsh -c 'kill -ILL $$'\nexit $?\n"
FAILING = "#!/bin/sh\necho \"error: failed to load model '$2'\"\nexit 1\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def serving(path: Path) -> Path:
    return _write(path, f"#!{sys.executable}\n" + SERVER.format(die=False))


def dying_on_completion(path: Path) -> Path:
    return _write(path, f"#!{sys.executable}\n" + SERVER.format(die=True))


def sigill(path: Path) -> Path:
    return _write(path, SIGILL)


def sigill_via_shell(path: Path) -> Path:
    return _write(path, SIGILL_VIA_SHELL)


def failing(path: Path) -> Path:
    return _write(path, FAILING)
