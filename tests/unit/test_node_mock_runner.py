"""The MOCK runner (tests and demos only): deterministic, never echoes the prompt, honours stop."""

from __future__ import annotations

import hashlib
import time

from fedai.protocol.messages import ChatMessage, InferenceRequest, estimate_tokens
from fedai_node.runners import RunnerResult
from fedai_node.runners.mock import MIN_WORDS, VOCABULARY, WORD_SPREAD, MockRunner, pieces

PROMPT = "Quixotic zephyrs vex the jabberwock; repeat me if you dare"


def request(**overrides: object) -> InferenceRequest:
    fields: dict[str, object] = {"model": "fedai-mock-1", "prompt": PROMPT, "max_tokens": 64}
    fields.update(overrides)
    return InferenceRequest(**fields)  # type: ignore[arg-type]


async def test_same_request_same_output() -> None:
    runner = MockRunner("fedai-mock-1", 4096)
    first = await runner.infer(request())
    second = await runner.infer(request())
    assert first == second
    other = await runner.infer(request(prompt=PROMPT + "!"))
    assert other.output != first.output


async def test_output_is_vocabulary_words_and_not_the_prompt() -> None:
    result = await MockRunner("fedai-mock-1", 4096).infer(request())
    words = result.output.split()
    assert set(words) <= set(VOCABULARY)
    assert PROMPT not in result.output
    assert not {w.lower().strip(";") for w in PROMPT.split()} & set(words)
    digest = hashlib.sha256(b"fedai-mock-1" + PROMPT.encode()).digest()
    assert len(words) == MIN_WORDS + digest[0] % WORD_SPREAD
    assert result.output_tokens == len(words)
    assert result.input_tokens == estimate_tokens(len(PROMPT.encode()))
    assert result.finish_reason == "stop"


async def test_max_tokens_caps_output_with_length() -> None:
    result = await MockRunner("fedai-mock-1", 4096).infer(request(max_tokens=3))
    assert result.output_tokens == 3
    assert len(result.output.split()) == 3
    assert result.finish_reason == "length"


async def test_stop_truncates_at_first_stop_string() -> None:
    runner = MockRunner("fedai-mock-1", 4096)
    full = (await runner.infer(request())).output
    words = full.split()
    stop_word = words[3]
    cut = full.index(stop_word)
    result = await runner.infer(request(stop=["zzz-not-there", stop_word]))
    assert result.output == full[:cut]
    assert result.finish_reason == "stop"
    assert result.output_tokens == len(full[:cut].split())


async def test_messages_are_hashed_as_prompt_material() -> None:
    runner = MockRunner("fedai-mock-1", 4096)
    chat = request(prompt=None, messages=[ChatMessage(role="user", content=PROMPT)])
    a = await runner.infer(chat)
    b = await runner.infer(chat)
    assert a == b
    assert PROMPT not in a.output
    assert a.input_tokens > estimate_tokens(len(PROMPT.encode()))  # the JSON framing counts too


async def test_model_is_part_of_the_seed() -> None:
    runner = MockRunner("fedai-mock-1", 4096)
    assert (await runner.infer(request())).output != (await runner.infer(request(model="other"))).output


async def test_models_estimate_health() -> None:
    runner = MockRunner("fedai-mock-1", 2048, delay_ms=25)
    [model] = await runner.list_models()
    assert (model.id, model.context_window) == ("fedai-mock-1", 2048)
    estimate = await runner.estimate(request(max_tokens=5))
    assert estimate.max_output_tokens == 5
    assert estimate.latency_ms == 25
    assert await runner.health() is True


async def test_stream_yields_words_then_the_infer_result() -> None:
    runner = MockRunner("fedai-mock-1", 4096)
    items = [item async for item in runner.stream(request(stop=["zzz"]))]
    *deltas, result = items
    assert isinstance(result, RunnerResult)
    assert result == await runner.infer(request(stop=["zzz"]))
    assert all(isinstance(d, str) and len(d.split()) == 1 for d in deltas)
    assert "".join(str(d) for d in deltas) == result.output
    assert len(deltas) == result.output_tokens


def test_pieces_join_back_including_trailing_space() -> None:
    assert pieces("alpha bravo ") == ["alpha", " bravo "]
    assert pieces("alpha") == ["alpha"]
    assert pieces(" ") == [" "]
    assert pieces("") == []


async def test_token_ms_paces_the_words() -> None:
    runner = MockRunner("fedai-mock-1", 4096, token_ms=30)
    stamps = [time.perf_counter() async for item in runner.stream(request(max_tokens=5)) if isinstance(item, str)]
    assert len(stamps) == 5
    assert stamps[-1] - stamps[0] >= 4 * 0.03 * 0.9
