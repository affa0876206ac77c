"""The GGUF header reader: a model's shape from the first bytes of its file, never the whole file."""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import pytest

from tasks.config import gguf

ROOT = Path(__file__).resolve().parents[2]
# The real tiny model the sandbox's Hub mirror serves (sandbox/hf-mirror.py prepares it).
SMOL = ROOT / ".sandbox" / "cache" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _pair(key: str, kind: int, value) -> bytes:
    head = _string(key) + struct.pack("<I", kind)
    if kind == gguf.STRING:
        return head + _string(value)
    if kind == gguf.ARRAY:
        item_kind, items = value
        body = struct.pack("<IQ", item_kind, len(items))
        for item in items:
            body += _string(item) if item_kind == gguf.STRING else struct.pack("<" + gguf.FIXED[item_kind][0], item)
        return head + body
    return head + struct.pack("<" + gguf.FIXED[kind][0], value)


def header(pairs: list[tuple[str, int, object]], tensors: int = 0) -> bytes:
    """A GGUF v3 header with these key/value pairs, as llama.cpp's gguf writer lays it out."""
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(pairs)) + b"".join(_pair(*pair) for pair in pairs)


QWEN = [
    ("general.architecture", gguf.STRING, "qwen2"),
    ("general.name", gguf.STRING, "Athene V2 Agent"),
    # A tokenizer's arrays come before and between the keys that matter; they must be skipped correctly.
    ("tokenizer.ggml.tokens", gguf.ARRAY, (gguf.STRING, [f"tok{i}" for i in range(5000)])),
    ("tokenizer.ggml.scores", gguf.ARRAY, (6, [0.5] * 5000)),
    ("qwen2.block_count", 4, 80),
    ("qwen2.context_length", 4, 32768),
    ("qwen2.embedding_length", 4, 8192),
    ("qwen2.attention.head_count", 4, 64),
    ("qwen2.attention.head_count_kv", 4, 8),
    ("split.count", 2, 2),
]


def test_the_shape_keys_are_read_and_the_rest_skipped():
    shape = gguf.parse(header(QWEN) + b"\0" * 64)
    assert shape == gguf.Shape("qwen2", 80, 64, 8, None, 8192, 32768, 2)
    assert shape.head_dim == 128


def test_a_key_length_is_the_head_dimension_and_a_per_layer_kv_count_its_largest():
    pairs = [
        ("general.architecture", gguf.STRING, "gemma3"),
        ("gemma3.block_count", 4, 3),
        ("gemma3.attention.head_count", 4, 32),
        ("gemma3.attention.head_count_kv", gguf.ARRAY, (4, [8, 16, 8])),
        ("gemma3.attention.key_length", 4, 128),
        ("gemma3.embedding_length", 4, 5376),
    ]
    shape = gguf.parse(header(pairs))
    assert (shape.head_count_kv, shape.head_dim) == (16, 128)


def test_a_prefix_that_ends_inside_the_header_asks_for_more():
    data = header(QWEN)
    with pytest.raises(gguf.Truncated) as more:
        gguf.parse(data[:1000])
    assert 1000 < more.value.needed <= len(data)


def test_read_shape_fetches_only_what_the_header_needs():
    data = header(QWEN) + b"\x07" * 10_000_000  # the tensor data that must not be read
    calls = []

    def fetch(start: int, end: int) -> bytes:
        calls.append((start, end))
        return data[start:end]

    assert gguf.read_shape(fetch, first=4096).block_count == 80
    assert calls[0] == (0, 4096) and all(b == calls[i + 1][0] for i, (_, b) in enumerate(calls[:-1]))
    assert calls[-1][1] < 2 * len(header(QWEN)) + 4096


@pytest.mark.parametrize(
    "prefix",
    [b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title>", b"version https://git-lfs.github.com/spec/v1\n"],
)
def test_an_error_page_or_an_lfs_pointer_is_not_a_gguf(prefix):
    with pytest.raises(gguf.NotGGUF, match="not a GGUF file"):
        gguf.parse(prefix)


def test_a_file_that_ends_before_its_header_does_is_refused():
    data = header(QWEN)[:3000]
    with pytest.raises(gguf.NotGGUF, match="incomplete after 3000 bytes"):
        gguf.read_shape(lambda start, end: data[start:end], first=1 << 20)


@pytest.mark.skipif(not SMOL.exists(), reason="the tiny model is prepared by sandbox/hf-mirror.py prepare")
def test_the_real_tiny_model_from_its_first_two_megabytes():
    # gguf 0.19's GGUFReader gives the same on the whole file (../shared/notes/test-environment.md).
    with SMOL.open("rb") as model:
        prefix = model.read(2 << 20)
    shape = gguf.parse(prefix)
    assert (shape.architecture, shape.block_count, shape.head_count_kv, shape.head_dim) == ("llama", 30, 3, 64)
    assert shape.context_length == 8192 and shape.split_count is None


# --- hostile headers: any of them is "not a GGUF file", refused fast and small (issue 26, item 7) ------


def _nested(depth: int) -> bytes:
    """An array of an array of ... of nothing, `depth` deep (RecursionError before the depth cap)."""
    body = struct.pack("<IQ", 4, 0)
    for _ in range(depth - 1):
        body = struct.pack("<IQ", gguf.ARRAY, 1) + body
    return body


def _raw(key: str, kind: int, body: bytes) -> bytes:
    return _string(key) + struct.pack("<I", kind) + body


def _gguf(*pairs: bytes, count: int | None = None) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs) if count is None else count) + b"".join(pairs)


HOSTILE = {
    "arrays nested 5000 deep": _gguf(_raw("x", gguf.ARRAY, _nested(5000))),
    "an array inside an array": _gguf(_raw("x", gguf.ARRAY, _nested(2))),
    "a split count that is a string": _gguf(_pair("split.count", gguf.STRING, "x")),
    "a split count below zero": _gguf(_pair("split.count", 11, -2)),
    "a layer count that is NaN": _gguf(
        _pair("general.architecture", gguf.STRING, "llama"), _pair("llama.block_count", 12, float("nan"))
    ),
    "an infinite context": _gguf(
        _pair("general.architecture", gguf.STRING, "llama"), _pair("llama.context_length", 12, float("inf"))
    ),
    "an architecture that is a number": _gguf(_pair("general.architecture", 4, 7)),
    "a billion strings announced": _gguf(_raw("tokenizer.ggml.tokens", gguf.ARRAY, struct.pack("<IQ", 8, 10**9))),
    "a kept array of a million numbers": _gguf(
        _pair("general.architecture", gguf.STRING, "llama"),
        _raw("llama.attention.head_count_kv", gguf.ARRAY, struct.pack("<IQ", 4, 10**6) + b"\0" * (4 * 10**6)),
    ),
    "a million key/value pairs announced": _gguf(count=10**6),
    "a key of 4 GB announced": b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 32),
    "an unknown value type": _gguf(_raw("x", 99, b"")),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_header_is_not_a_gguf_file_refused_fast_and_small(name):
    data = HOSTILE[name] + b"\0" * 64
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(gguf.NotGGUF, match="not a GGUF file|not supported|unknown GGUF value type"):
            gguf.read_shape(lambda start, end: data[start:end])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2.0
    assert peak < len(data) + (8 << 20)


def test_a_real_sized_vocabulary_is_still_read_quickly():
    """300,000 tokens (more than any tokenizer llama.cpp ships) are skipped, never decoded."""
    tokens = _string("tokenizer.ggml.tokens") + struct.pack("<IIQ", gguf.ARRAY, gguf.STRING, 300_000)
    tokens += b"".join(_string(f"t{i}") for i in range(300_000))
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(QWEN) + 1) + tokens + b"".join(_pair(*p) for p in QWEN)
    started = time.monotonic()
    assert gguf.parse(data).block_count == 80
    assert time.monotonic() - started < 2.0


def test_strings_past_the_item_cap_are_refused():
    data = _gguf(_raw("tokenizer.ggml.tokens", gguf.ARRAY, struct.pack("<IQ", gguf.STRING, gguf.MAX_ITEMS + 1)))
    with pytest.raises(gguf.NotGGUF, match="array elements"):
        gguf.parse(data + struct.pack("<Q", 0) * 16)
