"""THE MOCK RUNNER: FOR TESTS AND DEMOS ONLY. It runs no model; its "output" is a deterministic string of
words picked by a hash. Never select it in production: `NODE_RUNNER` has no default for that reason.
"""

from __future__ import annotations

import asyncio
import hashlib

from fedai.protocol.messages import InferenceRequest, estimate_tokens, prompt_material
from fedai_node.runners.base import Estimate, Runner, RunnerModel, RunnerResult

VOCABULARY = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip
MIN_WORDS = 8
WORD_SPREAD = 17  # output length = MIN_WORDS + digest[0] % WORD_SPREAD words (8..24), capped by max_tokens


def _digest(model: str, material: bytes) -> bytes:
    return hashlib.sha256(model.encode() + material).digest()


def _truncate_at_stop(text: str, stops: list[str] | None) -> tuple[str, bool]:
    cut = min((i for s in stops or () if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class MockRunner(Runner):
    """FOR TESTS AND DEMOS ONLY: deterministic fake inference, never echoing the prompt.

    The same (model, prompt) always yields the same words; `stop` truncates at the first stop string;
    `delay_ms` simulates runner latency so tests can exercise capacity limits and timeouts.
    """

    name = "mock"

    def __init__(self, model_id: str, context_window: int, delay_ms: int = 0) -> None:
        self.model_id = model_id
        self.context_window = context_window
        self.delay_ms = delay_ms

    async def list_models(self) -> list[RunnerModel]:
        return [RunnerModel(self.model_id, self.context_window, self.context_window)]

    async def infer(self, req: InferenceRequest) -> RunnerResult:
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
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

    async def estimate(self, req: InferenceRequest) -> Estimate:
        return Estimate(
            input_tokens=estimate_tokens(len(prompt_material(req))),
            max_output_tokens=min(req.max_tokens, MIN_WORDS + WORD_SPREAD - 1),
            latency_ms=float(self.delay_ms),
        )

    async def health(self) -> bool:
        return True
