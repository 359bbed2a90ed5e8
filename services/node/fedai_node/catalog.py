"""What the node serves: the runner's models under every name a request may use, and their latency estimates."""

from __future__ import annotations

from collections.abc import Sequence

from fedai.protocol.messages import InferenceRequest
from fedai_node.runners.base import Runner, RunnerError, RunnerModel

LATENCY_EWMA = 0.2  # weight of the newest sample in the advertised latency estimate
NOT_READY_RETRY_MS = 5000  # the Retry-After of a node that has no models yet


class ModelCatalog:
    """The models the runner listed, by id and by alias; empty (not ready) until `load` has succeeded.

    `primary` is the model `NODE_MODEL_ALIASES` name: `NODE_MODEL_ID` when the runner serves it, else its first
    model. `latency_ms` starts from one probe per model and follows served requests (an EWMA).
    """

    def __init__(self, runner: Runner, model_id: str | None, aliases: Sequence[str] = ()) -> None:
        self._runner = runner
        self._model_id = model_id
        self._aliases = tuple(aliases)
        self.models: dict[str, RunnerModel] = {}
        self.primary: str | None = None
        self.latency_ms: dict[str, float] = {}

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def served(self) -> list[RunnerModel]:
        """Each model once (aliases name a model already listed)."""
        return list({m.id: m for m in self.models.values()}.values())

    async def load(self) -> None:
        """List the runner's models and probe their latency. Raises `RunnerError` (or whatever the runner
        raised) while it is down or loading; the catalog is replaced only on success."""
        models = await self._runner.list_models()
        if not models:
            raise RunnerError(f"runner {self._runner.name!r} serves no models")
        served = {m.id: m for m in models}
        primary = self._model_id if self._model_id in served else models[0].id
        for alias in self._aliases:  # a request may name the model by an alias
            served.setdefault(alias, served[primary])
        self.latency_ms = {m.id: await self._probe_latency(m) for m in models}
        self.models, self.primary = served, primary

    async def _probe_latency(self, model: RunnerModel) -> float:
        probe = InferenceRequest(model=model.id, prompt="", max_tokens=1)
        try:
            return (await self._runner.estimate(probe)).latency_ms
        except RunnerError:
            return 0.0  # learnt from real requests instead

    def observe_latency(self, model: str, latency_ms: float) -> None:
        previous = self.latency_ms.get(model)
        self.latency_ms[model] = (
            latency_ms if not previous else (1 - LATENCY_EWMA) * previous + LATENCY_EWMA * latency_ms
        )
