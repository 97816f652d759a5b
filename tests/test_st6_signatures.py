"""An independent check of the promise "``SparseEncoder`` has sentence-transformers' public API":
every public name of the installed sentence-transformers ``SparseEncoder`` (the oracle, test-only)
must exist on ours with the same kind (method, property, class attribute) and, for methods, the
same parameters (names, kinds, defaults), read with ``inspect.signature``. The constructor counts
too, and so do the public attributes of a loaded instance.

The only differences allowed are the ones listed below, each with its reason. Nothing here is
taken from our own code: the names come from the oracle.
"""

from __future__ import annotations

import inspect

import pytest
from torch import nn

# Training and Hub-organisation helpers: training stays with sentence-transformers (README).
TRAINING_AND_HUB_HELPERS = {
    "default_huggingface_organization": "Hub organisation default of push_to_hub",
    "save_to_hub": "deprecated Hub upload (sentence-transformers' own replacement is push_to_hub)",
}
# Instance attributes whose values are objects of each library's own classes: compared field by field.
MODEL_CARD_FIELDS = (
    "language",
    "license",
    "model_name",
    "model_id",
    "train_datasets",
    "eval_datasets",
    "task_name",
    "tags",
    "local_files_only",
    "generate_widget_examples",
    "base_model",
    "pipeline_tag",
    "library_name",
    "model_type",
)
# Ours only, documented in the README / docstrings.
OUR_EXTRA_NAMES = {"default_similarity", "model_name_or_path"}
# Parameters of ours, after all of the oracle's (README "Precision, ONNX and OpenVINO"): a shorthand
# for model_kwargs={"dtype": ...} that also offers int8.
OUR_EXTRA_PARAMETERS = {"__init__": {"precision"}}


def _excluded(name: str) -> bool:
    return name in TRAINING_AND_HUB_HELPERS


def _public_names(cls: type) -> set[str]:
    """Public names the class defines or overrides beyond what torch's ``nn.Sequential`` gives."""
    names = set()
    for name in dir(cls):
        if name.startswith("_"):
            continue
        if hasattr(nn.Sequential, name) and inspect.getattr_static(cls, name) is inspect.getattr_static(
            nn.Sequential, name
        ):
            continue
        names.add(name)
    return names | {"__init__"}


def _kind(cls: type, name: str) -> str:
    attr = inspect.getattr_static(cls, name)
    if isinstance(attr, property):
        return "property"
    if isinstance(attr, staticmethod):
        return "staticmethod"
    if isinstance(attr, classmethod):
        return "classmethod"
    if callable(attr):
        return "method"
    return "attribute"


def _parameters(func, skip: set[str]) -> list[tuple[str, str, object]]:
    params = []
    for p in inspect.signature(func).parameters.values():
        if p.name in skip:
            continue
        default = "<required>" if p.default is inspect.Parameter.empty else p.default
        params.append((p.name, p.kind.name, default))
    return params


@pytest.fixture(scope="module")
def classes():
    from sentence_transformers import SparseEncoder as Oracle
    from sparsebridge import SparseEncoder

    return Oracle, SparseEncoder


def test_every_public_name_of_the_oracle_exists_with_the_same_kind(classes):
    oracle, ours = classes
    theirs = {n for n in _public_names(oracle) if not _excluded(n)}
    missing = sorted(n for n in theirs if not hasattr(ours, n))  # ours may inherit what they override
    assert missing == [], f"names of sentence-transformers' SparseEncoder missing here: {missing}"
    kinds = {n: (_kind(oracle, n), _kind(ours, n)) for n in theirs}
    assert {n: k for n, k in kinds.items() if k[0] != k[1]} == {}


def test_no_undocumented_extra_public_names(classes):
    oracle, ours = classes
    extra = _public_names(ours) - _public_names(oracle)
    assert extra <= OUR_EXTRA_NAMES, sorted(extra - OUR_EXTRA_NAMES)


def test_every_public_method_takes_the_oracles_parameters(classes):
    oracle, ours = classes
    differences = {}
    for name in sorted(_public_names(oracle)):
        if _excluded(name) or _kind(oracle, name) in ("property", "attribute"):
            continue
        expected = _parameters(getattr(oracle, name), set())
        actual = _parameters(getattr(ours, name), OUR_EXTRA_PARAMETERS.get(name, set()))
        if expected != actual:
            differences[name] = {"sentence-transformers": expected, "sparsebridge": actual}
    assert differences == {}


def test_class_attributes_have_the_oracles_values(classes):
    oracle, ours = classes
    assert ours.SUPPORTED_SIMILARITY_FN_NAMES == oracle.SUPPORTED_SIMILARITY_FN_NAMES
    assert ours.model_type == oracle.model_type


def test_a_loaded_model_has_the_oracles_public_attributes(classes, splade_path):
    oracle, ours = classes
    theirs = oracle(str(splade_path), device="cpu")
    mine = ours(str(splade_path), device="cpu")
    public = {n for n in vars(theirs) if not n.startswith("_")}
    assert public - set(vars(mine)) == set()
    for name in public - {"model_card_data"}:
        assert getattr(mine, name) == getattr(theirs, name), name
    theirs_card, mine_card = theirs.model_card_data, mine.model_card_data
    assert type(mine_card).__name__ == type(theirs_card).__name__ == "SparseEncoderModelCardData"
    assert mine_card.model is mine
    for field in MODEL_CARD_FIELDS:
        assert getattr(mine_card, field) == getattr(theirs_card, field), field


def test_model_card_data_takes_the_oracles_arguments(classes):
    """The data class a user builds and passes as ``model_card_data=``: same constructor, same methods."""
    from sentence_transformers.sparse_encoder.model_card import SparseEncoderModelCardData as OracleData
    from sparsebridge.model_card_data import SparseEncoderModelCardData

    _, ours = classes
    assert ours.model_card_data_class is SparseEncoderModelCardData
    assert _parameters(SparseEncoderModelCardData, set()) == _parameters(OracleData, set())
    for method in ("register_model", "set_model_id", "set_base_model", "set_language", "set_license", "add_tags"):
        assert _parameters(getattr(SparseEncoderModelCardData, method), set()) == _parameters(
            getattr(OracleData, method), set()
        ), method


def test_the_exclusions_are_real_oracle_names(classes):
    """An exclusion that the oracle does not even have would hide nothing and rot unnoticed."""
    oracle, _ = classes
    names = _public_names(oracle)
    assert set(TRAINING_AND_HUB_HELPERS) <= names
