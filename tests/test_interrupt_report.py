"""The report of an interrupted ingest says which count means what (issue 23, papercut).

"interrupted after 256 documents ... 128 records written" read as if 128 of 256 were lost. At an
interrupt, documents read, records encoded and records written differ; the report names each. The
real interrupt (SIGINT to a running CLI) is in ``test_cli_errors.py``; this checks the wording of
every count on a report with all three different.
"""

from __future__ import annotations

from sparsebridge.cli import _print_ingest_report, interrupt_line
from sparsebridge.config import load_config
from sparsebridge.results import IngestReport


def test_each_count_of_an_interrupted_ingest_is_named(capsys, monkeypatch):
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    report = IngestReport(index="docs", documents=256, records=160, written=128, seconds=2.0)
    _print_ingest_report(report, "many.jsonl", load_config(None), interrupted=True)
    out = capsys.readouterr().out
    assert out.startswith(
        "interrupted: 256 documents read from many.jsonl, 160 records encoded, of which 128 written to index "
        "'docs' (qdrant) before the interrupt, 0 failed"
    ), out
    assert interrupt_line(report) == (
        "Error: interrupted with 128 records written to index 'docs' of the 256 documents read; run the same "
        "command again to write the rest (nothing is duplicated)"
    )


def test_a_complete_ingest_reads_as_before(capsys, monkeypatch):
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    report = IngestReport(index="docs", documents=3, records=3, written=3, seconds=1.0)
    _print_ingest_report(report, "c.jsonl", load_config(None), interrupted=False)
    assert capsys.readouterr().out.startswith(
        "ingested 3 documents from c.jsonl into index 'docs' (qdrant): 3 records written, 0 failed, 0 retries"
    )
