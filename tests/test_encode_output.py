"""``sparsebridge encode CORPUS --output ...`` (issue 23, items 13 and 14, and the encode cache).

Run in-process through click's runner from a fresh folder, with the packaged SPLADE model and real
Parquet files: a re-run of a complete encode reports its counts as they are, a corpus path is a
corpus whatever the output folder is called, and texts the encode cache holds are not encoded again.
"""

from __future__ import annotations

import json

import pyarrow.dataset as pads
import pytest
from click.testing import CliRunner
from sparsebridge.cli import main

N_DOCS = 12


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARSEBRIDGE_CACHE", raising=False)
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": f"d{i}", "text": f"document {i} on supersonic flow over a flat plate, case {i}"} for i in range(N_DOCS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def encode(*args: str):
    done = CliRunner().invoke(main, ["encode", *args, "-q"])
    assert done.exit_code == 0, done.output
    return done


def ids(folder) -> list[str]:
    return sorted(pads.dataset(str(folder), format="parquet").to_table(columns=["id"]).column("id").to_pylist())


def test_a_rerun_of_a_complete_encode_reports_what_it_did(corpus, tmp_path):
    out = tmp_path / "vectors.parquet"
    first = encode(str(corpus), "--output", str(out))
    assert first.stdout.startswith(f"encoded {N_DOCS} records of {N_DOCS} documents"), first.stdout
    again = encode(str(corpus), "--output", str(out), "--json")
    data = json.loads(again.stdout)
    assert (data["records"], data["written"], data["skipped"]) == (0, 0, N_DOCS)
    text = encode(str(corpus), "--output", str(out))
    assert text.stdout.startswith(f"encoded 0 records of {N_DOCS} documents"), text.stdout
    assert f"0 written, {N_DOCS} documents already there" in text.stdout
    assert ids(out) == sorted(f"d{i}" for i in range(N_DOCS))


def test_an_existing_corpus_path_is_a_corpus_whatever_the_output_name(corpus, tmp_path):
    out = tmp_path / "vectors"  # no .parquet suffix
    done = encode(str(corpus), "--output", str(out))
    assert f"encoded {N_DOCS} records" in done.stdout, done.stdout
    assert ids(out) == sorted(f"d{i}" for i in range(N_DOCS))
    assert out.is_dir()


def test_encode_output_serves_what_the_encode_cache_holds(corpus, tmp_path):
    first = encode(str(corpus), "--output", str(tmp_path / "a.parquet"), "--json")
    assert (json.loads(first.stdout)["cache_hits"], json.loads(first.stdout)["cache_misses"]) == (0, N_DOCS)
    assert (tmp_path / "sparsebridge-data" / "encode-cache.sqlite3").is_file()
    second = encode(str(corpus), "--output", str(tmp_path / "b.parquet"), "--json")
    data = json.loads(second.stdout)
    assert (data["cache_hits"], data["cache_misses"], data["written"]) == (N_DOCS, 0, N_DOCS)
    a = pads.dataset(str(tmp_path / "a.parquet"), format="parquet").to_table().sort_by("id")
    b = pads.dataset(str(tmp_path / "b.parquet"), format="parquet").to_table().sort_by("id")
    assert a.column("indices").equals(b.column("indices")) and a.column("values").equals(b.column("values"))
    off = encode(str(corpus), "--output", str(tmp_path / "c.parquet"), "--no-cache", "--json")
    assert json.loads(off.stdout)["cache_misses"] == 0 and json.loads(off.stdout)["cache_hits"] == 0
