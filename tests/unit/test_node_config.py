"""Node configuration: defaults, and every refusal names the variable at fault."""

from __future__ import annotations

import pytest

from fedai.protocol.keys import Keys
from fedai.service.config import ConfigError, Env
from fedai_node.config import MOCK_MODEL_ID, from_env
from fedai_node.runners import make_runner
from fedai_node.runners.http import HttpRunner
from fedai_node.runners.llama_cpp import LlamaCppRunner
from fedai_node.runners.mock import MockRunner
from fedai_node.runners.openai import OpenAIRunner
from fedai_node.sandbox import url_has_prefix

NODE = Keys.generate()
ROUTER = Keys.generate()


def base(**overrides: str) -> dict[str, str]:
    env = {"NODE_PRIVATE_KEY": NODE.secret_hex, "ROUTER_PUBLIC_KEY": ROUTER.npub, "NODE_RUNNER": "mock"}
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


def refusal(**overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        from_env(Env(base(**overrides)))
    return str(info.value)


def test_defaults() -> None:
    s = from_env(Env(base()))
    assert s.keys.pubkey == NODE.pubkey
    assert s.router_pubkeys == frozenset({ROUTER.pubkey})
    assert (s.host, s.port, s.endpoint) == ("127.0.0.1", 8090, "http://127.0.0.1:8090")
    assert s.router_endpoints == ()
    assert (s.runner, s.model_id, s.context_window) == ("mock", MOCK_MODEL_ID, 4096)
    assert (s.price_input_msat, s.price_output_msat) == (1000, 2000)
    assert s.job_types == ("text-generation",)
    assert (s.heartbeat_ms, s.capacity_max, s.max_prompt_bytes, s.max_tokens) == (5000, 4, 65536, 1024)
    assert (s.runner_timeout_ms, s.max_request_bytes, s.announce_s, s.clock_skew_s) == (60000, 262144, 300, 60)
    assert (s.sandbox_mode, s.require_payment, s.relays, s.db_url) == ("off", False, (), None)
    assert NODE.secret_hex not in repr(s)


def test_values_are_read() -> None:
    other = Keys.generate()
    s = from_env(
        Env(
            base(
                NODE_PRIVATE_KEY=NODE.nsec,
                ROUTER_PUBLIC_KEY=f"{ROUTER.pubkey}, {other.npub}",
                NODE_PORT="9001",
                ROUTER_ENDPOINT="http://127.0.0.1:8080/, http://r2:8080",
                NODE_RELAYS="ws://127.0.0.1:7777",
                NODE_JOB_TYPES="text-generation,chat",
                NODE_ENDPOINT="https://node.example/",
            )
        )
    )
    assert s.keys.pubkey == NODE.pubkey
    assert s.router_pubkeys == {ROUTER.pubkey, other.pubkey}
    assert s.port == 9001
    assert s.endpoint == "https://node.example"
    assert s.router_endpoints == ("http://127.0.0.1:8080", "http://r2:8080")
    assert s.relays == ("ws://127.0.0.1:7777",)
    assert s.job_types == ("text-generation", "chat")


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"NODE_PRIVATE_KEY": "<unset>"}, "NODE_PRIVATE_KEY"),
        ({"NODE_PRIVATE_KEY": "zz"}, "NODE_PRIVATE_KEY"),
        ({"ROUTER_PUBLIC_KEY": "<unset>"}, "ROUTER_PUBLIC_KEY"),
        ({"ROUTER_PUBLIC_KEY": "npub1notakey"}, "ROUTER_PUBLIC_KEY"),
        ({"ROUTER_PUBLIC_KEY": "ab" * 31}, "ROUTER_PUBLIC_KEY"),
        ({"NODE_RUNNER": "<unset>"}, "NODE_RUNNER"),
        ({"NODE_PORT": "eighty"}, "NODE_PORT"),
        ({"NODE_PORT": "70000"}, "NODE_PORT"),
        ({"NODE_HEARTBEAT_MS": "50"}, "NODE_HEARTBEAT_MS"),
        ({"NODE_RELAYS": "http://not-a-relay"}, "NODE_RELAYS"),
        ({"ROUTER_ENDPOINT": "ftp://router"}, "ROUTER_ENDPOINT"),
        ({"NODE_SANDBOX_MODE": "maybe"}, "NODE_SANDBOX_MODE"),
        ({"NODE_REQUIRE_PAYMENT": "perhaps"}, "NODE_REQUIRE_PAYMENT"),
        ({"NODE_REQUIRE_PAYMENT": "true"}, "NODE_REQUIRE_PAYMENT"),
        ({"NODE_LOG_LEVEL": "chatty"}, "NODE_LOG_LEVEL"),
        ({"NODE_RUNNER_URL": "not a url"}, "NODE_RUNNER_URL"),
    ],
)
def test_refusals_name_the_variable(overrides: dict[str, str], variable: str) -> None:
    assert variable in refusal(**overrides)


def test_secret_is_never_echoed() -> None:
    bad = "f" * 64  # out of range for secp256k1
    message = refusal(NODE_PRIVATE_KEY=bad)
    assert "NODE_PRIVATE_KEY" in message
    assert bad not in message


def test_unknown_runner_lists_the_available_ones() -> None:
    message = refusal(NODE_RUNNER="llamacpp")
    assert "NODE_RUNNER" in message
    assert "mock" in message


def test_sandbox_refuses_runner_outside_allowlist() -> None:
    message = refusal(NODE_SANDBOX_ALLOWED_RUNNERS="llamacpp,vllm")
    assert "NODE_RUNNER" in message
    assert "NODE_SANDBOX_ALLOWED_RUNNERS" in message
    assert from_env(Env(base(NODE_SANDBOX_ALLOWED_RUNNERS="mock", NODE_SANDBOX_MODE="restricted"))).runner == "mock"


def test_sandbox_restricted_needs_a_runner_allowlist() -> None:
    assert "NODE_SANDBOX_ALLOWED_RUNNERS" in refusal(NODE_SANDBOX_MODE="restricted")


def test_sandbox_refuses_runner_url_outside_prefixes() -> None:
    message = refusal(
        NODE_RUNNER_URL="http://127.0.0.1:8081.evil.example/v1",
        NODE_SANDBOX_ALLOWED_ENDPOINTS="http://127.0.0.1:8081",
    )
    assert "NODE_RUNNER_URL" in message
    assert "NODE_SANDBOX_ALLOWED_ENDPOINTS" in message
    s = from_env(
        Env(base(NODE_RUNNER_URL="http://127.0.0.1:8081/v1", NODE_SANDBOX_ALLOWED_ENDPOINTS="http://127.0.0.1:8081"))
    )
    assert s.runner_url == "http://127.0.0.1:8081/v1"


def test_url_prefix_matching() -> None:
    assert url_has_prefix("http://a:1", "http://a:1")
    assert url_has_prefix("http://a:1/", "http://a:1")
    assert url_has_prefix("http://a:1/v1/chat", "http://a:1/v1/")
    assert not url_has_prefix("http://a:12", "http://a:1")
    assert not url_has_prefix("http://a:1/v10", "http://a:1/v1")


def test_real_runners_need_a_url_and_discover_their_model() -> None:
    for runner in ("llama_cpp", "openai", "http"):
        message = refusal(NODE_RUNNER=runner)
        assert "NODE_RUNNER_URL" in message and runner in message
    s = from_env(Env(base(NODE_RUNNER="llama_cpp", NODE_RUNNER_URL="http://127.0.0.1:8080/")))
    assert (s.runner, s.runner_url, s.model_id) == ("llama_cpp", "http://127.0.0.1:8080", None)
    pinned = from_env(Env(base(NODE_RUNNER="openai", NODE_RUNNER_URL="http://vllm:8000", NODE_MODEL_ID="qwen")))
    assert pinned.model_id == "qwen"


def test_runner_api_key_and_mock_pacing() -> None:
    s = from_env(
        Env(base(NODE_RUNNER="openai", NODE_RUNNER_URL="http://vllm:8000", NODE_RUNNER_API_KEY="sk-very-secret"))
    )
    assert s.runner_api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(s)
    assert from_env(Env(base(NODE_MOCK_TOKEN_MS="25"))).mock_token_ms == 25
    assert "NODE_MOCK_TOKEN_MS" in refusal(NODE_MOCK_TOKEN_MS="-1")


def test_sandbox_applies_to_real_runners() -> None:
    allowed = {"NODE_SANDBOX_ALLOWED_RUNNERS": "llama_cpp", "NODE_SANDBOX_ALLOWED_ENDPOINTS": "http://127.0.0.1:8080"}
    message = refusal(NODE_RUNNER="llama_cpp", NODE_RUNNER_URL="http://10.0.0.5:8080", **allowed)
    assert "NODE_SANDBOX_ALLOWED_ENDPOINTS" in message
    assert "NODE_SANDBOX_ALLOWED_RUNNERS" in refusal(
        NODE_RUNNER="openai", NODE_RUNNER_URL="http://127.0.0.1:8080", **allowed
    )
    ok = from_env(Env(base(NODE_RUNNER="llama_cpp", NODE_RUNNER_URL="http://127.0.0.1:8080", **allowed)))
    assert ok.runner == "llama_cpp"


def test_make_runner_builds_the_named_runner() -> None:
    def built(**env: str) -> object:
        return make_runner(from_env(Env(base(**env))).runner_spec)

    assert isinstance(built(), MockRunner)
    llama = built(NODE_RUNNER="llama_cpp", NODE_RUNNER_URL="http://127.0.0.1:8080")
    assert isinstance(llama, LlamaCppRunner) and llama.http.base_url == "http://127.0.0.1:8080"
    openai = built(NODE_RUNNER="openai", NODE_RUNNER_URL="http://127.0.0.1:8000", NODE_RUNNER_TIMEOUT_MS="1500")
    assert isinstance(openai, OpenAIRunner) and openai.http.base_url == "http://127.0.0.1:8000/v1"
    assert openai.http.timeout_s == 1.5
    assert isinstance(built(NODE_RUNNER="http", NODE_RUNNER_URL="http://127.0.0.1:9000"), HttpRunner)
