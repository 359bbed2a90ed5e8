"""Column arrays of the nodes serving one model, kept current by the registry, so ranking thousands of nodes
is a few vectorised numpy operations instead of a Python loop (bench/scheduler.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from fedai.protocol.messages import DEFAULT_JOB_TYPE, ModelInfo
from fedai_router.node_state import NodeState

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
U = npt.NDArray[np.uint64]


def _grow(column: npt.NDArray[np.generic], size: int) -> npt.NDArray[np.generic]:
    out = np.zeros(size, dtype=column.dtype)
    out[: len(column)] = column
    return out


COMPACT_ABOVE = 64  # rows in use (live or freed) from which a mostly empty table is packed


class ModelTable:
    """One row per node serving `model` (by id or alias). Freed rows are reused; `alive` marks the live ones.
    A table that falls below a quarter full is packed, so its columns shrink with the nodes it holds."""

    # descriptor columns
    input_msat: F
    output_msat: F
    max_tokens: F
    context_window: F
    latency_est_ms: F
    default_job: B
    tiebreak: U
    # changing columns (synced from NodeState)
    alive: B
    capacity: F
    last_seen: F
    announced: B  # only announced on a relay (longer freshness TTL)
    verified: B
    load: F
    cooldown_until: F
    held: B  # drained or banned by an operator
    reliability: F
    latency_obs_ms: F
    latency_samples: F
    trust: F

    _COLUMNS = (
        "input_msat",
        "output_msat",
        "max_tokens",
        "context_window",
        "latency_est_ms",
        "default_job",
        "tiebreak",
        "alive",
        "capacity",
        "last_seen",
        "announced",
        "verified",
        "load",
        "cooldown_until",
        "held",
        "reliability",
        "latency_obs_ms",
        "latency_samples",
        "trust",
    )
    _DTYPES: ClassVar[dict[str, type[np.generic]]] = {
        "default_job": np.bool_,
        "alive": np.bool_,
        "announced": np.bool_,
        "verified": np.bool_,
        "held": np.bool_,
        "tiebreak": np.uint64,
    }

    def __init__(self, model: str, size: int = 4) -> None:
        self.model = model
        self.n = 0  # rows in use (live or freed)
        self.nodes: list[NodeState | None] = []
        self.infos: list[ModelInfo | None] = []
        self.row_of: dict[str, int] = {}
        self._free: list[int] = []
        for name in self._COLUMNS:
            setattr(self, name, np.zeros(size, dtype=self._DTYPES.get(name, np.float64)))

    def __len__(self) -> int:
        return len(self.row_of)

    def rows(self) -> Iterator[tuple[int, NodeState, ModelInfo]]:
        for row in self.row_of.values():
            node, info = self.nodes[row], self.infos[row]
            assert node is not None and info is not None
            yield row, node, info

    def _new_row(self) -> int:
        if self._free:
            return self._free.pop()
        if self.n == len(self.alive):
            for name in self._COLUMNS:
                setattr(self, name, _grow(getattr(self, name), 2 * self.n))
        self.nodes.append(None)
        self.infos.append(None)
        self.n += 1
        return self.n - 1

    def upsert(self, node: NodeState, info: ModelInfo) -> int:
        """Place or refresh a node's row: descriptor columns, then everything that changes."""
        row = self.row_of.get(node.pubkey)
        if row is None:
            row = self.row_of[node.pubkey] = self._new_row()
        self.nodes[row], self.infos[row] = node, info
        self.tiebreak[row] = int(node.pubkey[:16], 16)
        self.input_msat[row] = info.pricing.input_msat
        self.output_msat[row] = info.pricing.output_msat
        self.max_tokens[row] = info.max_tokens
        self.context_window[row] = info.context_window
        self.latency_est_ms[row] = info.latency_estimate_ms
        self.default_job[row] = DEFAULT_JOB_TYPE in info.job_types
        self.sync(row, node)
        return row

    def sync(self, row: int, node: NodeState) -> None:
        """Copy the node's changing state (freshness, load, health, trust) into its row."""
        health = node.health
        self.alive[row] = True
        self.capacity[row] = node.capacity
        self.last_seen[row] = node.last_seen
        self.announced[row] = not node.heartbeat
        self.verified[row] = node.verified
        self.load[row] = node.load
        self.cooldown_until[row] = health.blocked_until()
        self.held[row] = node.held
        self.reliability[row] = health.reliability
        self.latency_obs_ms[row] = health.latency_ms if health.latency_ms is not None else 0.0
        self.latency_samples[row] = health.latency_samples
        self.trust[row] = node.trust

    def remove(self, pubkey: str) -> None:
        row = self.row_of.pop(pubkey, None)
        if row is not None:
            self.alive[row] = False
            self.nodes[row] = None
            self.infos[row] = None
            self._free.append(row)
            if self.n > COMPACT_ABOVE and 4 * len(self.row_of) < self.n:
                self.compact()

    def compact(self) -> None:
        """Move the live rows to the front, in order, and shrink the columns to twice their number."""
        live = sorted(self.row_of.values())
        size = max(4, 2 * len(live))
        for name in self._COLUMNS:
            column = getattr(self, name)
            packed = np.zeros(size, dtype=column.dtype)
            packed[: len(live)] = column[live]
            setattr(self, name, packed)
        self.nodes = [self.nodes[r] for r in live]
        self.infos = [self.infos[r] for r in live]
        self.row_of = {node.pubkey: row for row, node in enumerate(self.nodes) if node is not None}
        self._free = []
        self.n = len(live)
