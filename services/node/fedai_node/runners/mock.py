"""THE MOCK RUNNER: FOR TESTS AND DEMOS ONLY. It runs no model; its "output" is a deterministic string of
words picked by a hash. Never select it in production: `NODE_RUNNER` has no default for that reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncGenerator

from fedai.protocol.messages import InferenceRequest, estimate_tokens, prompt_material
from fedai_node.runners.base import Estimate, Runner, RunnerModel, RunnerResult, StreamItem, estimated_input_tokens

MOCK_MODEL_ID = "fedai-mock-1"
VOCABULARY = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip
MIN_WORDS = 8
WORD_SPREAD = 17  # output length = MIN_WORDS + digest[0] % WORD_SPREAD words (8..24), capped by max_tokens
_PIECE = re.compile(r"\s*\S+")


def _digest(model: str, material: bytes) -> bytes:
    return hashlib.sha256(model.encode() + material).digest()


def _truncate_at_stop(text: str, stops: list[str] | None) -> tuple[str, bool]:
    cut = min((i for s in stops or () if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def pieces(text: str) -> list[str]:
    """Split `text` into streamed deltas, one word each with its leading space; they join back to `text`."""
    parts: list[str] = _PIECE.findall(text)
    rest = text[sum(map(len, parts)) :]  # trailing whitespace (a stop string cut after a space)
    if rest:
        parts = [*parts[:-1], parts[-1] + rest] if parts else [rest]
    return parts


class MockRunner(Runner):
    """FOR TESTS AND DEMOS ONLY: deterministic fake inference, never echoing the prompt.

    The same (model, prompt) always yields the same words; `stop` truncates at the first stop string;
    `delay_ms` simulates the latency before the first word and `token_ms` the time each word takes, so tests
    can exercise capacity limits, timeouts, streaming and cancellation.
    """

    name = "mock"

    def __init__(self, model_id: str, context_window: int, delay_ms: int = 0, token_ms: int = 0) -> None:
        self.model_id = model_id
        self.context_window = context_window
        self.delay_ms = delay_ms
        self.token_ms = token_ms

    async def list_models(self) -> list[RunnerModel]:
        return [RunnerModel(self.model_id, self.context_window, self.context_window)]

    def answer(self, req: InferenceRequest) -> RunnerResult:
        """The whole answer, computed at once (the stream replays it word by word)."""
        material = prompt_material(req)
        digest = _digest(req.model, material)
        natural = MIN_WORDS + digest[0] % WORD_SPREAD
        count = min(req.max_tokens, natural)
        words = [VOCABULARY[b % len(VOCABULARY)] for b in digest[1 : 1 + count]]
        output, stopped = _truncate_at_stop(" ".join(words), req.stop)
        finish = "stop" if stopped or count < req.max_tokens else "length"
        return RunnerResult(
            output=output,
            finish_reason=finish,
            input_tokens=estimate_tokens(len(material)),
            output_tokens=len(output.split()),
        )

    async def stream(self, req: InferenceRequest) -> AsyncGenerator[StreamItem, None]:
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        result = self.answer(req)
        for piece in pieces(result.output):
            if self.token_ms:
                await asyncio.sleep(self.token_ms / 1000)
            yield piece
        yield result

    async def estimate(self, req: InferenceRequest) -> Estimate:
        return Estimate(
            input_tokens=estimated_input_tokens(req),
            max_output_tokens=min(req.max_tokens, MIN_WORDS + WORD_SPREAD - 1),
            latency_ms=float(self.delay_ms),
        )

    async def health(self) -> bool:
        return True
