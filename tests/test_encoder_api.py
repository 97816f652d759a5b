"""SparseEncoder API behaviour: bad input, loading layouts and errors, Hub cache, save/load round trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from sparsebridge import SimilarityFunction, SparseEncoder
from sparsebridge.loading import ModelLoadError
from tolerances import FLOAT32_ATOL, FLOAT32_RTOL, float32_close

VOCAB = 30522


def test_empty_list_gives_empty_result_of_right_shape(encoder):
    out = encoder.encode([])
    assert out.is_sparse and out.shape == (0, VOCAB)
    dense = encoder.encode([], convert_to_sparse_tensor=False)
    assert not dense.is_sparse and dense.shape == (0, VOCAB)
    assert encoder.encode([], convert_to_tensor=False) == []


@pytest.mark.parametrize(
    "bad, position",
    [(None, None), (["a", None], "inputs[1]"), (["ok", "fine", 3], "inputs[2]"), ([b"bytes"], "inputs[0]")],
)
def test_non_string_input_raises_type_error_naming_position(encoder, bad, position):
    with pytest.raises(TypeError) as exc:
        encoder.encode(bad)
    if position:
        assert position in str(exc.value)


def test_unknown_prompt_name_lists_known_ones(encoder):
    with pytest.raises(ValueError) as exc:
        encoder.encode("x", prompt_name="nope")
    assert "'nope'" in str(exc.value) and "'document'" in str(exc.value) and "'query'" in str(exc.value)


def test_shapes_and_properties(encoder):
    assert encoder.get_sentence_embedding_dimension() == VOCAB
    assert encoder.max_seq_length == encoder.get_max_seq_length() == 512
    assert encoder.similarity_fn_name == "dot"
    assert encoder.transformers_model.__class__.__name__ == "BertForMaskedLM"
    assert encoder.device.type == "cpu"
    assert encoder.get_model_kwargs() == []
    features = encoder.tokenize(["hello world"])
    assert features["input_ids"].shape == (1, 4)
    one = encoder.encode("hello world")
    assert one.shape == (VOCAB,) and one.is_sparse


def test_similarity_fn_name_is_validated(encoder):
    with pytest.raises(ValueError, match="only supports similarity_fn_name in .*got 'jaccard'"):
        encoder.similarity_fn_name = "jaccard"
    assert SimilarityFunction("dot") is SimilarityFunction.DOT_PRODUCT


def test_splade_pooling_chunk_size_round_trip(encoder):
    emb = encoder.encode(["a somewhat longer sentence about aerodynamics", "short"])
    encoder.splade_pooling_chunk_size = 3
    try:
        assert encoder.splade_pooling_chunk_size == 3
        chunked = encoder.encode(["a somewhat longer sentence about aerodynamics", "short"])
    finally:
        encoder.splade_pooling_chunk_size = None
    assert float32_close(emb, chunked)


def test_unsupported_backend_is_refused(splade_path):
    with pytest.raises(ValueError, match="backend 'tensorrt'"):
        SparseEncoder(str(splade_path), backend="tensorrt")


def test_save_load_round_trip_and_oracle_loads_ours(encoder, tmp_path):
    from sentence_transformers import SparseEncoder as OracleEncoder

    encoder.prompts["query"] = "query: "
    try:
        encoder.save_pretrained(tmp_path / "saved")
    finally:
        encoder.prompts["query"] = ""
    modules = json.loads((tmp_path / "saved" / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_SpladePooling"]
    texts = ["turbulent boundary layers", "heat transfer at hypersonic speed"]
    reloaded = SparseEncoder(str(tmp_path / "saved"), device="cpu")
    assert reloaded.prompts["query"] == "query: "
    assert torch.equal(reloaded.encode(texts).to_dense(), encoder.encode(texts).to_dense())
    oracle = OracleEncoder(str(tmp_path / "saved"), device="cpu")
    assert oracle.prompts["query"] == "query: "
    assert float32_close(reloaded.encode_query(texts), oracle.encode_query(texts))


def test_we_load_what_the_oracle_saves(splade_path, encoder, tmp_path):
    from sentence_transformers import SparseEncoder as OracleEncoder

    oracle = OracleEncoder(str(splade_path), device="cpu", similarity_fn_name="cosine", prompts={"query": "q: "})
    oracle.save_pretrained(str(tmp_path / "st"))
    ours = SparseEncoder(str(tmp_path / "st"), device="cpu")
    assert ours.similarity_fn_name == "cosine" and ours.prompts["query"] == "q: "
    texts = ["pressure distribution on a cone", ""]
    assert float32_close(ours.encode_query(texts), oracle.encode_query(texts))


def test_legacy_module_types_load(splade_path, tmp_path):
    """Models saved by sentence-transformers 5.x name MLMTransformer and the old models package."""
    from sentence_transformers import SparseEncoder as OracleEncoder

    folder = tmp_path / "legacy"
    shutil.copytree(splade_path, folder)
    (folder / "1_SpladePooling").mkdir()
    (folder / "1_SpladePooling" / "config.json").write_text(
        json.dumps({"pooling_strategy": "max", "activation_function": "relu", "word_embedding_dimension": None})
    )
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.sparse_encoder.models.MLMTransformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_SpladePooling",
                    "type": "sentence_transformers.sparse_encoder.models.SpladePooling",
                },
            ]
        )
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"__version__": {"sentence_transformers": "5.0.0"}, "model_type": "SparseEncoder", "prompts": {}})
    )
    ours = SparseEncoder(str(folder), device="cpu")
    assert ours.max_seq_length == 256
    ref = OracleEncoder(str(folder), device="cpu")
    texts = ["wing flutter", "shock wave interaction with a boundary layer"]
    assert float32_close(ours.encode(texts), ref.encode(texts))


def test_unknown_module_type_names_file_and_type(splade_path, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(splade_path, folder)
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "mylib.Fancy"}]))
    with pytest.raises(ValueError) as exc:
        SparseEncoder(str(folder), device="cpu")
    assert "modules.json" in str(exc.value) and "mylib.Fancy" in str(exc.value)


def test_missing_module_folder_and_missing_files(splade_path, tmp_path):
    folder = tmp_path / "missing"
    shutil.copytree(splade_path, folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_SpladePooling",
                    "type": "sentence_transformers.models.SpladePooling",
                },
            ]
        )
    )
    with pytest.raises(FileNotFoundError, match="points to missing folder .*1_SpladePooling"):
        SparseEncoder(str(folder), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="neither modules.json"):
        SparseEncoder(str(empty), device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        SparseEncoder(str(tmp_path / "nowhere" / "model"), device="cpu")


def test_non_masked_lm_checkpoint_becomes_csr_as_in_sentence_transformers(minilm_path, tmp_path):
    from sentence_transformers import SparseEncoder as OracleEncoder

    folder = tmp_path / "dense"
    shutil.copytree(minilm_path, folder)
    (folder / "modules.json").unlink()
    ours, ref = SparseEncoder(str(folder), device="cpu"), OracleEncoder(str(folder), device="cpu")
    assert (
        [type(m).__name__ for m in ours]
        == [type(m).__name__ for m in ref]
        == [
            "Transformer",
            "Pooling",
            "SparseAutoEncoder",
        ]
    )
    assert ours[0].transformer_task == ref[0].transformer_task == "feature-extraction"
    assert ours[1].pooling_mode == ref[1].pooling_mode == "mean"
    assert ours[2].get_config_dict() == ref[2].get_config_dict()
    assert ours.max_active_dims == ref.max_active_dims == 256


def _fake_hub_cache(cache: Path, repo_id: str, source: Path) -> str:
    """Lay out a Hugging Face cache entry for repo_id, as huggingface_hub writes it after a download."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo_dir / "snapshots" / commit)
    return commit


def test_hub_id_loads_from_cache_folder_offline(splade_path, tmp_path, monkeypatch):
    """The Hub is unreachable here; huggingface_hub resolves the id from its cache layout."""
    cache = tmp_path / "hub-cache"
    _fake_hub_cache(cache, "acme/tiny-splade", splade_path)
    model = SparseEncoder("acme/tiny-splade", cache_folder=str(cache), local_files_only=True, device="cpu")
    assert model.encode("hello").shape == (VOCAB,)
    # SENTENCE_TRANSFORMERS_HOME is the cache when no cache_folder is given; HF_HUB_OFFLINE is honoured.
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert SparseEncoder("acme/tiny-splade", device="cpu").get_sentence_embedding_dimension() == VOCAB
    with pytest.raises(ModelLoadError, match="acme/absent"):
        SparseEncoder("acme/absent", device="cpu")
    with pytest.raises(ModelLoadError):
        SparseEncoder("acme/tiny-splade", revision="no-such-branch", device="cpu")


def test_batches_come_back_in_input_order_as_a_coalesced_tensor(encoder):
    """Batches run longest first; the assembled result is in input order, coalesced, and equal to
    encoding each text alone (sparsebridge.encoder._assemble builds it without a second sort)."""
    texts = ["short", "a much longer text about boundary layers and shock waves", "mid length text", "x"] * 3
    together = encoder.encode(texts, batch_size=5)
    assert together.is_sparse and together.is_coalesced()
    alone = torch.stack([encoder.encode(t, convert_to_sparse_tensor=False) for t in texts])
    torch.testing.assert_close(together.to_dense(), alone, atol=FLOAT32_ATOL, rtol=FLOAT32_RTOL)
    # the coalesced flag is true to the indices: rows ascending, columns ascending within each row
    rows, cols = together.indices()
    keys = rows * together.shape[1] + cols
    assert bool((keys[1:] > keys[:-1]).all())
