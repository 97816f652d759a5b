"""Accelerate placement, as sentence-transformers supports it: a model loaded with
``model_kwargs={"device_map": ...}`` or dispatched with Accelerate hooks runs where they place it;
``clear_placement_cache`` makes a model see hooks attached or removed after it was loaded.

Real Accelerate hooks on the real packaged SPLADE model, on the CPU (this machine has no GPU): a
``cpu_offload`` keeps the weights on ``meta`` and streams them in per forward, and an
``AlignDevicesHook`` names an execution device (``cpu:0``, which torch keeps apart from ``cpu``).
"""

from __future__ import annotations

import logging

import pytest
import torch
from accelerate import cpu_offload
from accelerate.hooks import AlignDevicesHook, add_hook_to_module, remove_hook_from_module
from sparsebridge import SparseEncoder

TEXTS = ["boundary layer separation at hypersonic speeds", "heat transfer", "wing flutter"]


@pytest.fixture(scope="module")
def reference(encoder):
    return encoder.encode(TEXTS, convert_to_sparse_tensor=False)


@pytest.mark.parametrize("device_map", ["cpu", "auto", {"": "cpu"}])
def test_a_device_map_places_the_model_with_equal_embeddings(splade_path, reference, device_map, caplog):
    model = SparseEncoder(str(splade_path), device="cpu", model_kwargs={"device_map": device_map})
    assert "Ignoring `device=cpu` because `model_kwargs['device_map']` takes priority." in caplog.text
    assert model._placement_is_delegated and model.device == torch.device("cpu")
    assert torch.equal(model.encode(TEXTS, convert_to_sparse_tensor=False), reference)
    # Moving the model yourself overrides its device map, as in sentence-transformers.
    model.to("cpu")
    assert not model._placement_is_delegated


def test_hooks_attached_later_are_seen_after_clear_placement_cache(splade_path, reference, caplog):
    model = SparseEncoder(str(splade_path), device="cpu")
    backbone = model[0].auto_model
    add_hook_to_module(backbone, AlignDevicesHook(execution_device=torch.device("cpu", 0), io_same_device=True))
    assert model.device == torch.device("cpu")  # the hook lookup is cached, as in sentence-transformers
    model.clear_placement_cache()
    assert model.device == torch.device("cpu", 0) and model._placement_is_delegated
    with caplog.at_level(logging.WARNING):
        embeddings = model.encode(TEXTS, device="cpu", convert_to_sparse_tensor=False)
    assert "Ignoring `device=cpu`, as a device map or Accelerate hooks control this model's placement" in caplog.text
    assert torch.equal(embeddings, reference)
    with pytest.raises(ValueError, match="dispatched by accelerate does not allow"):
        model.start_multi_process_pool(["cpu"])

    remove_hook_from_module(backbone)
    assert model.device == torch.device("cpu", 0)  # still cached
    model.clear_placement_cache()
    assert model.device == torch.device("cpu") and not model._placement_is_delegated


def test_an_offloaded_model_streams_its_weights_and_refuses_to_move(splade_path, reference):
    model = SparseEncoder(str(splade_path), device="cpu")
    cpu_offload(model[0].auto_model, execution_device=torch.device("cpu"))
    model.clear_placement_cache()
    assert any(p.device.type == "meta" for p in model.parameters())
    assert model.device == torch.device("cpu")
    assert torch.equal(model.encode(TEXTS, convert_to_sparse_tensor=False), reference)
    with pytest.raises(RuntimeError, match="You can't move a model that has some modules offloaded to cpu or disk."):
        model.to("cpu")
