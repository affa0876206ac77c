"""The model files the simulated Mac's `hf` downloads: small, deterministic, GGUF-looking.

One function, shared by the fake `hf` inside the sim Mac and by its group data (which pins
the sha256 of what `hf` will write). A `generation` above 0 stands for the upstream file
replaced at the same revision.
"""

from __future__ import annotations

import hashlib
import struct

SIZE = 64 * 1024


def content(repo: str, revision: str, name: str, generation: int = 0, size: int = SIZE) -> bytes:
    # GGUF magic, version 3, zero tensors, zero metadata keys: enough for tools that look at the header.
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    seed = f"{repo}\0{revision}\0{name}\0{generation}".encode()
    body = bytearray()
    block = hashlib.sha256(seed).digest()
    while len(header) + len(body) < size:
        body += block
        block = hashlib.sha256(block + seed).digest()
    return (header + bytes(body))[:size]


def sha256(repo: str, revision: str, name: str, generation: int = 0, size: int = SIZE) -> str:
    return hashlib.sha256(content(repo, revision, name, generation, size)).hexdigest()


def revision_of(repo: str) -> str:
    """A stable 40-hex commit for a fake repo."""
    return hashlib.sha1(f"macsim:{repo}".encode()).hexdigest()
