"""A tiny random-weight llama GGUF for tests: 2 layers, dim 64, ~450 tokens, a ChatML template, < 1 MB.

Deterministic: the same seed gives the same bytes. It answers gibberish, fast. Two choices make it pleasant
to test with: a SentencePiece vocabulary with byte fallback (any text tokenizes), and an output layer that
can only produce plain word pieces (letters, digits, .,!?'), never end-of-generation, control, byte or
markup-like tokens, so every request generates exactly `max_tokens` tokens of harmless gibberish.

How: dimension 0 of every token embedding is a positive constant and no layer writes into it, so after the
final RMSNorm that coordinate is always positive; the output rows of the forbidden tokens weigh it by a
large negative number, which pins their logits far below every other token's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

ARCH = "llama"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPACE = "\u2581"  # SentencePiece's word-boundary marker
WORDS = (
    "the", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "was", "at", "by",
    "this", "from", "or", "but", "not", "are", "be", "have", "one", "all", "we", "can", "you", "they",
    "node", "router", "relay", "model", "token", "sky", "blue", "hello", "world", "two", "four", "yes", "no",
)  # fmt: skip


def _plain(char: str) -> bool:
    return char.isalnum() or char in ".,!?'" + SPACE


@dataclass(frozen=True)
class TinySpec:
    """The shape of the tiny model."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    context_length: int = 4096
    seed: int = 20261101


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos: int
    eos: int
    unk: int

    def generable(self) -> npt.NDArray[np.bool_]:
        """Which tokens the model may output: normal pieces made of letters, digits, ▁ and .,!?' only."""
        return np.array(
            [
                kind == gguf.TokenType.NORMAL and all(_plain(c) for c in piece)
                for piece, kind in zip(self.tokens, self.types, strict=True)
            ]
        )


def build_vocab() -> Vocab:
    """<unk>, <s>, </s>, ChatML markers, 256 byte tokens, printable ASCII, ▁ and ▁-prefixed word pieces."""
    tokens: list[str] = []
    types: list[int] = []
    scores: list[float] = []

    def add(piece: str, kind: int, score: float = 0.0) -> None:
        tokens.append(piece)
        types.append(kind)
        scores.append(score)

    add("<unk>", gguf.TokenType.UNKNOWN)
    add("<s>", gguf.TokenType.CONTROL)
    add("</s>", gguf.TokenType.CONTROL)
    add("<|im_start|>", gguf.TokenType.CONTROL)
    add("<|im_end|>", gguf.TokenType.CONTROL)
    for byte in range(256):
        add(f"<0x{byte:02X}>", gguf.TokenType.BYTE)
    for code in range(0x21, 0x7F):
        add(chr(code), gguf.TokenType.NORMAL, -1.0)
    add(SPACE, gguf.TokenType.NORMAL, -1.0)
    pieces: dict[str, None] = {}
    for word in WORDS:  # every prefix, so SentencePiece's pairwise merges can reach the whole word
        spelled = SPACE + word
        for end in range(2, len(spelled) + 1):
            pieces.setdefault(spelled[:end])
    for piece in pieces:
        add(piece, gguf.TokenType.NORMAL, float(len(piece)))  # longer pieces merge first
    return Vocab(tokens, scores, types, bos=1, eos=2, unk=0)


def tiny_tensors(spec: TinySpec, vocab: Vocab) -> dict[str, npt.NDArray[np.float32]]:
    """The model's weights (numpy shapes are GGUF dimensions reversed: rows are output features)."""
    rng = np.random.default_rng(spec.seed)
    n_vocab, dim, head_dim = len(vocab.tokens), spec.n_embd, spec.n_embd // spec.n_head

    def normal(*shape: int, scale: float) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def residual_writer(*shape: int, scale: float) -> npt.NDArray[np.float32]:
        weights = normal(*shape, scale=scale)
        weights[0, :] = 0.0  # never write into dimension 0 (see the module docstring)
        return weights

    embeddings = normal(n_vocab, dim, scale=0.3)
    embeddings[:, 0] = 1.0
    output = normal(n_vocab, dim, scale=0.5)
    output[:, 0] = np.where(vocab.generable(), 0.0, -1000.0)
    tensors: dict[str, npt.NDArray[np.float32]] = {
        "token_embd.weight": embeddings,
        "output_norm.weight": np.ones(dim, dtype=np.float32),
        "output.weight": output,
    }
    kv_dim = spec.n_head_kv * head_dim
    for layer in range(spec.n_layer):
        block = f"blk.{layer}"
        tensors |= {
            f"{block}.attn_norm.weight": np.ones(dim, dtype=np.float32),
            f"{block}.attn_q.weight": normal(dim, dim, scale=0.2),
            f"{block}.attn_k.weight": normal(kv_dim, dim, scale=0.2),
            f"{block}.attn_v.weight": normal(kv_dim, dim, scale=0.2),
            f"{block}.attn_output.weight": residual_writer(dim, dim, scale=0.1),
            f"{block}.ffn_norm.weight": np.ones(dim, dtype=np.float32),
            f"{block}.ffn_gate.weight": normal(spec.n_ff, dim, scale=0.2),
            f"{block}.ffn_up.weight": normal(spec.n_ff, dim, scale=0.2),
            f"{block}.ffn_down.weight": residual_writer(dim, spec.n_ff, scale=0.1),
        }
    return tensors


def write_tiny_gguf(path: Path, spec: TinySpec | None = None, *, name: str = "fedai-tiny-llama") -> Path:
    """Write the tiny model to `path` (overwriting it) and return `path`."""
    spec = spec or TinySpec()
    vocab = build_vocab()
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_name(name)
    writer.add_description("random weights for tests; generated by fedai.llamacpp.tiny")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_dimension_count(spec.n_embd // spec.n_head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(vocab.tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    writer.add_unk_token_id(vocab.unk)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for tensor_name, data in tiny_tensors(spec, vocab).items():
        writer.add_tensor(tensor_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
