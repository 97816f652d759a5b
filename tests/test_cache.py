"""The encode cache: hits, misses, a changed document, a corrupt entry or file, another model.

The encoder is the real packaged SPLADE model, wrapped only to record which texts it was asked to
encode; the backends are real Qdrant (Edge and local mode).
"""

from __future__ import annotations

import json
import sqlite3

import pyarrow.dataset as pads
import pytest
from click.testing import CliRunner
from sparsebridge.cache import EncodeCache
from sparsebridge.cli import main
from sparsebridge.errors import CacheError
from sparsebridge.pipeline import Pipeline
from sparsebridge.transfer import export_index

pytest.importorskip("qdrant_edge")
from sparsebridge_qdrant import QdrantConnector  # noqa: E402

N_DOCS = 16


class Recording:
    """The real encoder; remembers the texts ``encode_document`` was given."""

    def __init__(self, encoder):
        self._encoder = encoder
        self.texts: list[str] = []

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode_document(self, texts, **kwargs):
        self.texts.extend(texts)
        return self._encoder.encode_document(texts, **kwargs)


@pytest.fixture(scope="module")
def docs(data_dir):
    out = []
    with open(data_dir / "cranfield" / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            if doc["text"].strip():
                out.append({"_id": doc["_id"], "text": doc["text"]})
            if len(out) == N_DOCS:
                return out


def pipe(encoder, connector, index, cache, **kw):
    return Pipeline(
        encoder, connector, index, model_name="packaged:splade", batch_size=8, show_progress=False, cache=cache, **kw
    )


def vectors(connector, vocab, index, path):
    export_index(connector, vocab, path, index=index)
    table = pads.dataset(str(path), format="parquet").to_table(columns=["id", "indices", "values"])
    return {r["id"]: (r["indices"], r["values"]) for r in table.to_pylist()}


def test_second_ingest_elsewhere_encodes_nothing_and_gets_the_same_vectors(encoder, docs, tmp_path):
    rec = Recording(encoder)
    path = tmp_path / "cache.sqlite3"
    edge = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index="a")
    with pipe(rec, edge, "a", EncodeCache(path)) as a:
        first = a.ingest(docs)
        assert (first.cache_hits, first.cache_misses, len(rec.texts)) == (0, N_DOCS, N_DOCS)
        want = vectors(edge, a.vocab, "a", tmp_path / "a.parquet")
    rec.texts.clear()
    local = QdrantConnector(mode="local", path=str(tmp_path / "local"), index="b")
    with pipe(rec, local, "b", EncodeCache(path)) as b:
        second = b.ingest(docs)
        assert (second.cache_hits, second.cache_misses, rec.texts) == (N_DOCS, 0, [])
        assert second.written == N_DOCS
        assert vectors(local, b.vocab, "b", tmp_path / "b.parquet") == want


def test_a_changed_document_is_encoded_alone(encoder, docs, tmp_path):
    rec = Recording(encoder)
    path = tmp_path / "cache.sqlite3"
    with pipe(rec, QdrantConnector(mode="edge", path=str(tmp_path / "e"), index="a"), "a", EncodeCache(path)) as p:
        p.ingest(docs)
        rec.texts.clear()
        changed = [dict(d) for d in docs]
        changed[3]["text"] += " with a new last sentence."
        report = p.ingest(changed)
    assert (report.cache_hits, report.cache_misses) == (N_DOCS - 1, 1)
    assert rec.texts == [changed[3]["text"]]


def test_another_model_setting_is_never_served(encoder, docs, tmp_path):
    rec = Recording(encoder)
    path = tmp_path / "cache.sqlite3"
    with pipe(rec, QdrantConnector(mode="edge", path=str(tmp_path / "e"), index="a"), "a", EncodeCache(path)) as p:
        p.ingest(docs)
    rec.texts.clear()
    other = QdrantConnector(mode="edge", path=str(tmp_path / "e2"), index="b")
    with pipe(rec, other, "b", EncodeCache(path), max_active_dims=8) as p:
        report = p.ingest(docs)
    assert (report.cache_hits, report.cache_misses, len(rec.texts)) == (0, N_DOCS, N_DOCS)
    with EncodeCache(path) as cache:
        info = cache.info()
    assert sorted(p["max_active_dims"] or 0 for p in info["producers"]) == [0, 8]
    assert info["entries"] == 2 * N_DOCS


def test_a_corrupt_entry_is_discarded_counted_and_encoded_again(encoder, docs, tmp_path):
    rec = Recording(encoder)
    path = tmp_path / "cache.sqlite3"
    edge = QdrantConnector(mode="edge", path=str(tmp_path / "e"), index="a")
    with pipe(rec, edge, "a", EncodeCache(path)) as p:
        p.ingest(docs)
        want = vectors(edge, p.vocab, "a", tmp_path / "want.parquet")
    db = sqlite3.connect(path)
    (key, th, vals) = db.execute("SELECT producer, text_hash, vals FROM entries LIMIT 1").fetchone()
    flipped = bytes([vals[0] ^ 0x01]) + vals[1:]  # one bit of one weight
    db.execute("UPDATE entries SET vals = ? WHERE producer = ? AND text_hash = ?", (flipped, key, th))
    db.commit()
    db.close()
    rec.texts.clear()
    edge = QdrantConnector(mode="edge", path=str(tmp_path / "e"), index="a")
    with pipe(rec, edge, "a", EncodeCache(path)) as p:
        report = p.ingest(docs)
        assert (report.cache_corrupt, report.cache_misses, len(rec.texts)) == (1, 1, 1)
        got = vectors(edge, p.vocab, "a", tmp_path / "got.parquet")
    assert got.keys() == want.keys()
    # The other documents come from the cache bit for bit; the one encoded again, alone rather than
    # in a batch of 8, differs from before by float noise only (padding changes the sums).
    differing = [rid for rid in want if got[rid] != want[rid]]
    assert len(differing) <= 1
    for rid in differing:
        assert got[rid][0] == want[rid][0]
        assert got[rid][1] == pytest.approx(want[rid][1], rel=1e-3, abs=1e-5)


def test_a_file_that_is_not_a_cache_is_refused(tmp_path):
    bad = tmp_path / "cache.sqlite3"
    bad.write_bytes(b"this is not SQLite at all" * 100)
    with pytest.raises(CacheError, match="cannot be used"):
        EncodeCache(bad)


def test_a_producer_key_that_does_not_match_its_dict_is_refused(tmp_path):
    path = tmp_path / "cache.sqlite3"
    producer = {"model": "m", "max_active_dims": None}
    with EncodeCache(path) as cache:
        key = cache.register(producer)
    db = sqlite3.connect(path)
    db.execute("UPDATE producers SET info = ? WHERE key = ?", (json.dumps({"model": "other"}), key))
    db.commit()
    db.close()
    with EncodeCache(path) as cache, pytest.raises(CacheError, match="not written by this program"):
        cache.register(producer)


def test_cli_no_cache_cache_info_and_clear(docs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARSEBRIDGE_CACHE", raising=False)
    monkeypatch.delenv("SPARSEBRIDGE_CONFIG", raising=False)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs[:4]), encoding="utf-8")
    runner = CliRunner()
    cache_file = tmp_path / "sparsebridge-data" / "encode-cache.sqlite3"
    done = runner.invoke(main, ["ingest", str(corpus), "--no-cache", "-q"])
    assert done.exit_code == 0, done.output
    assert not cache_file.exists()
    done = runner.invoke(main, ["ingest", str(corpus), "-q"])
    assert done.exit_code == 0, done.output
    assert "0 served, 4 encoded" in done.output
    done = runner.invoke(main, ["ingest", str(corpus), "-q"])
    assert "4 served, 0 encoded" in done.output
    info = runner.invoke(main, ["cache", "info", "--json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.output)
    assert data["entries"] == 4 and data["file_bytes"] > 0 and data["producers"][0]["model"] == "packaged:splade"
    cleared = runner.invoke(main, ["cache", "clear"])
    assert cleared.exit_code == 0 and not cache_file.exists()


def test_cache_clear_deletes_only_an_encode_cache(docs, tmp_path):
    """Issue 23 item 2: `cache clear --cache corpus.jsonl` deleted the corpus."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs[:2]), encoding="utf-8")
    other_db = tmp_path / "app.sqlite3"  # an SQLite database of another program
    db = sqlite3.connect(other_db)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('format', 'someone-else/1')")
    db.commit()
    db.close()
    runner = CliRunner()
    for victim, reason in ((corpus, "not an SQLite database"), (other_db, "'someone-else/1'")):
        before = victim.read_bytes()
        done = runner.invoke(main, ["cache", "clear", "--cache", str(victim)])
        assert done.exit_code == 1, done.output
        assert done.output.startswith("Error: ") and len(done.output.strip().splitlines()) == 1, done.output
        assert "not a sparsebridge encode cache" in done.output and reason in done.output
        assert victim.read_bytes() == before
    ours = tmp_path / "ours.sqlite3"
    with EncodeCache(ours) as cache:
        cache.put(cache.register({"model": "m"}), [("text", [1, 2], [0.5, 0.25])])
    done = runner.invoke(main, ["cache", "clear", "--cache", str(ours)])
    assert done.exit_code == 0, done.output
    assert not ours.exists() and not ours.with_name("ours.sqlite3-wal").exists()
