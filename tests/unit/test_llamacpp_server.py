"""LlamaServer without llama.cpp: the command line, and start/stop against a stand-in that loads slowly.

The stand-in is a small Python script that takes llama-server's arguments and answers /health with 503
("Loading model") for its first requests, then 200, the way llama-server does while it loads a model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedai.llamacpp.server import LlamaServer, LlamaServerError, server_args

STAND_IN = """\
import http.server, json, sys
argv = sys.argv[1:]
port = int(argv[argv.index("--port") + 1])
loading = int(open(sys.argv[0] + ".loading").read())
print("stand-in llama-server", " ".join(argv), flush=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global loading
        status = 503 if loading > 0 else 200
        loading -= 1
        body = json.dumps({"status": "ok"} if status == 200 else {"error": {"message": "Loading model"}}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def stand_in(tmp_path: Path, *, loading_answers: int = 3, script: str = STAND_IN) -> Path:
    path = tmp_path / "llama-server"
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(0o755)
    (tmp_path / "llama-server.loading").write_text(str(loading_answers))
    return path


def test_server_args_split_the_context_across_slots() -> None:
    argv = server_args("/bin/llama-server", "/m/tiny.gguf", port=9000, parallel=4, slot_context=1024, model_id="tiny")
    expected = "/bin/llama-server -m /m/tiny.gguf --host 127.0.0.1 --port 9000 -t 1 -c 4096 --parallel 4 --alias tiny"
    assert argv == expected.split()
    plain = server_args("llama-server", "m.gguf", port=1, extra=["--metrics"])
    assert "--alias" not in plain and plain[-1] == "--metrics" and plain[plain.index("-c") + 1] == "2048"
    with pytest.raises(ValueError, match="positive"):
        server_args("llama-server", "m.gguf", port=1, parallel=0)


def test_the_url_needs_a_port() -> None:
    with pytest.raises(LlamaServerError, match="not been started"):
        _ = LlamaServer(Path("m.gguf"), binary=Path("llama-server")).url
    assert LlamaServer(Path("m.gguf"), binary=Path("llama-server"), port=1234).url == "http://127.0.0.1:1234"


def test_start_waits_through_503_until_200_then_stop_ends_it(tmp_path: Path) -> None:
    binary = stand_in(tmp_path, loading_answers=3)
    log = tmp_path / "logs" / "llama.log"
    with LlamaServer(tmp_path / "m.gguf", model_id="tiny", binary=binary, parallel=2, log_path=log) as server:
        assert server.health_statuses == [503, 200], "503 while loading, then 200"
        assert server.running() and server.pid is not None
        pid = server.pid
        text = log.read_text()
        assert "-c 4096 --parallel 2 --alias tiny" in text and f"--port {server.port}" in text
    assert not server.running()
    assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()


def test_a_server_that_exits_while_loading_is_reported_with_its_log(tmp_path: Path) -> None:
    script = "import sys\nprint(\"error: failed to load model 'm.gguf'\", flush=True)\nsys.exit(1)\n"
    binary = stand_in(tmp_path, script=script)
    server = LlamaServer(tmp_path / "m.gguf", binary=binary, log_path=tmp_path / "llama.log")
    with pytest.raises(LlamaServerError, match=r"exited before it was healthy(.|\n)*failed to load model"):
        server.start()
    assert not server.running()


def test_a_server_that_never_loads_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    binary = stand_in(tmp_path, loading_answers=10**9)
    server = LlamaServer(tmp_path / "m.gguf", binary=binary, log_path=tmp_path / "llama.log", ready_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(LlamaServerError, match=r"not healthy within 1 s \(HTTP 503\)"):
        server.start()
    assert time.monotonic() - started < 10
    assert not server.running()
    assert server.health_statuses == [503]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_the_server_dies_with_its_owner(tmp_path: Path) -> None:
    binary = stand_in(tmp_path, loading_answers=0)
    owner_script = f"""
import sys
from pathlib import Path
from fedai.llamacpp.server import LlamaServer
server = LlamaServer(Path("m.gguf"), binary=Path({str(binary)!r}), log_path=Path({str(tmp_path / "l.log")!r})).start()
print(server.pid, flush=True)
sys.stdin.readline()
"""
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": "packages"},
    )
    assert owner.stdout is not None
    child = int(owner.stdout.readline())
    owner.kill()  # SIGKILL: no atexit, no clean-up; only the parent-death signal can stop the child
    owner.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
