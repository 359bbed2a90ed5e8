"""fedai.protocol.openai_map: OpenAI request bodies to InferenceRequest, and every refusal a typed 400."""

from __future__ import annotations

from typing import Any

import pytest

from fedai.protocol.errors import ErrorCode, FedaiError
from fedai.protocol.messages import ChatMessage
from fedai.protocol.openai_map import DEFAULT_MAX_TOKENS, UnsupportedParameter, chat_request, completion_request


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **fields}


def refused(body: Any, *, text: bool = False) -> FedaiError:
    with pytest.raises(FedaiError) as info:
        (completion_request if text else chat_request)(body)
    assert (info.value.code, info.value.status) == (ErrorCode.INVALID_REQUEST, 400)
    return info.value


def test_a_chat_body_maps_field_by_field() -> None:
    request = chat_request(
        chat(
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            max_tokens=7,
            temperature=0.5,
            top_p=0.9,
            stop="\n",
            stream=True,
        )
    )
    assert request.model == "m" and request.prompt is None
    assert request.messages == [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")]
    assert (request.max_tokens, request.temperature, request.top_p) == (7, 0.5, 0.9)
    assert request.stop == ["\n"] and request.stream is True


def test_defaults_and_max_completion_tokens_precedence() -> None:
    assert chat_request(chat({"role": "user", "content": "x"})).max_tokens == DEFAULT_MAX_TOKENS
    both = chat({"role": "user", "content": "x"}, max_tokens=5, max_completion_tokens=9)
    assert chat_request(both).max_tokens == 9


def test_text_content_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "one "}, {"type": "text", "text": "two"}]
    request = chat_request(chat({"role": "user", "content": parts}))
    assert request.messages == [ChatMessage(role="user", content="one two")]


@pytest.mark.parametrize("role", ["hacker", "", None, 7, "USER"])
def test_a_role_outside_openais_is_refused(role: Any) -> None:
    err = refused(chat({"role": role, "content": "x"}))
    assert "role" in err.message


def test_a_message_without_a_role_is_refused() -> None:
    assert "role" in refused(chat({"content": "x"})).message


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "text"},  # text part without its text
        {"type": "text", "text": 5},
        "a bare string",
    ],
    ids=["image", "audio", "text-missing", "text-not-a-string", "not-an-object"],
)
def test_only_text_content_parts_are_accepted(part: Any) -> None:
    body = chat({"role": "user", "content": [{"type": "text", "text": "look:"}, part]})
    assert "text" in refused(body).message


@pytest.mark.parametrize("content", [5, {"type": "text", "text": "x"}, None])
def test_content_must_be_a_string_or_a_list_of_parts(content: Any) -> None:
    refused(chat({"role": "user", "content": content}))


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        {"messages": [{"role": "user", "content": "x"}]},
        chat(),
        {"model": "m", "messages": "x"},
        chat({"role": "user", "content": "x"}, max_tokens=0),
        chat({"role": "user", "content": "x"}, temperature=5),
    ],
    ids=["list", "string", "no-model", "no-messages", "messages-not-a-list", "max-tokens-0", "temperature"],
)
def test_malformed_chat_bodies_are_refused(body: Any) -> None:
    refused(body)


def test_a_completion_body_maps_its_prompt() -> None:
    request = completion_request({"model": "m", "prompt": "Say hi", "max_tokens": 8})
    assert (request.prompt, request.messages, request.max_tokens) == ("Say hi", None, 8)
    assert completion_request({"model": "m", "prompt": ["one prompt"]}).prompt == "one prompt"


@pytest.mark.parametrize("prompt", [["a", "b"], [1], 5, None])
def test_a_completion_takes_exactly_one_string_prompt(prompt: Any) -> None:
    refused({"model": "m", "prompt": prompt}, text=True)


TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("tools", [TOOL]),
        ("tool_choice", "required"),
        ("functions", [TOOL["function"]]),
        ("function_call", "auto"),
        ("logprobs", True),
    ],
)
def test_options_a_node_cannot_honour_are_refused_by_name(field: str, value: Any) -> None:
    err = refused(chat({"role": "user", "content": "x"}, **{field: value}))
    assert isinstance(err, UnsupportedParameter) and err.param == field
    assert err.message.startswith(f"{field}: ")
    text = refused({"model": "m", "prompt": "x", field: value}, text=True)
    assert isinstance(text, UnsupportedParameter) and text.param == field


@pytest.mark.parametrize(("field", "value"), [("n", 1), ("tools", []), ("tool_choice", "none"), ("logprobs", False)])
def test_their_neutral_values_ask_nothing_and_pass(field: str, value: Any) -> None:
    assert chat_request(chat({"role": "user", "content": "x"}, **{field: value})).model == "m"
