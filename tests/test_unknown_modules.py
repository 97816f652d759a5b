"""Saves whose modules.json names module classes beyond the usual sparse ones (issue 10, item 4):
sentence-transformers' ``MultiVectorMask`` loads and gives the oracle's outputs; a class nobody
implements fails with the oracle's own wording, as an error of ours deriving from the builtin the
oracle raises. Saves are written by sentence-transformers itself (the oracle, test-only)."""

from __future__ import annotations

import json

import pytest
import torch
from sparsebridge import SparseEncoder
from sparsebridge.errors import ModelLoadError, ModuleImportError, SparsebridgeError, UntrustedModuleError
from tolerances import float32_close

TEXTS = ["Hello, world! A test; with punctuation.", "heat transfer, boundary layers"]


def oracle_cls():
    from sentence_transformers import SparseEncoder as Oracle

    return Oracle


@pytest.fixture(scope="module")
def oracle_mask_saves(splade_path, tmp_path_factory):
    """Two saves by sentence-transformers with a MultiVectorMask: after the pooling, and before it
    with a punctuation skip list (so the pooling really skips tokens)."""
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask as OracleMask

    saves = {}
    for where in ("after", "before"):
        model = oracle_cls()(str(splade_path), device="cpu")
        if where == "after":
            model.append(OracleMask())
        else:
            mask = OracleMask([",", "!", ";", "."])
            mask.resolve_with_tokenizer(model.tokenizer)
            modules = list(model)
            model = oracle_cls()(modules=[modules[0], mask, modules[1]], device="cpu")
        path = tmp_path_factory.mktemp(f"mask_{where}") / "model"
        model.save_pretrained(str(path))
        saves[where] = path
    return saves


@pytest.mark.parametrize("where", ["after", "before"])
def test_a_multi_vector_mask_loads_with_the_oracles_outputs(splade_path, oracle_mask_saves, where):
    path = str(oracle_mask_saves[where])
    ours, theirs = SparseEncoder(path, device="cpu"), oracle_cls()(path, device="cpu")
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    for method in ("encode", "encode_query", "encode_document"):
        mine = getattr(ours, method)(TEXTS, convert_to_sparse_tensor=False)
        expected = getattr(theirs, method)(TEXTS, convert_to_sparse_tensor=False)
        assert float32_close(mine, expected), method
    if where == "before":  # the skip list changes document vectors, not query vectors
        plain = SparseEncoder(str(splade_path), device="cpu")
        assert torch.equal(ours.encode_query(TEXTS).to_dense(), plain.encode_query(TEXTS).to_dense())
        assert not torch.equal(ours.encode_document(TEXTS).to_dense(), plain.encode_document(TEXTS).to_dense())


def _with_module_type(splade_path, tmp_path, type_name):
    path = tmp_path / "model"
    SparseEncoder(str(splade_path), device="cpu").save_pretrained(path, create_model_card=False)
    modules = json.loads((path / "modules.json").read_text())
    modules[1]["type"] = type_name
    (path / "modules.json").write_text(json.dumps(modules))
    return path


def _errors(path, **kwargs):
    with pytest.raises(Exception) as ours:
        SparseEncoder(str(path), device="cpu", **kwargs)
    with pytest.raises(Exception) as theirs:
        oracle_cls()(str(path), device="cpu", **kwargs)
    return ours.value, theirs.value


@pytest.mark.parametrize(
    "type_name",
    ["sentence_transformers.base.modules.NoSuchPooling", "sentence_transformers.sparse_encoder.modules.Made_Up"],
)
def test_a_sentence_transformers_class_nobody_has_fails_with_the_oracles_words(splade_path, tmp_path, type_name):
    ours, theirs = _errors(_with_module_type(splade_path, tmp_path, type_name))
    assert type(theirs) is ImportError
    assert isinstance(ours, ModuleImportError) and isinstance(ours, ImportError) and isinstance(ours, SparsebridgeError)
    assert str(ours).startswith(str(theirs)), (str(ours), str(theirs))
    assert "modules.json, module 1" in str(ours) and "SpladePooling" in str(ours)


@pytest.mark.parametrize("type_name", ["my_package.modules.FancyPooling", "FancyPooling"])
def test_a_custom_class_without_trust_remote_code_fails_with_the_oracles_words(splade_path, tmp_path, type_name):
    ours, theirs = _errors(_with_module_type(splade_path, tmp_path, type_name))
    assert type(theirs) is ValueError
    assert isinstance(ours, UntrustedModuleError) and isinstance(ours, ValueError)
    assert isinstance(ours, ModelLoadError)
    # the same words, on one line, then where the class is named
    assert str(ours) == str(theirs).replace("\n", " ") + " (modules.json, module 1)"


def test_a_custom_class_with_trust_remote_code_is_not_run(splade_path, tmp_path):
    path = _with_module_type(splade_path, tmp_path, "my_package.modules.FancyPooling")
    ours, theirs = _errors(path, trust_remote_code=True)
    assert isinstance(theirs, ImportError)  # the oracle tries to import it; nothing here provides it
    assert isinstance(ours, ModuleImportError)
    assert str(ours).startswith('Module "my_package.modules" does not define a "FancyPooling" attribute/class')
    assert "runs no custom module code" in str(ours)
