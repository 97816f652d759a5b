"""``SparseEncoder.merge`` against sentence-transformers' own ``merge`` (the oracle, test-only), both
through the installed mergekit: two real models (the packaged splade-tiny and a copy with perturbed
weights) merged by both libraries give the same weights and embeddings, and bad inputs fail with
the oracle's messages."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from sparsebridge import SparseEncoder
from sparsebridge.errors import MergeError, MissingDependencyError, SparsebridgeError
from tolerances import float32_close

pytest.importorskip("mergekit")

TEXTS = ["boundary layer separation at hypersonic speeds", "heat transfer", "wing flutter"]


@pytest.fixture(scope="module")
def perturbed_path(splade_path, tmp_path_factory):
    """The packaged model with every floating-point weight nudged by seeded noise (a stand-in fine-tune)."""
    model = SparseEncoder(str(splade_path), device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
    path = tmp_path_factory.mktemp("perturbed") / "model"
    model.save_pretrained(path, create_model_card=False)
    return path


def oracle_cls():
    from sentence_transformers import SparseEncoder as Oracle

    return Oracle


def backbone_state(model) -> dict[str, torch.Tensor]:
    """The Hugging Face model's own state dict (the same keys in both libraries)."""
    first = model[0]
    return (getattr(first, "auto_model", None) or first.model).state_dict()


@pytest.mark.parametrize(
    ("method", "parameters"), [("linear", {"weight": [0.6, 0.4]}), ("slerp", None), ("slerp", {"t": 0.3})]
)
def test_merged_weights_and_embeddings_equal_the_oracles(splade_path, perturbed_path, method, parameters):
    paths = [str(splade_path), str(perturbed_path)]
    ours = SparseEncoder.merge(paths, method, parameters=parameters)
    theirs = oracle_cls().merge(paths, method, parameters=parameters)
    assert isinstance(ours, SparseEncoder) and not ours.training
    mine, oracle = backbone_state(ours), backbone_state(theirs)
    assert mine.keys() == oracle.keys()
    assert all(torch.equal(mine[k], oracle[k]) for k in mine)
    embeddings = ours.encode(TEXTS, convert_to_sparse_tensor=False)
    expected = theirs.encode(TEXTS, convert_to_sparse_tensor=False)
    assert float32_close(embeddings, expected)
    # The merge really mixes the two models (neither input comes back).
    first = SparseEncoder(paths[0], device="cpu").encode(TEXTS, convert_to_sparse_tensor=False)
    assert not float32_close(embeddings, first)


def test_merging_instances_leaves_them_unchanged_and_keeps_ties(splade_path, perturbed_path):
    a, b = SparseEncoder(str(splade_path), device="cpu"), SparseEncoder(str(perturbed_path), device="cpu")
    before = {k: v.clone() for k, v in b.state_dict().items()}
    merged = SparseEncoder.merge([a, b], parameters={"weight": [0.5, 0.5]})
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())
    hf = merged[0].auto_model
    assert hf.get_output_embeddings().weight is hf.get_input_embeddings().weight  # still tied
    assert merged.model_card_data.model is merged and merged.model_card_data.local_files_only


def _error(call):
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_one_model_is_refused_as_by_the_oracle(splade_path):
    ours = _error(lambda: SparseEncoder.merge([str(splade_path)]))
    theirs = _error(lambda: oracle_cls().merge([str(splade_path)]))
    assert isinstance(ours, MergeError) and isinstance(ours, type(theirs))
    assert str(ours) == str(theirs) == "At least two models are required for merging."


def test_incompatible_module_configs_are_refused_as_by_the_oracle(splade_path, perturbed_path, tmp_path):
    other = tmp_path / "sum-pooling"
    shutil.copytree(perturbed_path, other)
    config = other / "1_SpladePooling" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "pooling_strategy": "sum"}))
    paths = [str(splade_path), str(other)]
    ours = _error(lambda: SparseEncoder.merge(paths))
    theirs = _error(lambda: oracle_cls().merge(paths))
    assert isinstance(ours, MergeError) and isinstance(ours, type(theirs))
    # The oracle's wording (6.3 lists the differing keys); the lock pins the oracle, so this moves only with it.
    assert str(ours) == str(theirs)
    assert str(ours).startswith("Module '1' has a different configuration in model 1")
    assert "pooling_strategy: model 0='max', model 1='sum'" in str(ours)


def test_bad_dtype_and_base_model_are_refused_as_by_the_oracle(splade_path, perturbed_path):
    paths = [str(splade_path), str(perturbed_path)]
    for kwargs in ({"dtype": "int8"}, {"out_dtype": torch.int64}, {"base_model": paths[0]}):
        ours = _error(lambda kwargs=kwargs: SparseEncoder.merge(paths, **kwargs))
        theirs = _error(lambda kwargs=kwargs: oracle_cls().merge(paths, **kwargs))
        assert isinstance(ours, SparsebridgeError) and isinstance(ours, type(theirs)), kwargs
        assert str(ours) == str(theirs), kwargs


def test_without_mergekit_one_clear_error(splade_path, perturbed_path, monkeypatch):
    # A None entry in sys.modules makes `import mergekit` fail, as when it is not installed.
    for name in [n for n in sys.modules if n == "mergekit" or n.startswith("mergekit.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mergekit", None)
    paths = [str(splade_path), str(perturbed_path)]
    ours = _error(lambda: SparseEncoder.merge(paths))
    theirs = _error(lambda: oracle_cls().merge(paths))
    assert isinstance(ours, MissingDependencyError) and isinstance(ours, ImportError)
    assert str(theirs).startswith("Model merging requires mergekit>=0.1.5 with merge_state_dicts.")
    assert str(ours) == "Model merging requires mergekit>=0.1.5 with merge_state_dicts. Install sparsebridge[merge]."
