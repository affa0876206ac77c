"""The tiny model that proves new llama.cpp builds (tasks/inference/smoke_model.py): the same bytes
everywhere, a real GGUF."""

import hashlib

from tasks.config import gguf
from tasks.inference import smoke_model


def test_the_model_is_the_same_bytes_on_every_machine():
    # Pinned: a change of the writer is a new model name (kitty-smoke-v2), never new bytes under the old one.
    content = smoke_model.content()
    assert hashlib.sha256(content).hexdigest() == smoke_model.SHA256
    assert len(content) == 3_571_872


def test_its_header_is_a_small_llama_model():
    shape = gguf.parse(smoke_model.content()[:200_000])
    assert shape.architecture == "llama" and shape.block_count == len(smoke_model.LAYER_TYPES) == 6
    assert (shape.embedding_length, shape.head_count, shape.head_count_kv) == (256, 4, 2)


def test_its_matrices_take_the_amx_kernels_and_cover_the_manuals_weight_types():
    # llama.cpp's AMX kernels take a product when rows are a multiple of 32 and the row length of
    # 32 (Q4_0, Q4_1, Q8_0), 256 (K-quants) or 16 (F16): the kernels that crashed on a VM hiding AMX.
    matrices = [(kind, dims) for _, kind, dims in smoke_model.tensors() if len(dims) == 2]
    assert all(dims[1] % 32 == 0 and dims[0] % 256 == 0 for _, dims in matrices)
    kinds = {kind for kind, _ in matrices}
    # Q4_K and Q6_K: a Q4_K_M file's two types.
    assert {
        smoke_model.Q4_K,
        smoke_model.Q6_K,
        smoke_model.F16,
        smoke_model.Q8_0,
        smoke_model.Q4_0,
        smoke_model.Q4_1,
    } <= kinds
