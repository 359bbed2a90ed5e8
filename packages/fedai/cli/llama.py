"""`fedai llama build|model|serve`: a local llama.cpp for tests and the demo (see docs/runners.md).

`build` compiles `llama-server` once per version into the cache (portable unless `--native`) and smoke-tests
it on a model, `model` caches a test or demo GGUF, and `serve` runs `llama-server` on one of them in the
foreground until Ctrl-C. Progress goes to stderr, so
`--json` output on stdout stays one document.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from fedai.cli.extras import needs_extra
from fedai.cli.output import err_console, fail, print_json
from fedai.cli.processes import run_foreground
from fedai.llamacpp import (
    DEFAULT_VERSION,
    MODELS,
    LlamaBuildError,
    ModelError,
    ensure_llama_server,
    ensure_model,
    model_spec,
    server_args,
)
from fedai.llamacpp.build import NATIVE_ENV, build_percent, native_requested
from fedai.llamacpp.cpu import cpu_fingerprint
from fedai.llamacpp.server import DEFAULT_PARALLEL, DEFAULT_SLOT_CONTEXT

DEFAULT_PORT = 8085
PERCENT_STEP = 10  # without a terminal, print every 10% of the build rather than every 1%


def progress_printer(console: Console, status: Status | None = None, *, prefix: str = "") -> Callable[[str], None]:
    """A progress sink: milestones as dim lines; build percentages in `status` on a terminal, else every 10%."""
    last = -PERCENT_STEP

    def show(line: str) -> None:
        nonlocal last
        percent = _percent(line)
        if percent is None:
            console.print(f"[dim]{prefix}{escape(line)}[/dim]", highlight=False, soft_wrap=True)
        elif status is not None and console.is_terminal:
            status.update(f"{prefix}{line}…")
        elif percent >= last + PERCENT_STEP or percent == 100:
            last = percent
            console.print(f"[dim]{prefix}{escape(line)}[/dim]", highlight=False, soft_wrap=True)

    return show


def _percent(line: str) -> int | None:
    head, _, tail = line.rpartition(": ")
    if not head.startswith("compiling") or not tail.endswith("%"):
        return None
    return build_percent(f"[{tail}]")


def resolve_model(model: str) -> tuple[Path, str]:
    """A model name (`tiny`, `smollm2`) → its cached file and id; a path → itself and its file stem."""
    if model in MODELS:
        return ensure_model(model, progress=progress_printer(err_console)), model_spec(model).model_id
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelError(f"{model!r} is neither a known model ({', '.join(MODELS)}) nor a GGUF file")
    return path, path.stem


@click.group("llama")
def llama_group() -> None:
    """Local llama.cpp for tests and the demo: build llama-server, cache models, serve one.

    Everything is cached in $FEDAI_CACHE_DIR (default ~/.cache/fedai); FEDAI_LLAMA_SERVER=/path uses an
    existing llama-server instead of building one; FEDAI_LLAMA_NATIVE=1 builds for this CPU only.
    """


native_option = click.option(
    "--native/--portable",
    "native",
    default=None,
    help=f"Build with -march=native for this CPU only, or portable (default: ${NATIVE_ENV}, else portable).",
)


@llama_group.command("build")
@click.option(
    "--version",
    "version",
    default=DEFAULT_VERSION,
    show_default=True,
    help="llama-cpp-python sdist whose vendored llama.cpp is built.",
)
@native_option
@click.option(
    "--model",
    "model",
    default="tiny",
    show_default=True,
    help=f"Smoke-test the binary on this model: {' | '.join(sorted(MODELS))} | PATH to a .gguf file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@needs_extra("llama")
def build_cmd(version: str, native: bool | None, model: str, as_json: bool) -> None:
    """Build llama-server once (a few minutes), smoke-test it on a model, print the cached binary's path."""
    try:
        wants_native = native_requested() if native is None else native
        path_to_model, _ = resolve_model(model)
        with err_console.status("building llama-server…") as status:
            say = progress_printer(err_console, status)
            path = ensure_llama_server(version, model=path_to_model, native=wants_native, progress=say)
    except (LlamaBuildError, ModelError) as exc:
        fail(str(exc))
    if as_json:
        print_json(
            {
                "path": str(path),
                "version": version,
                "bytes": path.stat().st_size,
                "native": wants_native,
                "cpu_fingerprint": cpu_fingerprint(),
                "model": str(path_to_model),
            }
        )
    else:
        click.echo(str(path))


@llama_group.command("model")
@click.argument("name", type=click.Choice(sorted(MODELS)))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@needs_extra("llama")
def model_cmd(name: str, as_json: bool) -> None:
    """Cache a model (`tiny`: generated test model; `smollm2`: SmolLM2-135M-Instruct) and print its path."""
    try:
        path = ensure_model(name, progress=progress_printer(err_console))
    except ModelError as exc:
        fail(str(exc))
    spec = model_spec(name)
    if as_json:
        print_json(
            {
                "name": name,
                "model_id": spec.model_id,
                "path": str(path),
                "bytes": path.stat().st_size,
                "description": spec.description,
            }
        )
    else:
        click.echo(str(path))


@llama_group.command("serve")
@click.option(
    "--model",
    "model",
    default="smollm2",
    show_default=True,
    help=f"{' | '.join(sorted(MODELS))} | PATH to a .gguf file.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--parallel",
    type=click.IntRange(1, 256),
    default=DEFAULT_PARALLEL,
    show_default=True,
    help="Concurrent slots; a node in front of it should have NODE_CAPACITY_MAX at most this (the default: both 4).",
)
@click.option(
    "--slot-context",
    type=click.IntRange(64),
    default=DEFAULT_SLOT_CONTEXT,
    show_default=True,
    help="Context of each slot (llama-server's -c is this × --parallel).",
)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True, help="-t (1 is best on 2 cores).")
@click.option("--alias", help="Model id to serve it as (default: the model's id or the file's stem).")
@native_option
@needs_extra("llama")
def serve_cmd(
    model: str,
    host: str,
    port: int,
    parallel: int,
    slot_context: int,
    threads: int,
    alias: str | None,
    native: bool | None,
) -> None:
    """Run llama-server on a cached or given model until Ctrl-C (native API and OpenAI API under /v1)."""
    try:
        path, model_id = resolve_model(model)
        with err_console.status("preparing llama-server…") as status:
            binary = ensure_llama_server(model=path, native=native, progress=progress_printer(err_console, status))
    except (LlamaBuildError, ModelError) as exc:
        fail(str(exc))
    argv = server_args(
        binary,
        path,
        host=host,
        port=port,
        threads=threads,
        parallel=parallel,
        slot_context=slot_context,
        model_id=alias or model_id,
    )
    err_console.print(f"serving [bold]{alias or model_id}[/bold] at http://{host}:{port} (Ctrl-C stops it)")
    node_env = f"NODE_RUNNER=llama_cpp NODE_RUNNER_URL=http://{host}:{port} NODE_CAPACITY_MAX={parallel}"
    err_console.print(f"  {node_env}", highlight=False, soft_wrap=True)
    sys.exit(run_foreground(argv, os.environ))
