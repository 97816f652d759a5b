"""A hybrid index keeps its dense vectors, and a hybrid search on a sparse-only index says what it did.

Real models (the packaged SPLADE model, all-MiniLM-L6-v2 for the dense side) on every connector:
Qdrant Edge and qdrant-client's local mode for real; Elasticsearch and OpenSearch through their real
clients against the engine double of ``tests/lucene_testkit.py`` (no server can run here), whose
stored ``_source`` documents show whether the dense field is still there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from lucene_testkit import FakeEngine, FakeServer
from sparsebridge.cli import main
from sparsebridge.connector import IndexMismatchError
from sparsebridge.pipeline import Pipeline

pytest.importorskip("qdrant_edge")

INDEX = "hybrid"
DOCS = [
    {"_id": "d1", "text": "the computer stores data in a magnetic memory"},
    {"_id": "d2", "text": "an electronic circuit for solving linear equations"},
    {"_id": "d3", "text": "pulse transformers in digital computers"},
]
BACKENDS = ["edge", "local", "elasticsearch", "opensearch"]


@pytest.fixture(scope="module")
def dense(minilm_path):
    from sparsebridge import DenseEncoder

    return DenseEncoder(str(minilm_path), device="cpu")


@contextmanager
def backend(kind: str, tmp_path: Path) -> Iterator[tuple]:
    """(make a connector, stored dense vectors by id or None when the engine is not inspectable)."""
    if kind in ("edge", "local"):
        from sparsebridge_qdrant import QdrantConnector

        path = str(tmp_path / kind)
        yield (lambda: QdrantConnector(mode=kind, path=path, index=INDEX)), None
        return
    flavor = {"elasticsearch": ("elasticsearch", "9.1.0"), "opensearch": ("opensearch", "3.3.0")}[kind]
    engine = FakeEngine(flavor=flavor[0], version=flavor[1])
    with FakeServer(engine) as server:
        if kind == "elasticsearch":
            from sparsebridge_elasticsearch import ElasticsearchConnector as cls
        else:
            from sparsebridge_opensearch import OpenSearchConnector as cls

        def stored_dense() -> dict:
            docs = engine.indices[INDEX]["docs"]
            return {doc_id: source.get("dense") for doc_id, source in docs.items()}

        yield (lambda: cls(url=server.url, index=INDEX)), stored_dense


def pipeline(encoder, connector, dense=None) -> Pipeline:
    return Pipeline(
        encoder,
        connector,
        INDEX,
        model_name="packaged:splade",
        dense_encoder=dense,
        dense_model_name="packaged:minilm" if dense is not None else None,
        show_progress=False,
    )


@pytest.mark.parametrize("kind", BACKENDS)
def test_sparse_only_reingest_of_a_hybrid_index_is_refused(kind, encoder, dense, tmp_path):
    with backend(kind, tmp_path) as (connect, stored_dense):
        with pipeline(encoder, connect(), dense) as pipe:
            report = pipe.ingest(DOCS)
            assert report.ok and report.written == len(DOCS)
        before = stored_dense() if stored_dense else None
        if before is not None:
            assert all(isinstance(v, list) and len(v) == 384 for v in before.values())

        with pipeline(encoder, connect()) as sparse_only, pytest.raises(IndexMismatchError) as err:
            sparse_only.ingest(DOCS)
        message = str(err.value)
        assert "\n" not in message
        for part in (f"index {INDEX!r}", "field 'dense'", "hybrid = true", "packaged:minilm"):
            assert part in message, message

        # The dense vectors are all still there.
        if stored_dense:
            assert stored_dense() == before
        else:
            with pipeline(encoder, connect(), dense) as pipe:
                hits = pipe.search(["magnetic memory"], mode="dense", top_k=10)[0].hits
                assert sorted(h.id for h in hits) == ["d1", "d2", "d3"]
        # A hybrid re-ingest (the setting the message names) is accepted.
        with pipeline(encoder, connect(), dense) as pipe:
            assert pipe.ingest(DOCS).written == len(DOCS)


@pytest.mark.parametrize("kind", ["edge", "elasticsearch"])
def test_hybrid_search_on_a_sparse_only_index_says_so(kind, encoder, dense, tmp_path):
    with backend(kind, tmp_path) as (connect, _):
        with pipeline(encoder, connect()) as pipe:
            assert pipe.ingest(DOCS).written == len(DOCS)
            sparse_hits = [h.id for h in pipe.search(["magnetic memory"])[0].hits]
        with pipeline(encoder, connect(), dense) as pipe:
            result = pipe.search(["magnetic memory"], mode="hybrid")[0]
            assert [h.id for h in result.hits] == sparse_hits  # what it ran: the sparse search
            assert len(result.notes) == 1, result.notes
            assert "holds no dense vectors" in result.notes[0] and "sparse vectors only" in result.notes[0]
            with pytest.raises(IndexMismatchError, match="holds no dense vectors.*--mode sparse"):
                pipe.search(["magnetic memory"], mode="dense")


def test_cli_reingest_without_hybrid_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    base = (
        f'[model]\ndevice = "cpu"\n[backend]\nconnector = "qdrant"\nmode = "edge"\n'
        f"path = {json.dumps(str(tmp_path / 'edge'))}\nindex = {json.dumps(INDEX)}\n"
    )
    hybrid, sparse = tmp_path / "hybrid.toml", tmp_path / "sparse.toml"
    hybrid.write_text(base + "[search]\nhybrid = true\n", encoding="utf-8")
    sparse.write_text(base, encoding="utf-8")
    runner = CliRunner()
    first = runner.invoke(main, ["ingest", str(corpus), "--config", str(hybrid), "--quiet"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(main, ["ingest", str(corpus), "--config", str(sparse), "--quiet"])
    assert again.exit_code == 1, again.output
    lines = [ln for ln in again.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "holds dense vectors" in lines[0] and "hybrid = true" in lines[0], again.output
    dense_hits = runner.invoke(
        main, ["search", "magnetic memory", "--mode", "dense", "--config", str(hybrid), "--quiet", "--json"]
    )
    assert dense_hits.exit_code == 0, dense_hits.output
    assert len(json.loads(dense_hits.stdout)[0]["hits"]) == len(DOCS)
