"""qrels that judge documents the corpus does not hold are noted, with how many (issue 23, papercut).

No run can retrieve such a document, so it silently lowered recall and nDCG; trec_eval users expect
to be told. A small BEIR folder written here, the real CLI in-process, the packaged model and the
embedded Qdrant Edge engine.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sparsebridge.cli import main

pytest.importorskip("qdrant_edge")


def test_eval_notes_judged_documents_outside_the_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    monkeypatch.delenv("SPARSEBRIDGE_CACHE", raising=False)
    beir = tmp_path / "tiny"
    (beir / "qrels").mkdir(parents=True)
    docs = {
        "d1": "boundary layer separation on a wing",
        "d2": "heat transfer in hypersonic flow",
        "d3": "buckling of thin cylindrical shells",
    }
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    queries = {"q1": "boundary layer separation", "q2": "buckling of shells"}
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tgone-1\t1\nq2\td3\t2\nq2\tgone-2\t1\nq2\tgone-1\t0\n"
    )
    done = CliRunner().invoke(main, ["eval", str(beir), "-q", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["qrels_outside_corpus"] == {"documents": 2, "judgements": 2}
    text = CliRunner().invoke(main, ["eval", str(beir), "-q"])
    assert text.exit_code == 0, text.output
    notes = [line for line in text.stdout.splitlines() if line.startswith("  note:")]
    assert notes == [
        "  note: 2 relevant judgements of qrels/test.tsv name 2 documents that are not in the corpus (e.g. 'gone-1'); "
        "no run can retrieve them, so recall and nDCG are lower than over the corpus alone"
    ]
