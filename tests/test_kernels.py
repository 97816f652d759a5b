"""``use_kernels`` / ``kernel_config`` (sentence-transformers 6.3) against the oracle, test-only.

Kernels are transformers' feature: what both libraries must agree on is when they ask transformers for
them, with what, and what the model object then says (``use_kernels``, ``kernel_config``). Each case
loads the packaged SPLADE model through both libraries with ``PreTrainedModel.set_use_kernels``
recorded (the real method still runs), and compares the recordings and attributes. transformers'
own loading path (``from_pretrained(use_kernels=...)``) runs for real.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from sparsebridge import SparseEncoder
from sparsebridge.modules import SpladePooling
from transformers import BertConfig, BertForMaskedLM, KernelConfig, PreTrainedModel

# One load in a fresh interpreter: transformers keeps kernel state across loads in one process (a plain
# load after a kernel-enabled one reports use_kernels=True, in both libraries alike), so each case
# starts clean. set_use_kernels is recorded; the real method still runs unless a custom mapping names
# a test repository the Hub cannot serve here.
_LOAD = """
import copy, json, sys
from transformers import KernelConfig, PreTrainedModel

calls = []
original = PreTrainedModel.set_use_kernels

def recording(module, use_kernels, kernel_config=None, *args, **kwargs):
    mapping = None if kernel_config is None else copy.deepcopy(kernel_config.kernel_mapping)
    calls.append([type(module).__name__, bool(use_kernels), mapping])
    if kernel_config is not None and kernel_config.kernel_mapping:
        return None
    return original(module, use_kernels, kernel_config, *args, **kwargs)

PreTrainedModel.set_use_kernels = recording
library, path, case = sys.argv[1:]
if library == "ours":
    from sparsebridge import SparseEncoder
else:
    from sentence_transformers import SparseEncoder
mapping = {"RMSNorm": "test/kernel:Norm"}
options = {
    "off": {},
    "use_kernels": {"use_kernels": True},
    "kernel_config": {"kernel_config": KernelConfig(mapping, inherit_mapping=False)},
    "model_kwargs": {"model_kwargs": {"use_kernels": True}},
    "model_kwargs_disable": {
        "kernel_config": KernelConfig(mapping, inherit_mapping=False),
        "model_kwargs": {"use_kernels": False},
    },
}[case]
kept = copy.deepcopy(options)
model = SparseEncoder(path, device="cpu", **options)
config = model.kernel_config
print(json.dumps({
    "calls": calls,
    "use_kernels": model.use_kernels,
    "kernel_config": None if config is None else config.kernel_mapping,
    "backbone_use_kernels": bool(model.transformers_model.use_kernels),
    "model_kwargs_untouched": options.get("model_kwargs") == kept.get("model_kwargs"),
    "kernel_config_copied": "kernel_config" not in options or config is not options["kernel_config"],
}))
"""
CASES = ("off", "use_kernels", "kernel_config", "model_kwargs", "model_kwargs_disable")


def _load(library: str, path, case: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD, library, str(path), case], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _oracle():
    from sentence_transformers import SparseEncoder as Oracle

    return Oracle


def _pooling(cls):
    """Each library's own SpladePooling (a model is assembled from its own library's modules)."""
    if cls is SparseEncoder:
        return SpladePooling()
    from sentence_transformers.sparse_encoder.modules import SpladePooling as OraclePooling

    return OraclePooling()


@pytest.fixture
def record(monkeypatch):
    calls: list[tuple[str, bool, object]] = []
    original = PreTrainedModel.set_use_kernels

    def recording(module, use_kernels, kernel_config=None, *args, **kwargs):
        mapping = None if kernel_config is None else copy.deepcopy(kernel_config.kernel_mapping)
        calls.append((type(module).__name__, bool(use_kernels), mapping))
        return original(module, use_kernels, kernel_config, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "set_use_kernels", recording)
    return calls


@pytest.mark.parametrize("case", CASES)
def test_kernel_options_reach_transformers_as_in_the_oracle(splade_path, case):
    ours, theirs = _load("ours", splade_path, case), _load("theirs", splade_path, case)
    assert ours == theirs
    assert ours["model_kwargs_untouched"] and ours["kernel_config_copied"]
    # The model's own flag follows the top-level options only (model_kwargs go to transformers).
    assert ours["use_kernels"] is (case in ("use_kernels", "kernel_config", "model_kwargs_disable"))


def test_kernel_settings_are_runtime_only(splade_path, tmp_path):
    model = SparseEncoder(str(splade_path), device="cpu", use_kernels=True)
    assert model.use_kernels is True
    model.save_pretrained(str(tmp_path), create_model_card=False)
    assert "kernels" not in (tmp_path / "config_sentence_transformers.json").read_text()
    restored = SparseEncoder(str(tmp_path), device="cpu")
    assert restored.use_kernels is False and restored.kernel_config is None


def test_kernels_on_a_model_built_from_modules_as_in_the_oracle(record):
    """A backbone handed over as a module (no loading): kernels are switched on it after placement."""
    config = BertConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=1, vocab_size=32)
    seen = {}
    for name, cls in (("ours", SparseEncoder), ("theirs", _oracle())):
        torch.manual_seed(0)
        backbone = BertForMaskedLM(config)
        record.clear()
        cls(modules=[backbone, _pooling(cls)], device="cpu", use_kernels=True)
        seen[name] = list(record)
    assert seen["ours"] == seen["theirs"] != []


@pytest.mark.parametrize("options", [{"use_kernels": True}, {"kernel_config": KernelConfig()}])
def test_kernels_need_the_torch_backend_as_in_the_oracle(options):
    errors = []
    for cls in (SparseEncoder, _oracle()):
        with pytest.raises(ValueError) as info:
            cls(modules=[_pooling(cls)], backend="onnx", **options)
        errors.append(str(info.value))
    assert errors[0] == errors[1] == "use_kernels and kernel_config require the torch backend"


def test_a_kernel_config_of_another_type_is_refused_as_by_the_oracle():
    errors = []
    for cls in (SparseEncoder, _oracle()):
        with pytest.raises(TypeError) as info:
            cls(modules=[_pooling(cls)], kernel_config={"RMSNorm": "test/kernel:Norm"})
        errors.append(str(info.value))
    assert errors[0] == errors[1]
