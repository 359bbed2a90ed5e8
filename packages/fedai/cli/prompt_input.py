"""What `fedai infer` and `fedai quote` send as the prompt: PROMPT as one user chat message, `--prompt` raw text,
`--messages` a conversation (inline JSON, a file, or `-` for stdin). Both commands read it here, so a quote
prices exactly what the same words sent to `infer` carry."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fedai.protocol.messages import ChatMessage, QuoteRequest, estimate_tokens, prompt_material

EXPECTED = 'expected a non-empty JSON array of {"role", "content"} objects'


@dataclass(frozen=True)
class PromptInput:
    """Exactly one of a raw prompt or chat messages."""

    prompt: str | None = None
    messages: list[dict[str, str]] | None = None

    def fields(self) -> dict[str, Any]:
        """The request fields this input sets (`prompt` or `messages`)."""
        return {"prompt": self.prompt} if self.prompt is not None else {"messages": self.messages}

    def estimated_tokens(self) -> int:
        """The input tokens a router counts for this input when it checks a quote (4 bytes a token of the exact
        bytes metered as the prompt): a quote for fewer cannot pay for it."""
        messages = (
            None
            if self.messages is None
            else [ChatMessage(role=m["role"], content=m["content"]) for m in self.messages]
        )
        material = prompt_material(QuoteRequest(model="estimate", max_tokens=1, prompt=self.prompt, messages=messages))
        return estimate_tokens(len(material))


def _stdin_or(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _messages_text(value: str) -> str:
    """`--messages`: JSON given inline, `-` for stdin, else the path of a file holding it."""
    if value == "-":
        return sys.stdin.read()
    if value.lstrip().startswith(("[", "{")):
        return value
    try:
        return Path(value).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise click.BadParameter(f"neither JSON nor an existing file: {value!r}", param_hint="--messages") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {value!r}: {exc}", param_hint="--messages") from None


def parse_messages(text: str) -> list[dict[str, str]]:
    """A chat conversation from JSON text, or a usage error saying what was expected."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg}", param_hint="--messages") from None
    ok = isinstance(value, list) and value and all(_is_message(m) for m in value)
    if not ok:
        raise click.BadParameter(EXPECTED, param_hint="--messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("role"), str) and isinstance(value.get("content"), str)


def read_prompt(prompt_arg: str | None, prompt_opt: str | None, messages: str | None) -> PromptInput:
    """PROMPT (one user chat message), `--prompt` (raw text) or `--messages`; '-' reads stdin for each."""
    if messages is not None:
        return PromptInput(messages=parse_messages(_messages_text(messages)))
    if prompt_opt is not None:
        return PromptInput(prompt=_stdin_or(prompt_opt))
    if prompt_arg is not None:
        return PromptInput(messages=[{"role": "user", "content": _stdin_or(prompt_arg)}])
    raise click.UsageError("give exactly one of PROMPT, --prompt or --messages")


def exactly_one(names: str, *values: object) -> None:
    """A usage error unless exactly one of `values` is given."""
    if sum(v is not None for v in values) != 1:
        raise click.UsageError(f"give exactly one of {names}")
