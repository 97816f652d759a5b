"""``eval`` never scores part of a corpus: it ingests what the index lacks, or refuses (``--no-ingest``).

The CLI runs in-process on the packaged model and an embedded Qdrant Edge index. The partial index
is made the way a user makes one: ``sparsebridge ingest CORPUS --limit 50`` (an ingest stopped after
50 documents leaves the same index). The resume test uses a small BEIR folder cut from Cranfield
(its first documents, one of Cranfield's two empty documents, the queries with a relevant document
among them and those judgements) so that it encodes sixty documents, not 1,400.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sparsebridge.cli import main

pytest.importorskip("qdrant_edge")

SUBSET_DOCS = 60
EMPTY = "471"  # a Cranfield document without title or text


def _config(tmp_path: Path, index: str) -> Path:
    config = tmp_path / f"{index}.toml"
    config.write_text(
        f'[model]\ndevice = "cpu"\n[backend]\nconnector = "qdrant"\nmode = "edge"\n'
        f"path = {json.dumps(str(tmp_path / 'edge'))}\nindex = {json.dumps(index)}\n",
        encoding="utf-8",
    )
    return config


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def subset(data_dir, tmp_path_factory) -> Path:
    """A BEIR folder: Cranfield's first documents plus an empty one, and the judgements about them."""
    source = data_dir / "cranfield"
    docs = _rows(source / "corpus.jsonl")
    kept = docs[:SUBSET_DOCS] + [d for d in docs if d["_id"] == EMPTY]
    ids = {d["_id"] for d in kept}
    with open(source / "qrels" / "test.tsv", encoding="utf-8") as fh:
        header = next(fh)
        lines = [line for line in fh if line.split("\t")[1] in ids]  # judgements of the kept documents
    kept_queries = {line.split("\t")[0] for line in lines}
    assert len(kept_queries) >= 5
    folder = tmp_path_factory.mktemp("cranfield-subset") / "cranfield-subset"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in kept), encoding="utf-8")
    queries = [q for q in _rows(source / "queries.jsonl") if q["_id"] in kept_queries]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(header + "".join(lines), encoding="utf-8")
    return folder


def _ids(corpus: Path) -> list[str]:
    return [d["_id"] for d in _rows(corpus / "corpus.jsonl") if (d.get("title") or "").strip() or d["text"].strip()]


def _stored(tmp_path: Path, index: str, ids: list[str]) -> tuple[int, set[str]]:
    from sparsebridge_qdrant import QdrantConnector

    with QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index=index) as conn:
        return conn.count(), set(conn.get(ids))


def test_eval_refuses_a_partial_index_with_no_ingest(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    cranfield = data_dir / "cranfield"
    config = _config(tmp_path, "cranfield")
    runner = CliRunner()
    ingested = runner.invoke(main, ["ingest", str(cranfield), "--limit", "50", "--config", str(config), "--quiet"])
    assert ingested.exit_code == 0, ingested.output

    refused = runner.invoke(main, ["eval", str(cranfield), "--no-ingest", "--config", str(config), "--quiet"])
    assert refused.exit_code == 1, refused.output
    lines = [ln for ln in refused.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), refused.output
    assert "holds 50 of the 1398 documents" in lines[0] and "1348 missing" in lines[0]
    assert "nDCG" not in refused.output
    assert _stored(tmp_path, "cranfield", [])[0] == 50  # refused: nothing ingested


@pytest.mark.slow  # three evals and an ingest, each loading the model: some 15 s on a quiet machine
def test_eval_resumes_a_partial_index(subset, tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    runner = CliRunner()
    config = _config(tmp_path, "partial")
    ids = _ids(subset)
    assert EMPTY not in ids and len(ids) == SUBSET_DOCS
    ingested = runner.invoke(main, ["ingest", str(subset), "--limit", "25", "--config", str(config), "--quiet"])
    assert ingested.exit_code == 0, ingested.output
    assert _stored(tmp_path, "partial", ids)[0] == 25

    resumed = runner.invoke(main, ["eval", str(subset), "--config", str(config), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert f"the index held 25 of the {SUBSET_DOCS} documents: resuming the ingest" in resumed.output
    count, found = _stored(tmp_path, "partial", ids)
    assert count == SUBSET_DOCS and found == set(ids)  # every document once, no duplicates

    # The score is that of the whole corpus: the same as a clean eval into a fresh index.
    again = runner.invoke(main, ["eval", str(subset), "--config", str(config), "--quiet", "--json"])
    fresh = runner.invoke(main, ["eval", str(subset), "--config", str(_config(tmp_path, "fresh")), "--quiet", "--json"])
    assert again.exit_code == 0 and fresh.exit_code == 0, (again.output, fresh.output)
    again_figures, fresh_figures = json.loads(again.stdout), json.loads(fresh.stdout)
    assert "ingest" not in again_figures  # complete now: nothing more to ingest (the empty one is not missing)
    assert again_figures["coverage"]["missing"] == 0 and again_figures["coverage"]["indexed"] == SUBSET_DOCS
    assert fresh_figures["ingest"]["written"] == SUBSET_DOCS
    for key in ("ndcg@10", "mrr@10", "recall@100"):
        assert again_figures[key] == pytest.approx(fresh_figures[key], abs=1e-9), key


def test_eval_refuses_an_index_holding_records_outside_the_corpus(subset, data_dir, tmp_path, monkeypatch):
    """Issue 23 item 3: an index with the whole corpus plus other records (the quick start's stdlib
    docstrings, say) was scored without a word: those records took ranks from the corpus."""
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    runner = CliRunner()
    config = _config(tmp_path, "mixed")
    # The subset plus Cranfield's longest document, ingested as passages: passages of the corpus's
    # documents belong to it, only the other records may count as extra.
    longest = max(_rows(data_dir / "cranfield" / "corpus.jsonl"), key=lambda d: len(d["text"]))
    subset = shutil.copytree(subset, tmp_path / "cranfield-subset")
    with open(subset / "corpus.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(longest) + "\n")
    docs = SUBSET_DOCS + 1
    ingested = runner.invoke(main, ["ingest", str(subset), "--split-passages", "--config", str(config), "--quiet"])
    assert ingested.exit_code == 1 and "471" in ingested.output, ingested.output  # the empty document fails
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        "".join(json.dumps({"_id": f"other-{i}", "text": f"wing flutter at speed {i}"}) + "\n" for i in range(7)),
        encoding="utf-8",
    )
    assert runner.invoke(main, ["ingest", str(extra), "--config", str(config), "--quiet"]).exit_code == 0
    held, _ = _stored(tmp_path, "mixed", [])
    assert held > docs + 7  # passages: more records than documents

    refused = runner.invoke(main, ["eval", str(subset), "--config", str(config), "--quiet"])
    assert refused.exit_code == 1, refused.output
    lines = [ln for ln in refused.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), refused.output
    where = re.escape(str(subset))
    assert re.search(rf"holds 7 records that are not documents of {where} \(e\.g\. 'other-\d', ", lines[0])
    assert f"besides {docs} of its {docs}" in lines[0] and "fresh index (--index NAME)" in lines[0]
    assert _stored(tmp_path, "mixed", [])[0] == held  # nothing was ingested

    fresh = runner.invoke(main, ["eval", str(subset), "--config", str(config), "--index", "fresh", "--quiet", "--json"])
    assert fresh.exit_code == 0, fresh.output
    figures = json.loads(fresh.stdout)
    assert figures["index"] == "fresh" and figures["ingest"]["written"] == docs
