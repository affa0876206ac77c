"""The tiny model a new llama.cpp build must serve before any server runs on it (tasks/inference/llamacpp.py).

Made here, on the controller, from nothing: no network, no download, the same
bytes on every machine (its sha256 is pinned below and checked by the tests).
Why not the smallest model placed on the host: a fresh host has no model yet
when its first build is proven, and a host that serves only the F16 model has
nothing smaller than 141 GB; this one loads in well under a second everywhere.

It is a real GGUF of llama.cpp's `llama` architecture with random weights
(a deterministic SHAKE-256 stream), so it proves that the build loads a model,
offloads it to the GPU when it has one, and computes tokens through the kernels
real models use: each of its layers holds its matrices in another of the
weight types of the manual's models (Q4_K and Q6_K of a Q4_K_M file, F16,
Q8_0, Q4_0, Q4_1). Its matrices are multiples of 32 rows and 256 columns, the
shapes llama.cpp's x86 AMX kernels take (the kernels that crashed a native
build on a VM that advertises AMX it does not let run). Its vocabulary is the
256 bytes, three control tokens and 29 letters: text in, tokens out.

Format: llama.cpp's docs/gguf.md (version 3); block layouts: ggml-common.h.
"""

from __future__ import annotations

import hashlib
import struct

NAME = "kitty-smoke-v1.gguf"
SHA256 = "b7276fe99a3c36d84406c86d1a32db69846575fb65a2c353605f165ef19b3c9a"

N_EMBD = 256
N_FF = 512
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD
CONTEXT = 512
ALIGNMENT = 32

# ggml_type ids and their blocks: (values per block, bytes per block).
F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K = 0, 1, 2, 3, 8, 12, 14
BLOCKS = {F32: (1, 4), F16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q8_0: (32, 34), Q4_K: (256, 144), Q6_K: (256, 210)}
# One layer per weight type: every kernel family a real model of the manual uses.
LAYER_TYPES = (Q4_K, Q6_K, F16, Q8_0, Q4_0, Q4_1)

# GGUF value types.
_UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY = 4, 5, 6, 7, 8, 9

# F16 values from random bits: sign and mantissa random, exponent 2^-6..2^-3 (never inf or NaN).
_F16_HIGH_BYTE = bytes((b & 0x83) | ((9 + ((b >> 2) & 3)) << 2) for b in range(256))


def _half(value: float) -> bytes:
    return struct.pack("<e", value)


def _random(name: str, size: int) -> bytes:
    return hashlib.shake_256(f"kitty-smoke-v1/{name}".encode()).digest(size)


def _blocks(name: str, count: int, head: bytes, random_bytes: int) -> bytes:
    """`count` blocks, each a fixed `head` (its scales) and `random_bytes` of quants."""
    data = _random(name, count * random_bytes)
    return b"".join(head + data[i * random_bytes : (i + 1) * random_bytes] for i in range(count))


def _weights(name: str, ggml_type: int, n: int) -> bytes:
    """`n` values of `ggml_type`, small enough that activations stay finite through every layer."""
    if ggml_type == F32:
        return struct.pack(f"<{n}f", *([1.0] * n))
    if ggml_type == F16:
        data = bytearray(_random(name, 2 * n))
        data[1::2] = bytes(data[1::2]).translate(_F16_HIGH_BYTE)
        return bytes(data)
    per_block, size = BLOCKS[ggml_type]
    count = n // per_block
    if ggml_type == Q8_0:  # d, int8 qs[32]
        return _blocks(name, count, _half(0.002), 32)
    if ggml_type == Q4_0:  # d, nibbles qs[16] (value = (q - 8) * d)
        return _blocks(name, count, _half(0.03), 16)
    if ggml_type == Q4_1:  # d, m, nibbles qs[16] (value = q * d + m)
        return _blocks(name, count, _half(0.03) + _half(-0.24), 16)
    if ggml_type == Q4_K:  # d, dmin, 6-bit scales[12], nibbles qs[128]
        return _blocks(name, count, _half(0.0004) + _half(0.003), 12 + 128)
    if ggml_type == Q6_K:  # ql[128], qh[64], int8 scales[16], d: the scale comes last
        data = _random(name, count * 208)
        return b"".join(data[i * 208 : (i + 1) * 208] + _half(1 / 16384) for i in range(count))
    raise ValueError(f"no writer for ggml type {ggml_type}")


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(value) -> bytes:
    if isinstance(value, bool):
        return struct.pack("<IB", _BOOL, value)
    if isinstance(value, int):
        return struct.pack("<Ii", _INT32, value) if value < 0 else struct.pack("<II", _UINT32, value)
    if isinstance(value, float):
        return struct.pack("<If", _FLOAT32, value)
    if isinstance(value, str):
        return struct.pack("<I", _STRING) + _string(value)
    kind, items = value  # ("string" | "float32" | "int32", [...])
    if kind == "string":
        body = b"".join(_string(item) for item in items)
        return struct.pack("<IIQ", _ARRAY, _STRING, len(items)) + body
    fmt, gguf_type = {"float32": ("f", _FLOAT32), "int32": ("i", _INT32)}[kind]
    return struct.pack(f"<IIQ{len(items)}{fmt}", _ARRAY, gguf_type, len(items), *items)


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """SentencePiece-style tokens, scores and types: unknown, BOS, EOS, the 256 bytes, 29 pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # unknown, control, byte
    pieces = ["\u2581", "\u2581t", "\u2581a"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens += pieces
    types += [1] * len(pieces)  # normal
    scores = [0.0] * (len(tokens) - len(pieces)) + [-float(i) for i in range(len(pieces))]
    return tokens, scores, types


def tensors() -> list[tuple[str, int, tuple[int, ...]]]:
    """(name, ggml type, dims with the row length first) of every tensor, in file order."""
    n_vocab = len(vocabulary()[0])
    kv = N_HEAD_KV * HEAD_DIM
    found = [("token_embd.weight", F16, (N_EMBD, n_vocab)), ("output_norm.weight", F32, (N_EMBD,))]
    found.append(("output.weight", Q8_0, (N_EMBD, n_vocab)))
    for layer, ggml_type in enumerate(LAYER_TYPES):
        found += [
            (f"blk.{layer}.attn_norm.weight", F32, (N_EMBD,)),
            (f"blk.{layer}.attn_q.weight", ggml_type, (N_EMBD, N_EMBD)),
            (f"blk.{layer}.attn_k.weight", ggml_type, (N_EMBD, kv)),
            (f"blk.{layer}.attn_v.weight", ggml_type, (N_EMBD, kv)),
            (f"blk.{layer}.attn_output.weight", ggml_type, (N_EMBD, N_EMBD)),
            (f"blk.{layer}.ffn_norm.weight", F32, (N_EMBD,)),
            (f"blk.{layer}.ffn_gate.weight", ggml_type, (N_EMBD, N_FF)),
            (f"blk.{layer}.ffn_up.weight", ggml_type, (N_EMBD, N_FF)),
            (f"blk.{layer}.ffn_down.weight", ggml_type, (N_FF, N_EMBD)),
        ]
    return found


def metadata() -> dict:
    tokens, scores, types = vocabulary()
    return {
        "general.architecture": "llama",
        "general.name": "kitty-ops smoke test (random weights)",
        "general.alignment": ALIGNMENT,
        "llama.context_length": CONTEXT,
        "llama.embedding_length": N_EMBD,
        "llama.block_count": len(LAYER_TYPES),
        "llama.feed_forward_length": N_FF,
        "llama.attention.head_count": N_HEAD,
        "llama.attention.head_count_kv": N_HEAD_KV,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.rope.dimension_count": HEAD_DIM,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": ("string", tokens),
        "tokenizer.ggml.scores": ("float32", scores),
        "tokenizer.ggml.token_type": ("int32", types),
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": True,
    }


def _pad(size: int) -> int:
    return (ALIGNMENT - size % ALIGNMENT) % ALIGNMENT


def content() -> bytes:
    """The model file's bytes (about 4 MB); the same on every machine."""
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors()), len(metadata()))
    header += b"".join(_string(key) + _value(value) for key, value in metadata().items())
    infos, data = b"", b""
    for name, ggml_type, dims in tensors():
        n = 1
        for dim in dims:
            n *= dim
        infos += _string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ggml_type, len(data))
        data += _weights(name, ggml_type, n)
        data += b"\0" * _pad(len(data))
    head = header + infos
    return head + b"\0" * _pad(len(head)) + data
