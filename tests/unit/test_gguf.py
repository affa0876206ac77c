"""The GGUF header reader: a model's shape from the first bytes of its file, never the whole file."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tasks import gguf

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
