"""An index built by one model is not extended or searched with another one of the same vocabulary.

Every model here is real: the packaged SPLADE model; a copy of its folder (the same model, elsewhere:
accepted); a copy with one weight of ``model.safetensors`` changed (refused); the packaged model
with another ``max_active_dims`` (refused); and an inference-free query side (an IDF
``SparseStaticEmbedding`` built from the documents, so another query side: refused). Indexes live in
embedded Qdrant Edge folders; the checks run on the metadata the connector stored, through the
pipeline's ingest and search paths and the CLI (``--allow-model-change``, ``[ingest]
allow_model_change``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from sparsebridge import SparseEncoder
from sparsebridge.cli import main
from sparsebridge.connector import IndexSpec
from sparsebridge.errors import ModelMismatchError
from sparsebridge.modules import MLMTransformer, Router, SparseStaticEmbedding, SpladePooling
from sparsebridge.pipeline import Pipeline
from sparsebridge.provenance import producer_fingerprint

pytest.importorskip("qdrant_edge")

INDEX = "fp"
DOCS = [
    {"_id": "d1", "text": "the computer stores data in a magnetic memory"},
    {"_id": "d2", "text": "an electronic circuit for solving linear equations"},
    {"_id": "d3", "text": "pulse transformers in digital computers"},
]
MORE = [{"_id": "d4", "text": "magnetic core memory for a digital computer"}]


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    # Each test computes the weight hashes itself: nothing read from another run's cache.
    monkeypatch.setenv("SPARSEBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("sparsebridge.provenance._FILE_HASHES", None)


@pytest.fixture(scope="module")
def copied_model(splade_path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("copy") / "model"
    shutil.copytree(splade_path, folder)
    return folder


@pytest.fixture(scope="module")
def perturbed_model(splade_path, tmp_path_factory) -> Path:
    """The packaged model's folder with one weight changed: the bias of the logit of "memory"."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("perturbed") / "model"
    shutil.copytree(splade_path, folder)
    path = folder / "model.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 - safe_open has no iterator
    from transformers import AutoTokenizer

    memory = AutoTokenizer.from_pretrained(str(splade_path)).convert_tokens_to_ids("memory")
    bias = tensors["cls.predictions.bias"].clone()  # the MLM head's bias of each vocabulary logit
    bias[memory] += 0.5
    tensors["cls.predictions.bias"] = bias
    save_file(tensors, str(path), metadata=metadata)
    return folder


@pytest.fixture(scope="module")
def copied_encoder(copied_model):
    return SparseEncoder(str(copied_model), device="cpu")


@pytest.fixture(scope="module")
def perturbed_encoder(perturbed_model):
    return SparseEncoder(str(perturbed_model), device="cpu")


@pytest.fixture(scope="module")
def free_encoder(splade_path):
    """The packaged model with an IDF query side built from DOCS: same vocabulary, other query side."""
    transformer = MLMTransformer(str(splade_path))
    static = SparseStaticEmbedding.from_corpus(transformer.tokenizer, [d["text"] for d in DOCS], frozen=True)
    return SparseEncoder(
        modules=[Router.for_query_document([static], [transformer, SpladePooling("max", "relu")])], device="cpu"
    )


def edge_pipeline(encoder, path: Path, **kwargs) -> Pipeline:
    from sparsebridge_qdrant import QdrantConnector

    conn = QdrantConnector(mode="edge", path=str(path), index=INDEX)
    return Pipeline(encoder, conn, INDEX, model_name="packaged:splade", show_progress=False, **kwargs)


@pytest.fixture
def built_index(encoder, tmp_path) -> Path:
    path = tmp_path / "edge"
    with edge_pipeline(encoder, path) as pipe:
        report = pipe.ingest(DOCS)
        assert report.written == len(DOCS) and report.ok and report.notes == []
        assert pipe.search(["magnetic memory"])[0].hits[0].id == "d1"
        producer = pipe.connector.index_metadata()["producer"]
    assert set(producer) == {"document", "query"}
    assert producer["document"]["weights"].startswith("files-sha256:")
    return path


# --------------------------------------------------------------------------- the fingerprint itself


def test_fingerprint_is_a_plain_stable_dict(encoder, splade_path, copied_encoder, perturbed_encoder):
    fp = producer_fingerprint(encoder, None, "document")
    assert list(fp) == ["format", "side", "weights", "modules", "prompt", "max_active_dims"]
    assert json.loads(json.dumps(fp)) == fp
    assert [m["type"] for m in fp["modules"]] == ["MLMTransformer", "SpladePooling"]
    assert fp["modules"][1]["config"]["activation_function"] == "relu"
    again = SparseEncoder(str(splade_path), device="cpu")
    assert producer_fingerprint(again, None, "document") == fp  # another load, same fingerprint
    assert producer_fingerprint(copied_encoder, None, "document") == fp  # the same files elsewhere
    changed = perturbed_encoder
    assert producer_fingerprint(changed, None, "document")["weights"] != fp["weights"]
    assert producer_fingerprint(encoder, 32, "document")["max_active_dims"] == 32
    assert producer_fingerprint(encoder, None, "query")["side"] == "query"
    # The perturbation is real: the changed model's vectors differ.
    text = [DOCS[0]["text"]]
    assert not torch.equal(encoder.encode_document(text).to_dense(), changed.encode_document(text).to_dense())


def test_weight_hashes_are_cached_between_processes(encoder, tmp_path):
    from sparsebridge import provenance

    producer_fingerprint(encoder, None, "document")
    cached = json.loads(provenance.hash_cache_path().read_text(encoding="utf-8"))
    assert any(key.split("|")[0].endswith("model.safetensors") for key in cached)


# --------------------------------------------------------------------------- ingest and search


def test_same_model_from_another_folder_is_accepted(built_index, copied_encoder):
    with edge_pipeline(copied_encoder, built_index) as pipe:
        report = pipe.ingest(MORE)
        assert report.ok and report.written == 1 and report.notes == []
        result = pipe.search(["magnetic core memory"])[0]
        assert result.notes == [] and result.hits[0].id == "d4"


@pytest.mark.parametrize("variant", ["weights", "max_active_dims", "query_side"])
def test_another_producer_is_refused_then_accepted_with_the_flag(
    variant, encoder, built_index, perturbed_encoder, free_encoder
):
    kwargs: dict = {}
    model = encoder
    if variant == "weights":
        model = perturbed_encoder
        want = ["document side: weights: index files-sha256:", "query side: weights:"]
    elif variant == "max_active_dims":
        kwargs["max_active_dims"] = 32
        want = ["document side: max_active_dims: index None, in use 32", "query side: max_active_dims"]
    else:
        kwargs["query_encoder"] = free_encoder
        want = ["query side: modules: index MLMTransformer -> SpladePooling, in use SparseStaticEmbedding"]
    with edge_pipeline(model, built_index, **kwargs) as pipe:
        with pytest.raises(ModelMismatchError) as err:
            pipe.ingest(MORE)
        message = str(err.value)
        assert "\n" not in message and f"index {INDEX!r}" in message and "--allow-model-change" in message
        for part in want:
            assert part in message, message
        if variant == "query_side":
            assert "document side" not in message  # the document side is the same model
        assert pipe.count() == len(DOCS)  # refused before anything was written
        with pytest.raises(ModelMismatchError, match="query side"):
            pipe.search(["magnetic memory"])
    with edge_pipeline(model, built_index, allow_model_change=True, **kwargs) as pipe:
        report = pipe.ingest(MORE)
        assert report.ok and report.written == 1
        assert len(report.notes) == 1 and "allow_model_change" in report.notes[0] and want[0] in report.notes[0]
        result = pipe.search(["magnetic memory"])[0]
        assert result.hits and any("allow_model_change" in note for note in result.notes)
        assert pipe.count() == len(DOCS) + 1


def test_search_compares_the_query_side_only(encoder, built_index, perturbed_encoder):
    # Documents from changed weights, queries from the index's own model: writing is refused,
    # searching is not (the query vectors are what the index was built to be searched with).
    with edge_pipeline(perturbed_encoder, built_index, query_encoder=encoder) as pipe:
        with pytest.raises(ModelMismatchError) as err:
            pipe.ingest(MORE)
        assert "document side: weights" in str(err.value) and "query side" not in str(err.value)
        result = pipe.search(["magnetic memory"])[0]
        assert result.notes == [] and result.hits[0].id == "d1"


def test_an_index_without_fingerprint_is_accepted_with_a_note(encoder, tmp_path):
    from sparsebridge_qdrant import QdrantConnector

    path = tmp_path / "edge"
    with edge_pipeline(encoder, path) as pipe:
        old = {k: v for k, v in pipe.metadata.items() if k != "producer"}  # what older versions stored
    with QdrantConnector(mode="edge", path=str(path), index=INDEX) as conn:
        conn.ensure_index(IndexSpec(INDEX, metadata=old))
    with edge_pipeline(encoder, path, max_active_dims=32) as pipe:
        report = pipe.ingest(DOCS)
        assert report.ok and report.written == len(DOCS)
        assert len(report.notes) == 1 and "records no model fingerprint" in report.notes[0]
        result = pipe.search(["magnetic memory"])[0]
        assert result.hits[0].id == "d1" and any("no model fingerprint" in n for n in result.notes)


# --------------------------------------------------------------------------- the CLI


def _config(tmp_path: Path, edge: Path, extra: str = "") -> Path:
    config = tmp_path / "sb.toml"
    config.write_text(
        f'[model]\ndevice = "cpu"\nmax_active_dims = 32\n'
        f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = {json.dumps(str(edge))}\n'
        f"index = {json.dumps(INDEX)}\n{extra}",
        encoding="utf-8",
    )
    return config


def test_cli_refuses_in_one_line_and_accepts_the_flag_and_the_key(built_index, tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    corpus = tmp_path / "more.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in MORE), encoding="utf-8")
    runner = CliRunner()
    config = _config(tmp_path, built_index)

    refused = runner.invoke(main, ["ingest", str(corpus), "--config", str(config), "--quiet"])
    assert refused.exit_code == 1, refused.output
    lines = [ln for ln in refused.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "max_active_dims: index None, in use 32" in lines[0], refused.output
    assert "--allow-model-change" in lines[0]
    searched = runner.invoke(main, ["search", "magnetic memory", "--config", str(config), "--quiet"])
    assert searched.exit_code == 1 and "query side: max_active_dims" in searched.output

    flagged = runner.invoke(main, ["ingest", str(corpus), "--config", str(config), "--quiet", "--allow-model-change"])
    assert flagged.exit_code == 0, flagged.output
    assert "note: " in flagged.output and "allow_model_change" in flagged.output
    found = runner.invoke(
        main, ["search", "magnetic core memory", "--config", str(config), "--quiet", "--allow-model-change", "--json"]
    )
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)[0]["hits"][0]["id"] == "d4"

    keyed = _config(tmp_path, built_index, "[ingest]\nallow_model_change = true\n")
    again = runner.invoke(main, ["ingest", str(corpus), "--config", str(keyed), "--quiet", "--json"])
    assert again.exit_code == 0, again.output
    assert any("allow_model_change" in n for n in json.loads(again.stdout)["notes"])
