"""What a devnet will run, decided before anything starts: its options, ports, node prices and llama slots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedai.cli.devnet_file import DEFAULT_DATA_DIR
from fedai.cli.processes import free_port

HOST = "127.0.0.1"
DEMO_PROMPT = "Hello from the fedai devnet!"
LLAMA = "llama"  # the devnet's own runner name: one shared llama-server, nodes on NODE_RUNNER=llama_cpp
LLAMA_NODE_RUNNER = "llama_cpp"
LLAMA_MODELS = ("smollm2", "tiny")
LLAMA_PROMPT = "What is 2+2?"
NODE_CAPACITY = 4  # the node's default NODE_CAPACITY_MAX; llama-server gets nodes × capacity slots


@dataclass(frozen=True)
class DevnetOptions:
    data_dir: Path = DEFAULT_DATA_DIR
    nodes: int = 2
    runner: str = LLAMA
    model: str = "smollm2"
    base_port: int | None = None
    demo: bool = False
    once: bool = False
    timeout: float = 60.0
    prompt: str | None = None  # None: a prompt that suits the runner
    pay: bool = False  # LNbits, a funded wallet per party, payment required (fedai.cli.devnet_pay)

    @property
    def uses_llama(self) -> bool:
        """`llama` (or the node runner's own name, `llama_cpp`): the devnet runs the llama-server."""
        return self.runner in (LLAMA, LLAMA_NODE_RUNNER)

    @property
    def node_runner(self) -> str:
        """NODE_RUNNER for every node."""
        return LLAMA_NODE_RUNNER if self.uses_llama else self.runner

    @property
    def demo_prompt(self) -> str:
        if self.prompt is not None:
            return self.prompt
        return LLAMA_PROMPT if self.uses_llama else DEMO_PROMPT


@dataclass(frozen=True)
class LlamaPlan:
    """What the devnet's llama-server will run: the binary, the model file and the id nodes announce."""

    binary: Path
    model: Path
    model_id: str


@dataclass(frozen=True)
class Ports:
    relay: int  # 0: the relay picks a free port and prints its URL
    router: int
    nodes: list[int]
    llama: int = 0  # 0: not planned


def plan_ports(base_port: int | None, nodes: int) -> Ports:
    """With a base port P: relay P, router P+1, node i at P+2+i, llama-server after the nodes; else free ports."""
    if base_port is not None:
        return Ports(base_port, base_port + 1, [base_port + 2 + i for i in range(nodes)], base_port + 2 + nodes)
    return Ports(0, free_port(HOST), [free_port(HOST) for _ in range(nodes)], free_port(HOST))


def node_capacity(environ: dict[str, str]) -> int:
    """Each node's capacity: NODE_CAPACITY_MAX from the environment the nodes inherit, else the default."""
    value = environ.get("NODE_CAPACITY_MAX", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else NODE_CAPACITY


def llama_parallel(nodes: int, capacity: int = NODE_CAPACITY) -> int:
    """llama-server slots: enough for every node to use its whole capacity at once."""
    return max(1, nodes * capacity)


def node_prices(index: int, *, pay: bool = False) -> tuple[int, int]:
    """Different prices per node (msat per 1k input/output tokens) so the scheduler has a real choice.

    A paying devnet prices in whole satoshis per token (LNbits invoices whole satoshis, so every share must be
    a multiple of 1000 msat): 1 and 2 sat per input and output token for node 1, twice that for node 2, …
    """
    if pay:
        return 1_000_000 * (index + 1), 2_000_000 * (index + 1)
    return 1000 + 500 * index, 2000 + 1000 * index
