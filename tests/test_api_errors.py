"""Python API errors are SparsebridgeErrors and still the builtin types callers caught before
(issue 23, papercut).

``device="cuda:7"`` was a bare AssertionError from torch, ``similarity_pairwise`` of mismatched
shapes a raw torch RuntimeError, and ``backend="tensorrt"`` a plain ValueError. The packaged SPLADE
model on this CPU-only torch build (where no CUDA device exists, so ``cuda:7`` is always refused).
"""

from __future__ import annotations

import pytest
import torch
from sparsebridge import SparseEncoder
from sparsebridge.errors import DeviceError, EmbeddingShapeError, EncodeArgumentError, SparsebridgeError


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="a machine with 8 CUDA devices can use cuda:7")
def test_a_device_this_torch_cannot_use(splade_path, encoder):
    for device in ("cuda:7", "cpu:zz"):
        with pytest.raises(DeviceError, match=f"device '{device}'") as refused:
            SparseEncoder(str(splade_path), device=device)
        assert all(isinstance(refused.value, kind) for kind in (SparsebridgeError, AssertionError, RuntimeError))
    with pytest.raises(AssertionError, match="device 'cuda:7'"):  # what callers caught before
        encoder.encode_document(["a text"], device="cuda:7")


def test_similarity_of_mismatched_shapes(encoder):
    two = encoder.encode_document(["boundary layer", "heat transfer"])
    one = encoder.encode_document(["buckling"])
    original = encoder.similarity_fn_name
    try:
        for fn in ("cosine", "dot", "euclidean", "manhattan"):
            encoder.similarity_fn_name = fn
            with pytest.raises(EmbeddingShapeError, match="got 2 and 1 rows"):
                encoder.similarity_pairwise(two, one)
            with pytest.raises(RuntimeError, match="cannot be compared"):
                encoder.similarity(two, torch.zeros(1, 5))
            assert encoder.similarity(two, one).shape == (2, 1)
    finally:
        encoder.similarity_fn_name = original


def test_an_unknown_backend_names_the_allowed_ones(splade_path):
    with pytest.raises(EncodeArgumentError, match="choose one of torch, onnx, openvino") as refused:
        SparseEncoder(str(splade_path), backend="tensorrt")
    assert isinstance(refused.value, ValueError)
