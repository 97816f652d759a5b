"""An index built with one model and queried (or extended) with another vocabulary is refused.

The second model is real: the packaged SPLADE model saved to a folder with its tokenizer's
vocabulary changed, once with two token ids swapped (same size, other fingerprint) and once with
tokens added (other size). Indexes live in embedded Qdrant Edge folders; the check runs on the
metadata the connector stored at creation, through the pipeline's search and ingest paths and the
CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sparsebridge import SparseEncoder
from sparsebridge.cli import main
from sparsebridge.connector import IndexMismatchError
from sparsebridge.pipeline import Pipeline, vocab_fingerprint

pytest.importorskip("qdrant_edge")

INDEX = "vocab"
DOCS = [
    {"_id": "d1", "text": "the computer stores data in a magnetic memory"},
    {"_id": "d2", "text": "an electronic circuit for solving linear equations"},
    {"_id": "d3", "text": "pulse transformers in digital computers"},
]


def _swap_tokens(folder: Path, a: str, b: str) -> None:
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def swapped_model(splade_path, tmp_path_factory):
    """The packaged model with the ids of "computer" and "memory" swapped in its tokenizer."""
    folder = tmp_path_factory.mktemp("swapped") / "model"
    shutil.copytree(splade_path, folder)
    _swap_tokens(folder, "computer", "memory")
    return folder


@pytest.fixture(scope="module")
def grown_model(splade_path, tmp_path_factory):
    """The packaged model whose tokenizer has two extra tokens (vocabulary size changes)."""
    base = SparseEncoder(str(splade_path), device="cpu")
    base.tokenizer.add_tokens(["sparsebridgetoken", "anotherextratoken"])
    folder = tmp_path_factory.mktemp("grown") / "model"
    base.save_pretrained(folder)
    return folder


def edge_pipeline(encoder, path: Path, model_name: str) -> Pipeline:
    from sparsebridge_qdrant import QdrantConnector

    conn = QdrantConnector(mode="edge", path=str(path), index=INDEX)
    return Pipeline(encoder, conn, INDEX, model_name=model_name, show_progress=False)


@pytest.fixture
def built_index(encoder, tmp_path):
    """An Edge index built with the packaged model."""
    path = tmp_path / "edge"
    with edge_pipeline(encoder, path, "packaged:splade") as pipe:
        report = pipe.ingest(DOCS)
        assert report.written == len(DOCS) and report.ok
        assert pipe.search(["magnetic memory"])[0].hits[0].id == "d1"  # the control: same model works
    return path


@pytest.mark.parametrize("variant", ["swapped", "grown"])
def test_querying_with_another_vocabulary_is_refused(variant, encoder, built_index, request):
    folder = request.getfixturevalue(f"{variant}_model")
    other = SparseEncoder(str(folder), device="cpu")
    assert vocab_fingerprint(other.tokenizer) != vocab_fingerprint(encoder.tokenizer)
    with edge_pipeline(other, built_index, str(folder)) as pipe:
        stored = pipe.connector.index_metadata()
        assert stored["vocab_fingerprint"] == vocab_fingerprint(encoder.tokenizer)
        with pytest.raises(IndexMismatchError) as err:
            pipe.search(["magnetic memory"])
        message = str(err.value)
        assert f"index {INDEX!r}" in message and "another vocabulary" in message
        assert "packaged:splade" in message and str(folder) in message
        key = "vocab_size" if variant == "grown" else "vocab_fingerprint"
        assert key in message
        assert "re-ingest" in message
        # Extending the index with the other model is refused too, before anything is written.
        with pytest.raises(IndexMismatchError, match="another vocabulary"):
            pipe.ingest([{"_id": "d4", "text": "magnetic core memory"}])
        assert pipe.count() == len(DOCS)


def test_same_vocabulary_from_another_folder_is_accepted(encoder, built_index, splade_path, tmp_path):
    # A copy of the model (another name and path, same vocabulary) is not a mismatch.
    copy = tmp_path / "copy"
    shutil.copytree(splade_path, copy)
    other = SparseEncoder(str(copy), device="cpu")
    with edge_pipeline(other, built_index, str(copy)) as pipe:
        assert pipe.search(["magnetic memory"])[0].hits[0].id == "d1"


def test_cli_search_with_another_vocabulary_is_one_error_line(built_index, swapped_model, tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    config = tmp_path / "other.toml"
    config.write_text(
        f'[model]\nname_or_path = {json.dumps(str(swapped_model))}\ndevice = "cpu"\n'
        f'[backend]\nconnector = "qdrant"\nmode = "edge"\npath = {json.dumps(str(built_index))}\n'
        f"index = {json.dumps(INDEX)}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["search", "magnetic memory", "--config", str(config), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "another vocabulary" in lines[0], result.stderr
