"""The encode cache: vectors an ingest computed, kept so that the same text is never encoded twice.

Entries are keyed by (producer key, sha256 of the text): the producer key is the hash of the
:func:`~sparsebridge.producer.producer_info` dict (model name, weights hash, pooling,
``max_active_dims``, side), so a vector is reused only for the same text by the same model with the
same settings. A second ingest of a corpus into another backend, index or config encodes nothing;
a changed document has another text hash and is encoded alone.

Storage: one SQLite file (``sqlite3`` from the standard library), by default
``./sparsebridge-data/encode-cache.sqlite3`` (``$SPARSEBRIDGE_CACHE`` sets another). SQLite because
it needs no new dependency, looks entries up by key without loading the file, commits each batch
atomically (a killed ingest leaves the cache as it was before the batch or after it, in WAL mode),
and lets several processes share one file safely. LMDB would be faster per lookup but needs a C
extension and a fixed map size; encoding, not lookups, is what a cache saves.

Nothing is used silently: every entry carries a checksum (BLAKE2b over producer key, text hash and
vector bytes), and an entry whose checksum or shape is wrong is deleted, counted in the ingest report
(``cache_corrupt``) and encoded again. The producer table stores each key's full dict, so a key
that does not match its dict (another program, a tampered file) is refused with an error, as is a
file that is not a sparsebridge cache (before anything is written to it; the advice names the file
and never suggests deleting what is not a cache).

A cache that cannot be written costs the cache, never the ingest: on a read-only mount it is opened
read-only (or, where even that needs a write, as an immutable file) and its vectors are served; on a
full disk the writes stop. Both are one warning, and the entries already there stay.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..defaults import DEFAULT_DATA_DIR
from ..errors import CacheError, SparsebridgeWarning
from .producer import producer_key

CACHE_ENV = "SPARSEBRIDGE_CACHE"
CACHE_FORMAT = "sparsebridge-encode-cache/1"
_CHUNK = 500  # SQLite host parameters per lookup
_SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database file


def default_cache_path() -> Path:
    """``$SPARSEBRIDGE_CACHE``, else ``./sparsebridge-data/encode-cache.sqlite3``."""
    return Path(os.environ.get(CACHE_ENV) or os.path.join(DEFAULT_DATA_DIR, "encode-cache.sqlite3"))


def text_hash(text: str) -> bytes:
    """The cache key of a text: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()  # lone surrogates too


def _checksum(key: str, th: bytes, indices: bytes | None, values: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in (key.encode(), th, indices or b"", values):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


class EncodeCache:
    """An open cache file (see the module docstring). Not shared between threads."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.corrupt = 0  # entries found corrupt (and removed) since opening
        self.writable = True  # False: a read-only file or a full disk; entries are read, not stored
        if self.path.is_dir():
            raise CacheError(f"encode cache {self.path} is a folder; give --cache a file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._setup()
        except CacheError:
            raise
        except (OSError, sqlite3.OperationalError) as exc:
            if not _cannot_write(exc):
                raise self._unusable(exc) from None
            self._open_read_only(exc)
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None

    def _open_read_only(self, cause: BaseException) -> None:
        # A cache that cannot be written (read-only mount, full disk) is still worth reading: open it
        # read-only, or, where even that needs a write (WAL's -shm file), as an immutable file.
        self.writable = False
        with contextlib.suppress(Exception):
            self._db.close()
        if not self.path.is_file():
            self._db = None
            self._warn_unwritable(cause, "nothing is cached")
            return
        uri = self.path.resolve().as_uri()
        last: BaseException = cause
        for mode in ("mode=ro", "immutable=1"):
            try:
                self._db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=60, isolation_level=None)
                self._check_format()
                break
            except sqlite3.OperationalError as exc:
                last = exc
            except sqlite3.DatabaseError as exc:
                raise self._unusable(exc) from None
        else:
            raise self._unusable(last)
        self._warn_unwritable(cause, "its vectors are used, new ones are not stored")

    def _warn_unwritable(self, cause: BaseException, effect: str) -> None:
        warnings.warn(
            f"encode cache {self.path} cannot be written ({cause}): {effect}; encoding goes on without it",
            SparsebridgeWarning,
            stacklevel=3,
        )

    def _unusable(self, exc: BaseException) -> CacheError:
        # Never advise deleting a file we have not recognised as a cache: it may be anything.
        if self._is_cache_file():
            fix = f"clear it with `sparsebridge cache clear --cache {self.path}`"
        else:
            fix = "give --cache another file"
        return CacheError(f"encode cache {self.path} cannot be used ({exc}); {fix}, or ingest with --no-cache")

    def _is_cache_file(self) -> bool:
        try:
            return _not_a_cache(self.path) is None
        except OSError:
            return False

    def _setup(self) -> None:
        db = self._db
        if db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None:
            self._check_format()  # someone else's database is refused before anything is written to it
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (CACHE_FORMAT,))
        self._check_format()
        db.execute("CREATE TABLE IF NOT EXISTS producers (key TEXT PRIMARY KEY, info TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS entries (producer TEXT NOT NULL, text_hash BLOB NOT NULL, "
            "indices BLOB, vals BLOB NOT NULL, checksum BLOB NOT NULL, PRIMARY KEY (producer, text_hash)) "
            "WITHOUT ROWID"
        )

    def _check_format(self) -> None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            row = None
        if row is None or row[0] != CACHE_FORMAT:
            found = f"format {row[0]!r}" if row else "no sparsebridge format mark"
            raise CacheError(
                f"{self.path} is not a sparsebridge encode cache ({found}); give --cache another file, "
                f"or ingest with --no-cache"
            )

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Database errors of a read or a write: one the file system causes (read-only, full) stops
        the writing and the work goes on; any other makes the cache unusable, in one CacheError."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if not _cannot_write(exc):
                raise self._unusable(exc) from None
            self._stop_writing(exc)
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None

    def _stop_writing(self, exc: sqlite3.Error) -> None:
        # A write refused by the file system (read-only, full) costs the cache, never the ingest.
        self.writable = False
        self._warn_unwritable(exc, "vectors encoded from now on are not stored")

    # -- producers

    def register(self, producer: Mapping[str, Any]) -> str:
        """The key entries of ``producer`` are stored under; checks the stored dict of that key."""
        key = producer_key(dict(producer))
        info = json.dumps({k: v for k, v in producer.items() if k != "sparsebridge"}, sort_keys=True)
        if self._db is None:
            return key
        try:
            if self.writable:
                try:
                    self._db.execute("INSERT OR IGNORE INTO producers VALUES (?, ?)", (key, info))
                except sqlite3.OperationalError as exc:
                    if not _cannot_write(exc):
                        raise
                    self._stop_writing(exc)
            row = self._db.execute("SELECT info FROM producers WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None
        if row is None and not self.writable:
            return key  # a producer this read-only cache has never seen: nothing to serve
        if row is None or json.loads(row[0]) != json.loads(info):
            raise CacheError(
                f"encode cache {self.path}: producer key {key[:12]} is stored for {row[0] if row else None}, "
                f"not for {info}; the file was not written by this program: clear it with "
                f"`sparsebridge cache clear --cache {self.path}`, or give --cache another file"
            )
        return key

    # -- entries

    def get(self, key: str, texts: Sequence[str]) -> dict[int, tuple[list[int] | None, list[float]]]:
        """Cached vectors of ``texts`` by position: ``(indices, values)`` for sparse entries,
        ``(None, values)`` for dense ones. Corrupt entries are removed and left out."""
        hashes = [text_hash(t) for t in texts]
        by_hash: dict[bytes, list[int]] = {}
        for pos, h in enumerate(hashes):
            by_hash.setdefault(h, []).append(pos)
        found: dict[int, tuple[list[int] | None, list[float]]] = {}
        if self._db is None:
            return found
        unique = list(by_hash)
        bad: list[bytes] = []
        with self._guard():
            for start in range(0, len(unique), _CHUNK):
                part = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(part))
                query = (
                    "SELECT text_hash, indices, vals, checksum FROM entries "
                    f"WHERE producer = ? AND text_hash IN ({marks})"
                )
                rows = self._db.execute(query, (key, *part)).fetchall()
                for th, ind, vals, checksum in rows:
                    vector = self._decode(key, th, ind, vals, checksum)
                    if vector is None:
                        bad.append(th)
                        continue
                    for pos in by_hash.get(th, ()):
                        found[pos] = vector
            if bad:
                self.corrupt += len(bad)
                if self.writable:  # left in a cache we cannot write; they are never served
                    drop = "DELETE FROM entries WHERE producer = ? AND text_hash = ?"
                    self._db.executemany(drop, [(key, b) for b in bad])
        return found

    @staticmethod
    def _decode(
        key: str, th: bytes, ind: bytes | None, vals: bytes, checksum: bytes
    ) -> tuple[list[int] | None, list[float]] | None:
        if not isinstance(vals, bytes) or len(vals) % 4 or (ind is not None and len(ind) != len(vals)):
            return None
        if checksum != _checksum(key, th, ind, vals):
            return None
        values = np.frombuffer(vals, dtype="<f4").tolist()
        indices = None if ind is None else np.frombuffer(ind, dtype="<u4").tolist()
        return indices, values

    def put(self, key: str, items: Iterable[tuple[str, Sequence[int] | None, Sequence[float]]]) -> None:
        """Store ``(text, indices, values)`` entries (``indices`` None for a dense vector) in one
        transaction."""
        rows = []
        for text, indices, values in items:
            th = text_hash(text)
            vals = np.asarray(values, dtype="<f4").tobytes()
            ind = None if indices is None else np.asarray(indices, dtype="<u4").tobytes()
            rows.append((key, th, ind, vals, _checksum(key, th, ind, vals)))
        if not rows or not self.writable:
            return
        with self._guard(), self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", rows)

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # SQLite rolls back by itself on a full disk
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reports

    def info(self) -> dict[str, Any]:
        """Size report: file size, entries, and entries per producer (with its dict)."""
        if self._db is None:
            return {"path": str(self.path), "file_bytes": 0, "vector_bytes": 0, "entries": 0, "producers": []}
        try:
            producers = {k: json.loads(v) for k, v in self._db.execute("SELECT key, info FROM producers")}
            counts = dict(self._db.execute("SELECT producer, COUNT(*) FROM entries GROUP BY producer").fetchall())
            data_bytes = self._db.execute(
                "SELECT COALESCE(SUM(LENGTH(vals) + COALESCE(LENGTH(indices), 0)), 0) FROM entries"
            ).fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None
        size = sum(p.stat().st_size for p in _files(self.path) if p.exists())
        return {
            "path": str(self.path),
            "file_bytes": size,
            "vector_bytes": int(data_bytes),
            "entries": int(sum(counts.values())),
            "producers": [{"key": k, "entries": int(counts.get(k, 0)), **producers[k]} for k in sorted(producers)],
        }

    def close(self) -> None:
        """Close the cache's database."""
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> EncodeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# What a file system says when it will not take a write: the cache then serves what it has.
_UNWRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def _cannot_write(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        return name.startswith(("SQLITE_READONLY", "SQLITE_FULL", "SQLITE_CANTOPEN")) or name in (
            "SQLITE_IOERR_WRITE",
            "SQLITE_IOERR_FSYNC",
            "SQLITE_IOERR_SHMOPEN",
        )
    return isinstance(exc, OSError) and exc.errno in _UNWRITABLE_ERRNOS


def _files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def clear_cache(path: str | os.PathLike | None = None) -> int:
    """Delete the cache file (and its WAL files); returns the bytes freed (0 when there was none).

    Only a sparsebridge encode cache is deleted: ``--cache`` takes any path, and a mistyped one
    (the corpus, say) must not cost the user that file. Anything else raises :class:`CacheError`.
    """
    target = Path(path) if path is not None else default_cache_path()
    if not target.exists():
        return 0
    problem = _not_a_cache(target)
    if problem is not None:
        raise CacheError(f"{target} is not a sparsebridge encode cache ({problem}); nothing was deleted")
    freed = 0
    for p in _files(target):
        with contextlib.suppress(FileNotFoundError):
            freed += p.stat().st_size
            p.unlink()
    return freed


def _not_a_cache(path: Path) -> str | None:
    """Why ``path`` is not an encode cache, or None when it is one; reads it without changing it."""
    if not path.is_file():
        return "not a file"
    with open(path, "rb") as fh:
        if fh.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
            return "not an SQLite database"
    try:
        # Read-only URI: checking a file must never create tables in it or turn on WAL.
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return f"an SQLite database without sparsebridge's tables: {exc}"
    if row is None or row[0] != CACHE_FORMAT:
        return f"an SQLite database of format {row[0] if row else None!r}, not {CACHE_FORMAT!r}"
    return None
