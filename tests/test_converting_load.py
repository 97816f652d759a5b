"""Loading into another dtype tensor by tensor (sparsebridge.converting_load) gives exactly the model
transformers' own ``from_pretrained`` gives: every parameter and buffer equal, the same ties, the
same keys; and the cases it does not take are left to ``from_pretrained``."""

from __future__ import annotations

import shutil

import pytest
import torch
from sparsebridge import SparseEncoder
from sparsebridge.converting_load import checkpoint_files, load_converted
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM


def _assert_same_model(got, want) -> None:
    assert type(got) is type(want)
    # where it came from, as PEFT (an adapter's base model) and saved configs read it
    assert got.name_or_path == want.name_or_path
    assert got.config._name_or_path == want.config._name_or_path
    got_state, want_state = got.state_dict(), want.state_dict()
    assert got_state.keys() == want_state.keys()
    for key, value in want_state.items():
        assert got_state[key].dtype == value.dtype, key
        assert torch.equal(got_state[key], value), key
    got_buffers, want_buffers = dict(got.named_buffers()), dict(want.named_buffers())
    assert got_buffers.keys() == want_buffers.keys()
    for key, value in want_buffers.items():
        assert torch.equal(got_buffers[key], value), key
    if got.get_output_embeddings() is not None:  # tied weights stay tied (one tensor, not a copy)
        tied_want = want.get_output_embeddings().weight is want.get_input_embeddings().weight
        tied_got = got.get_output_embeddings().weight is got.get_input_embeddings().weight
        assert tied_got == tied_want


@pytest.mark.parametrize("auto_cls", [AutoModelForMaskedLM, AutoModel])
def test_bf16_from_an_fp32_file_equals_from_pretrained(splade_path, auto_cls):
    config = AutoConfig.from_pretrained(splade_path)
    args = {"dtype": torch.bfloat16, "trust_remote_code": False}
    # Weights missing from the checkpoint (AutoModel's pooler here) are initialised at random: seeded alike.
    torch.manual_seed(0)
    got = load_converted(auto_cls, splade_path, config, args)
    assert got is not None  # this case is taken
    torch.manual_seed(0)
    want = auto_cls.from_pretrained(splade_path, config=config, dtype=torch.bfloat16)
    _assert_same_model(got, want)


def test_a_sharded_checkpoint_loads_the_same(splade_path, tmp_path):
    model = AutoModelForMaskedLM.from_pretrained(splade_path)
    model.save_pretrained(tmp_path, max_shard_size="2MB")
    assert len(checkpoint_files(tmp_path)) > 1  # really sharded
    config = AutoConfig.from_pretrained(tmp_path)
    got = load_converted(AutoModelForMaskedLM, tmp_path, config, {"dtype": torch.bfloat16})
    assert got is not None
    _assert_same_model(got, AutoModelForMaskedLM.from_pretrained(tmp_path, dtype=torch.bfloat16))


@pytest.mark.parametrize(
    "args",
    [
        {"dtype": torch.float32},  # the file's own dtype: mapped without a copy by from_pretrained
        {"dtype": torch.bfloat16, "device_map": "cpu"},  # Accelerate placement
        {"dtype": torch.bfloat16, "trust_remote_code": True},
        {"dtype": "auto"},
        {},
    ],
)
def test_cases_it_does_not_take_go_to_from_pretrained(splade_path, args):
    config = AutoConfig.from_pretrained(splade_path)
    assert load_converted(AutoModelForMaskedLM, splade_path, config, args) is None


def test_a_folder_with_an_adapter_config_goes_to_from_pretrained(splade_path, tmp_path):
    """transformers loads an adapter_config.json next to full weights by itself (its PEFT integration)."""
    folder = tmp_path / "model"
    shutil.copytree(splade_path, folder)
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    config = AutoConfig.from_pretrained(folder)
    assert load_converted(AutoModelForMaskedLM, folder, config, {"dtype": torch.bfloat16}) is None


def test_a_folder_without_safetensors_goes_to_from_pretrained(splade_path, tmp_path):
    model = AutoModelForMaskedLM.from_pretrained(splade_path)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # the older pickle layout
    assert checkpoint_files(tmp_path) == []
    config = AutoConfig.from_pretrained(tmp_path)
    assert load_converted(AutoModelForMaskedLM, tmp_path, config, {"dtype": torch.bfloat16}) is None


def test_the_encoder_takes_it_for_bf16_and_encodes_as_before(splade_path, tmp_path, monkeypatch):
    """Through SparseEncoder: the bf16 model loaded tensor by tensor encodes exactly as one loaded by
    from_pretrained (the path is switched off by hiding the checkpoint from it)."""
    from sparsebridge import converting_load, precision

    # bf16 must not fall back to fp32 on a CPU without BF16 (the capability probe is faked for that)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    texts = ["sparse retrieval with learned term weights", "a", "boundary layer flow over a flat plate"]
    folder = tmp_path / "model"
    shutil.copytree(splade_path, folder)
    fast = SparseEncoder(str(folder), model_kwargs={"dtype": torch.bfloat16})
    assert next(fast[0].auto_model.parameters()).dtype == torch.bfloat16
    monkeypatch.setattr(converting_load, "checkpoint_files", lambda folder: [])
    plain = SparseEncoder(str(folder), model_kwargs={"dtype": torch.bfloat16})
    assert torch.equal(fast.encode(texts).to_dense(), plain.encode(texts).to_dense())
