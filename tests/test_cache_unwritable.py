"""An encode cache that cannot be written, or a file that is not a cache (issue 23, items 11 and 12).

A good cache on a read-only mount, or on a full disk, costs the cache, never the ingest: its entries
are read where it can be read, a warning says what happens, and no message advises throwing it away.
A file that is not a cache is refused with advice that names it and never deletes it.

The tests run as root, where ``chmod`` does not stop a write. So the read-only mount is simulated at
SQLite's level: the cache module's ``sqlite3.connect`` opens every read-write connection with
``mode=ro``, which makes SQLite refuse each write with SQLITE_READONLY exactly as on a read-only
file system. The full disk is SQLite's own ``max_page_count`` limit at the file's current size,
which makes it refuse to grow the file with SQLITE_FULL ("database or disk is full"), the error a
full disk gives. The encoder is the real packaged SPLADE model and the backend real Qdrant local mode.
"""

from __future__ import annotations

import json
import sqlite3
import types
from pathlib import Path

import pytest
from click.testing import CliRunner
from sparsebridge import cache as cache_module
from sparsebridge.cache import EncodeCache
from sparsebridge.cli import main
from sparsebridge.errors import CacheError, SparsebridgeWarning
from sparsebridge.pipeline import Pipeline

pytest.importorskip("qdrant_client")
from sparsebridge_qdrant import QdrantConnector  # noqa: E402

# Enough entries (about 100 dimensions each) that storing them needs new pages of the cache file.
WORDS = ("wing", "flow", "shock", "heat", "layer", "nozzle", "drag", "lift", "mach", "plate")
DOCS = [{"_id": f"d{i}", "text": " ".join(f"{w} {i} {w}{i}" for w in WORDS)} for i in range(40)]


def _module(**attrs):
    ns = types.SimpleNamespace(**{k: getattr(sqlite3, k) for k in dir(sqlite3) if not k.startswith("__")})
    for k, v in attrs.items():
        setattr(ns, k, v)
    return ns


def read_only_mount(monkeypatch):
    """Every read-write open becomes a read-only one (see the module docstring)."""
    real = sqlite3.connect

    def connect(database, *args, uri=False, **kwargs):
        if uri:
            return real(database, *args, uri=True, **kwargs)
        return real(f"{Path(database).resolve().as_uri()}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(cache_module, "sqlite3", _module(connect=connect))


def full_disk(monkeypatch):
    """Every connection may not grow the file beyond its size at opening (SQLITE_FULL)."""
    real = sqlite3.connect

    def connect(*args, **kwargs):
        db = real(*args, **kwargs)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
        return db

    monkeypatch.setattr(cache_module, "sqlite3", _module(connect=connect))


def pipeline(encoder, tmp_path: Path, index: str, cache: EncodeCache | None) -> Pipeline:
    connector = QdrantConnector(mode="local", path=str(tmp_path / f"qdrant-{index}"), index=index)
    return Pipeline(
        encoder, connector, index, model_name="packaged:splade", batch_size=4, show_progress=False, cache=cache
    )


def filled_cache(encoder, tmp_path: Path) -> Path:
    path = tmp_path / "cache.sqlite3"
    with pipeline(encoder, tmp_path, "fill", EncodeCache(path)) as pipe:
        report = pipe.ingest(DOCS)
    assert report.cache_misses == len(DOCS)
    return path


def test_a_good_cache_on_a_read_only_mount_is_read_with_a_warning(encoder, tmp_path, monkeypatch):
    path = filled_cache(encoder, tmp_path)
    before = path.read_bytes()
    read_only_mount(monkeypatch)
    with pytest.warns(SparsebridgeWarning, match="cannot be written.*vectors are used") as caught:
        cache = EncodeCache(path)
    assert str(path) in str(caught[0].message) and "remove" not in str(caught[0].message)
    assert cache.info()["entries"] == len(DOCS)
    with pipeline(encoder, tmp_path, "ro", cache) as pipe:
        report = pipe.ingest(DOCS + [{"_id": "new", "text": "a text the cache has never seen"}])
        assert pipe.count() == len(DOCS) + 1
    assert (report.written, report.cache_hits, report.cache_misses, report.failed) == (len(DOCS) + 1, len(DOCS), 1, {})
    assert path.read_bytes() == before


def test_cache_info_on_a_read_only_mount(encoder, tmp_path, monkeypatch):
    path = filled_cache(encoder, tmp_path)
    read_only_mount(monkeypatch)
    done = CliRunner().invoke(main, ["cache", "info", "--cache", str(path), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["entries"] == len(DOCS)
    assert done.stderr.startswith(f"Warning: encode cache {path} cannot be written"), done.stderr


def test_a_full_disk_costs_the_cache_not_the_ingest(encoder, tmp_path, monkeypatch):
    path = tmp_path / "cache.sqlite3"
    EncodeCache(path).close()  # an empty cache: the disk fills before the first entry
    full_disk(monkeypatch)
    warned = pytest.warns(SparsebridgeWarning, match="database or disk is full.*not stored")
    with warned as caught, pipeline(encoder, tmp_path, "full", EncodeCache(path)) as pipe:
        report = pipe.ingest(DOCS)
        assert pipe.count() == len(DOCS)
    assert (report.written, report.failed, report.cache_misses) == (len(DOCS), {}, len(DOCS))
    assert len(caught) == 1 and "remove" not in str(caught[0].message)


def test_a_file_that_is_not_a_cache_is_named_and_never_to_be_cleared(tmp_path):
    other = tmp_path / "other.sqlite3"
    other.write_bytes(b"notes, not a database\n" * 200)
    with pytest.raises(CacheError) as refused:
        EncodeCache(other)
    message = str(refused.value)
    assert str(other) in message and "cache clear" not in message and "--cache another file" in message


def test_another_programs_database_is_refused_untouched(tmp_path):
    other = tmp_path / "app.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(CacheError, match="not a sparsebridge encode cache") as refused:
        EncodeCache(other)
    assert "cache clear" not in str(refused.value) and str(refused.value).count("--cache another file") == 1
    assert other.read_bytes() == before
    tables = sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("users",)]
