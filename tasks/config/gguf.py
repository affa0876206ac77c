"""The shape of a model, read from the key/value header at the start of its GGUF file.

The `gguf` package from llama.cpp maps the whole file (tensor data included),
so it cannot read the first megabytes of a 40 GB shard fetched with an HTTP
Range request. This reads only the header: magic, version, counts, then the
key/value pairs, and stops there. `parse(prefix)` raises `Truncated` with the
number of bytes it needs when the prefix ends inside the header, so a caller
fetches more and tries again.

Format (llama.cpp's gguf.md): little-endian (a big-endian file shows a
byte-swapped version); `GGUF`, uint32 version (2 or 3), uint64 tensor count,
uint64 key/value count, then per pair a string key (uint64 length + UTF-8),
a uint32 value type and the value. Arrays are a uint32 element type, a uint64
count and the elements.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

MAGIC = b"GGUF"
# Value types: (struct format, size) for the fixed-size ones.
FIXED = {
    0: ("B", 1),  # uint8
    1: ("b", 1),  # int8
    2: ("H", 2),  # uint16
    3: ("h", 2),  # int16
    4: ("I", 4),  # uint32
    5: ("i", 4),  # int32
    6: ("f", 4),  # float32
    7: ("?", 1),  # bool
    10: ("Q", 8),  # uint64
    11: ("q", 8),  # int64
    12: ("d", 8),  # float64
}
STRING, ARRAY = 8, 9


# A hostile header must cost little to refuse. Real ones: a few dozen pairs, tokenizer arrays of
# at most a few hundred thousand strings (Gemma 3: 262,144 tokens), never an array of arrays
# (llama.cpp's gguf.cpp refuses one: "invalid GGUF type"; its keys are at most 65535 bytes).
MAX_PAIRS = 1 << 16
MAX_KEY = 65535
# String array elements in all (fixed-size elements are skipped whole, without being counted).
MAX_ITEMS = 1 << 22
# Arrays hold values, never arrays: an array inside an array is refused.
MAX_DEPTH = 1
# A value kept (a per-layer shape key) is a list in memory: no longer than this.
MAX_KEPT = 1 << 16


class NotGGUF(ValueError):
    """The bytes are not a GGUF file (an HTML error page, a truncated pointer, another format,
    or a header built to be expensive: any parse error is this, never another exception)."""


class Truncated(Exception):
    """The prefix ends inside the header: at least `needed` bytes are required."""

    def __init__(self, needed: int):
        super().__init__(f"the GGUF header needs at least {needed} bytes")
        self.needed = needed


@dataclass(frozen=True)
class Shape:
    """What the memory budget needs to know of a model, as its GGUF header says it."""

    architecture: str | None = None
    block_count: int | None = None
    head_count: int | None = None
    # Per layer in some models (an array): the largest, so the KV estimate stays an upper bound.
    head_count_kv: int | None = None
    key_length: int | None = None
    embedding_length: int | None = None
    context_length: int | None = None
    # Shards of a split model (llama.cpp's gguf-split); None for a single file.
    split_count: int | None = None

    @property
    def head_dim(self) -> int | None:
        if self.key_length:
            return self.key_length
        if self.embedding_length and self.head_count:
            return self.embedding_length // self.head_count
        return None

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


class _Reader:
    def __init__(self, data: bytes, order: str):
        self.data, self.order, self.pos = data, order, 0
        self.items = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise Truncated(end)
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def skip(self, size: int) -> None:
        end = self.pos + size
        if end > len(self.data):
            raise Truncated(end)
        self.pos = end

    def skip_strings(self, count: int) -> None:
        """`count` strings passed over (a tokenizer's vocabulary): lengths read, nothing decoded."""
        data, pos, end = self.data, self.pos, len(self.data)
        length_at = struct.Struct(self.order + "Q").unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise Truncated(pos + 8)
            pos += 8 + length_at(data, pos)[0]
        if pos > end:
            raise Truncated(pos)
        self.pos = pos

    def fixed(self, kind: int):
        fmt, size = FIXED[kind]
        return struct.unpack(self.order + fmt, self.take(size))[0]

    def string(self, keep: bool = True) -> str | None:
        length = self.fixed(10)
        if not keep:
            self.skip(length)
            return None
        return self.take(length).decode("utf-8", errors="replace")

    def count(self, more: int) -> None:
        self.items += more
        if self.items > MAX_ITEMS:
            raise NotGGUF(f"not a GGUF file: more than {MAX_ITEMS} array elements in its header")

    def value(self, kind: int, keep: bool, depth: int = 0):
        if kind in FIXED:
            return self.fixed(kind)
        if kind == STRING:
            return self.string(keep)
        if kind == ARRAY:
            if depth >= MAX_DEPTH:
                raise NotGGUF(f"not a GGUF file: arrays nested deeper than {MAX_DEPTH} at byte {self.pos}")
            item_kind, count = self.fixed(4), self.fixed(10)
            if keep and count > MAX_KEPT:
                raise NotGGUF(f"not a GGUF file: an array of {count} elements where a few are expected")
            if item_kind in FIXED and not keep:
                # Skipped without decoding: a tokenizer's scores are hundreds of thousands of floats.
                self.skip(FIXED[item_kind][1] * count)
                return None
            self.count(count)
            if item_kind == STRING and not keep:
                self.skip_strings(count)
                return None
            if not keep:
                for _ in range(count):
                    self.value(item_kind, False, depth + 1)
                return None
            return [self.value(item_kind, True, depth + 1) for _ in range(count)]
        raise NotGGUF(f"unknown GGUF value type {kind} at byte {self.pos}")


def metadata(data: bytes, wanted=lambda key: True) -> dict:
    """The header's key/value pairs whose key `wanted` accepts (others are skipped, not decoded).

    `Truncated` when the prefix ends inside the header; `NotGGUF` for anything else that is wrong."""
    try:
        return _metadata(data, wanted)
    except (Truncated, NotGGUF):
        raise
    except Exception as error:  # noqa: BLE001 -- whatever a hostile header provokes: not a GGUF file
        raise NotGGUF(f"not a GGUF file: its header does not parse ({type(error).__name__}: {error})") from None


def _metadata(data: bytes, wanted) -> dict:
    if len(data) < 4:
        raise Truncated(24)
    if data[:4] != MAGIC:
        raise NotGGUF(f"not a GGUF file: it starts with {data[:16]!r}")
    order = "<"
    version = struct.unpack("<I", data[4:8])[0] if len(data) >= 8 else None
    if version is not None and version > 0xFFFF:
        order = ">"
    reader = _Reader(data, order)
    reader.take(4)
    version = reader.fixed(4)
    if version not in (2, 3):
        raise NotGGUF(f"GGUF version {version} is not supported (2 and 3 are)")
    reader.fixed(10)  # tensor count
    pairs = reader.fixed(10)
    if pairs > MAX_PAIRS:
        raise NotGGUF(f"not a GGUF file: {pairs} key/value pairs (at most {MAX_PAIRS})")
    found = {}
    for _ in range(pairs):
        if reader.pos + 8 <= len(data) and struct.unpack(order + "Q", data[reader.pos : reader.pos + 8])[0] > MAX_KEY:
            raise NotGGUF(f"not a GGUF file: a key longer than {MAX_KEY} bytes at byte {reader.pos}")
        key = reader.string()
        kind = reader.fixed(4)
        keep = wanted(key)
        value = reader.value(kind, keep)
        if keep:
            found[key] = value
    return found


def _shape_key(key: str) -> bool:
    return key in ("general.architecture", "split.count") or key.split(".", 1)[-1] in SHAPE_KEYS


SHAPE_KEYS = {
    "block_count",
    "context_length",
    "embedding_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
}


def parse(data: bytes) -> Shape:
    """The shape in a GGUF prefix; `Truncated` when more bytes are needed, `NotGGUF` when it is no GGUF
    (a value of the wrong type where a shape key is expected included)."""
    values = metadata(data, _shape_key)
    try:
        return _shape(values)
    except Exception as error:  # noqa: BLE001 -- a split count of "x", an infinite layer count...
        raise NotGGUF(f"not a GGUF file: its shape keys do not parse ({type(error).__name__}: {error})") from None


def _shape(values: dict) -> Shape:
    arch = values.get("general.architecture")
    if arch is not None and not isinstance(arch, str):
        raise TypeError(f"general.architecture is {type(arch).__name__}, not a string")

    def number(name: str) -> int | None:
        value = values.get(f"{arch}.{name}")
        if isinstance(value, list):
            value = max(value) if value else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value:
            return None
        if value < 0:
            raise ValueError(f"{arch}.{name} is {value}")
        return int(value)

    split = values.get("split.count")
    if split is not None and (isinstance(split, (str, list, bool)) or int(split) < 0):
        raise ValueError(f"split.count is {split!r}")
    return Shape(
        architecture=arch,
        block_count=number("block_count"),
        head_count=number("attention.head_count"),
        head_count_kv=number("attention.head_count_kv"),
        key_length=number("attention.key_length"),
        embedding_length=number("embedding_length"),
        context_length=number("context_length"),
        split_count=int(split) if split else None,
    )


def read_shape(fetch, first: int = 1 << 20, limit: int = 256 << 20) -> Shape:
    """The shape of a file whose bytes `fetch(start, end)` returns (end exclusive), reading only its header.

    Starts with `first` bytes and fetches what the parser asks for, at least
    doubling each time; a header larger than `limit` is refused.
    """
    data = fetch(0, first)
    while True:
        try:
            return parse(data)
        except Truncated as more:
            if len(data) < first or more.needed > limit:
                # The file ended (or the header is absurd) before the header did.
                raise NotGGUF(f"the GGUF header is incomplete after {len(data)} bytes") from None
            want = max(more.needed, 2 * len(data))
            chunk = fetch(len(data), want)
            if not chunk:
                raise NotGGUF(f"the GGUF header is incomplete after {len(data)} bytes") from None
            first = want
            data += chunk
