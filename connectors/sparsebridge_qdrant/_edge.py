"""Qdrant Edge backend: the Qdrant engine in-process (``qdrant-edge-py``), persistent in a folder.

Layout of the folder (``path``)::

    <path>/<collection>/sparsebridge.json   what sparsebridge needs: vector names, sizes, IndexSpec.metadata
    <path>/<collection>/shard/              the Edge shard (segments, WAL, edge_config.json)

The sidecar is written (atomically) before the shard exists, and the shard is created in a
temporary folder and renamed into place, so a crash at any point leaves a collection that either
does not exist yet or opens cleanly. Writes go to the shard's write-ahead log before ``write()``
returns (Edge's ``update`` appends to it first), so a killed process loses nothing it was told was
written: the next open replays the log. The log is memory-mapped and not synced by ``update``, so
a power cut can still take what was not flushed. ``flush`` says when the segments and the log are
flushed to disk: ``"interval"`` (default) at most every ``flush_interval`` seconds (10) during
writes, and at close; ``"write"`` (or true) after every write; ``"close"`` (or false) only at close.
A dataset ingest hands the connector columns (``upsert_columns``): the points are built from the
batch's flat lists, without a record object per row.

One process at a time: before anything of a collection is opened, created or deleted, the process
takes an exclusive OS lock (``flock`` through ``portalocker``) on ``<path>/.<collection>.lock``, and
holds it until the connector is closed. A second process that wants the same collection is refused
with one line naming the folder and the pid of the holder (or, with ``lock_timeout`` seconds, waits
that long for the holder to finish first). It never reaches the engine, so a refused open leaves
the owner's files untouched: the engine's own WAL lock is taken only after the open has begun, and
a second open that fails on it has already disturbed the running writer's files. Edge has no
read-only open, so concurrent readers wait or are refused; for concurrent access use a Qdrant server
(``mode="server"``). Connectors of one process share the lock and the open shard.

Memory at scale. Edge writes every point into an *appendable* segment, whose sparse index is an
inverted index in RAM (Qdrant's ``MutableRam``) and whose id tracker is in RAM too: about 1.4 KB of
process memory per vaswani SPLADE document (89 terms), growing with the collection, and loaded in
full on every open. Edge never optimizes by itself (Qdrant's optimizers are manual there), so
without help a collection stays in that form. A writer (a connector that called ``ensure_index``)
therefore runs ``EdgeShard.optimize()`` whenever the appendable segment has grown past
``optimize_mb`` megabytes on disk, checked every ``_OPTIMIZE_CHECK_S`` seconds from a thread, and
once more when it closes. The optimizer turns the segment into an immutable one whose sparse index
is memory-mapped (``sparse_on_disk``, Qdrant's ``on_disk`` sparse index), and merges segments only
once there are more than ``segment_number`` of them (default 64). Left to Edge's own target (derived
from the CPU count, 2 here) every optimization merged the whole collection into one segment again,
so the work and the memory of each grew with the collection; ``max_segment_mb`` did not stop that,
Qdrant counting a sparse segment's size otherwise than its files. Payloads live in memory-mapped
files (``payload_on_disk``). So the writer's own memory is about one appendable segment plus one
optimization, growing by some 0.2 KB per document (what immutable segments still keep in RAM)
instead of 1.4 KB, and a reader maps the index instead of loading it (``benchmarks/scale.py``). The
qdrant-edge binding holds the GIL while it optimizes, so the writes of the same process wait for it:
the optimizer's time is part of the ingest time, never overlapping it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sparsebridge.connector import ConnectorError, IndexMismatchError, RecordColumns, SearchOptions
from sparsebridge.connector.durability import fsync_dir

from ._common import (
    Condition,
    Layout,
    PlannedQuery,
    PreparedPoint,
    QdrantOptionError,
    check_layout,
    engine_rrf_k,
    one_line,
    point_id,
    write_json_atomic,
)

SIDECAR = "sparsebridge.json"
SHARD_DIR = "shard"
_TMP_PREFIX = ".shard-new-"
_LOCK_CHECK_INTERVAL_S = 0.2
_OPTIMIZE_CHECK_S = 1.0
SEGMENTS_DIR = "segments"

try:  # imported lazily by the connector; kept importable for tools that only read this module
    import qdrant_edge as qe
except ImportError:  # pragma: no cover - the extra is not installed
    qe = None  # type: ignore[assignment]


def _require_edge() -> Any:
    if qe is None:
        raise ConnectorError("mode='edge' needs the qdrant-edge-py package: pip install 'sparsebridge[qdrant]'")
    return qe


_DISTANCE = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid", "manhattan": "Manhattan"}
_PAYLOAD_SCHEMA = {
    "keyword": "Keyword",
    "text": "Text",
    "integer": "Integer",
    "float": "Float",
    "boolean": "Bool",
}


def lock_path(root: str, name: str) -> str:
    """The lock file of collection ``name``: next to its folder, never inside it, so that deleting
    the collection never deletes a lock file another process is waiting on. Collection names do not
    start with ``.``, so it cannot clash with a collection folder."""
    return os.path.join(root, f".{name}.lock")


def _holder(path: str) -> str:
    """Who holds a lock file, as its holder wrote it: ``pid 123 (sparsebridge ingest)``."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read() or "{}")
        pid, command = int(data["pid"]), str(data.get("command") or "")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (pid not known yet)"
    return f"another process (pid {pid}{': ' + command if command else ''})"


def _take_lock(root: str, name: str, timeout: float) -> Any:
    """Take the exclusive lock of a collection, waiting up to ``timeout`` seconds; refuse clearly."""
    import portalocker

    os.makedirs(root, exist_ok=True)
    path = lock_path(root, name)
    lock = portalocker.Lock(
        path,
        mode="a",
        timeout=timeout,
        check_interval=_LOCK_CHECK_INTERVAL_S,
        fail_when_locked=timeout <= 0,
        flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
    )
    try:
        fh = lock.acquire()
    except portalocker.exceptions.LockException:
        waited = f" after waiting {timeout:g} s" if timeout > 0 else ""
        raise ConnectorError(
            f"Qdrant Edge folder {root} (collection {name!r}) is in use by {_holder(path)}{waited}; Edge "
            f"allows one process per collection: let that one finish, set the qdrant option lock_timeout "
            f"(seconds) to wait for it, or use mode='server' for concurrent access"
        ) from None
    except OSError as exc:
        raise ConnectorError(f"cannot lock Qdrant Edge folder {root} ({path}): {one_line(str(exc))}") from None
    # Say who holds it, for the message another process gets (argv[1] is the CLI command, no secrets).
    command = " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:2]) if sys.argv else ""
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"pid": os.getpid(), "command": command}))
    fh.flush()
    return lock


class _Held:
    """What this process holds of one collection: its OS lock, and the open shard once opened."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.shard: Any = None
        self.refs = 0
        # The background optimizer of a writer (see the module docstring), and the lock that keeps
        # an optimization and the shard's close apart.
        self.optimizer: _Optimizer | None = None
        self.busy = threading.Lock()

    def close(self) -> None:
        # The engine lets go of its files first; only then may another process take the lock.
        try:
            optimizer, self.optimizer = self.optimizer, None
            if optimizer is not None:
                optimizer.stop()
            with self.busy:
                if self.shard is not None:
                    shard, self.shard = self.shard, None
                    try:
                        shard.flush()
                        if optimizer is not None:
                            optimizer.run_due(shard)  # what this writer left in the appendable segment
                    except Exception as exc:  # the binding raises plain Exception
                        # The points are in the WAL and the appendable segment: nothing is lost, the
                        # collection is only left unoptimized (the next writer optimizes it).
                        raise ConnectorError(f"closing Qdrant Edge shard failed: {one_line(str(exc))}") from exc
                    finally:
                        shard.close()
        finally:
            self.lock.release()


def appendable_bytes(shard_dir: str) -> int:
    """Bytes on disk of the shard's appendable segments (those whose sparse index is ``MutableRam``)."""
    root = os.path.join(shard_dir, SEGMENTS_DIR)
    total = 0
    try:
        segments = os.listdir(root)
    except OSError:
        return 0
    for seg in segments:
        folder = os.path.join(root, seg)
        try:
            with open(os.path.join(folder, "segment.json"), encoding="utf-8") as fh:
                if "MutableRam" not in fh.read():
                    continue
        except OSError:
            continue
        for base, _dirs, files in os.walk(folder):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(base, f)).st_blocks * 512  # sparse files count as used
    return total


class _Optimizer:
    """Runs ``EdgeShard.optimize()`` for a writer whenever the appendable segment passes a size."""

    def __init__(self, entry: _Held, shard_dir: str, threshold_bytes: int) -> None:
        self.entry = entry
        self.shard_dir = shard_dir
        self.threshold = threshold_bytes
        self.runs = 0
        self.seconds = 0.0
        self._next_at = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sparsebridge-edge-optimizer", daemon=True)
        self._thread.start()

    def run_due(self, shard: Any) -> None:
        """Optimize when the appendable segment has passed the threshold. When the engine finds
        nothing to do (a collection made with a higher indexing threshold), ask again only after the
        segment has grown by another threshold, rather than every check."""
        size = appendable_bytes(self.shard_dir)
        if size < max(self.threshold, self._next_at):
            return
        import time

        start = time.perf_counter()
        changed = shard.optimize()
        self.runs += 1
        self.seconds += time.perf_counter() - start
        self._next_at = 0 if changed else size + self.threshold

    def _loop(self) -> None:
        while not self._stop.wait(_OPTIMIZE_CHECK_S):
            with self.entry.busy:
                shard = self.entry.shard
                if shard is None or self._stop.is_set():
                    continue
                with contextlib.suppress(Exception):  # a lasting failure surfaces in close()'s own run
                    self.run_due(shard)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


# One lock (and at most one open EdgeShard) per collection in this process, shared by every
# connector that uses it; keyed by the collection folder's real path.
_OPEN: dict[str, _Held] = {}
_OPEN_LOCK = threading.Lock()


def _key(root: str, name: str) -> str:
    return os.path.join(os.path.realpath(root), name)


def _enter(root: str, name: str, timeout: float) -> str:
    """Hold a reference to the collection's lock, taking the OS lock if this process has not yet."""
    key = _key(root, name)
    with _OPEN_LOCK:
        entry = _OPEN.get(key)
        if entry is None:
            entry = _OPEN[key] = _Held(_take_lock(root, name, timeout))
        entry.refs += 1
    return key


def _open_shard(key: str, shard_dir: str) -> Any:
    edge = _require_edge()
    with _OPEN_LOCK:
        entry = _OPEN[key]
        if entry.shard is None:
            try:
                entry.shard = edge.EdgeShard.load(shard_dir)
            except Exception as exc:  # the binding raises plain Exception
                msg = str(exc)
                if "WouldBlock" in msg or "lock" in msg.lower():
                    # Someone opened it without our lock (an older sparsebridge, another tool).
                    raise ConnectorError(
                        f"Qdrant Edge folder {shard_dir} is open in another process that does not take "
                        f"sparsebridge's lock; close that process first, or use mode='server'"
                    ) from None
                raise ConnectorError(f"cannot open Qdrant Edge shard {shard_dir}: {one_line(msg)}") from exc
        return entry.shard


def _leave(key: str, force: bool = False) -> None:
    with _OPEN_LOCK:
        entry = _OPEN.get(key)
        if entry is None:
            return
        entry.refs -= 1
        if entry.refs <= 0 or force:
            del _OPEN[key]
            entry.close()


@dataclass(frozen=True)
class EdgeStorage:
    """Where a new Edge collection keeps its parts, and when a writer optimizes it (connector options).

    ``sparse_on_disk`` / ``payload_on_disk``, ``segment_number`` and ``max_segment_mb`` are fixed when
    the collection is created (they go into the shard's ``edge_config.json``); ``optimize_mb`` applies to whichever
    process writes. ``optimize_mb=0`` never optimizes: every point stays in the in-RAM appendable
    segment (Edge's own behaviour).
    """

    sparse_on_disk: bool = True
    payload_on_disk: bool = True
    optimize_mb: float = 64.0
    max_segment_mb: int | None = None
    segment_number: int = 64

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> EdgeStorage:
        """Check and convert the connector options (one line naming the option when one is wrong)."""
        kwargs: dict[str, Any] = {}
        for key in ("sparse_on_disk", "payload_on_disk"):
            if key in options:
                value = options[key]
                if not isinstance(value, bool):
                    raise QdrantOptionError(f"qdrant option {key} must be true or false, got {value!r}")
                kwargs[key] = value
        if "optimize_mb" in options:
            value = options["optimize_mb"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise QdrantOptionError(
                    f"qdrant option optimize_mb must be a number of megabytes, 0 or more (0: never optimize), "
                    f"got {value!r}"
                )
            kwargs["optimize_mb"] = float(value)
        if "segment_number" in options:
            value = options["segment_number"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QdrantOptionError(f"qdrant option segment_number must be a whole number >= 1, got {value!r}")
            kwargs["segment_number"] = value
        if options.get("max_segment_mb") is not None:
            value = options["max_segment_mb"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QdrantOptionError(
                    f"qdrant option max_segment_mb must be a whole number of megabytes >= 1, got {value!r}"
                )
            kwargs["max_segment_mb"] = value
        return cls(**kwargs)

    def edge_config(self, edge: Any, vectors: Any, sparse_field: str) -> Any:
        """The ``EdgeConfig`` of a new shard."""
        memory = edge.Memory.Cold if self.payload_on_disk else edge.Memory.Cached
        # Qdrant indexes (converts) only segments past its indexing threshold, counted in KB of
        # vectors, which are a part of what the segment holds on disk: a quarter of optimize_mb lets
        # every segment the writer asks about qualify.
        optimizers = edge.EdgeOptimizersConfig(
            default_segment_number=self.segment_number,
            max_segment_size=self.max_segment_mb * 1024 if self.max_segment_mb is not None else None,
            indexing_threshold=max(1, int(self.optimize_mb * 1024 / 4)) if self.optimize_mb > 0 else None,
        )
        return edge.EdgeConfig(
            vectors=vectors,
            sparse_vectors={sparse_field: edge.EdgeSparseVectorParams(on_disk=self.sparse_on_disk)},
            payload_memory=memory,
            optimizers=optimizers,
        )


class EdgeBackend:
    """The Edge engine behind :class:`~sparsebridge_qdrant.QdrantConnector` (``mode="edge"``)."""

    mode = "edge"

    def __init__(
        self,
        path: str,
        flush: bool | str = "interval",
        lock_timeout: float = 0.0,
        flush_interval: float = 10.0,
        storage: EdgeStorage | None = None,
    ) -> None:
        _require_edge()
        self.root = os.path.abspath(os.path.expanduser(str(path)))
        self.flush = flush_policy(flush)
        self.storage = storage or EdgeStorage()
        try:
            self.flush_interval = float(flush_interval)
        except (TypeError, ValueError):
            raise ConnectorError(f"flush_interval must be a number of seconds, got {flush_interval!r}") from None
        if not self.flush_interval >= 0:
            raise ConnectorError(f"flush_interval must be 0 or more seconds, got {flush_interval!r}")
        self._last_flush = time.monotonic()
        try:
            self.lock_timeout = float(lock_timeout)
        except (TypeError, ValueError):
            raise ConnectorError(f"lock_timeout must be a number of seconds, got {lock_timeout!r}") from None
        if not self.lock_timeout >= 0:
            raise ConnectorError(f"lock_timeout must be 0 or more seconds, got {lock_timeout!r}")
        # collection -> (key, entry) of the lock this backend holds a reference to
        self._held: dict[str, tuple[str, _Held]] = {}

    def describe(self) -> str:
        return f"Qdrant Edge at {self.root}"

    def _hold(self, name: str) -> str:
        """Hold the collection's lock (taking it from the OS the first time in this process)."""
        held = self._held.get(name)
        if held is not None and _OPEN.get(held[0]) is held[1]:
            return held[0]
        key = _enter(self.root, name, self.lock_timeout)
        self._held[name] = (key, _OPEN[key])
        return key

    # -- paths ------------------------------------------------------------------------------------
    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def _sidecar(self, name: str) -> str:
        return os.path.join(self._dir(name), SIDECAR)

    def _shard_dir(self, name: str) -> str:
        return os.path.join(self._dir(name), SHARD_DIR)

    # -- collection lifecycle ---------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return os.path.isfile(self._sidecar(name)) or os.path.isdir(self._shard_dir(name))

    def read_layout(self, name: str) -> Layout | None:
        """The stored layout; None when the collection does not exist."""
        side = self._sidecar(name)
        if os.path.isfile(side):
            try:
                with open(side, encoding="utf-8") as fh:
                    return Layout.from_json(json.load(fh))
            except (OSError, ValueError, KeyError) as exc:
                raise ConnectorError(f"cannot read {side}: {one_line(str(exc))}") from None
        if os.path.isdir(self._shard_dir(name)):
            # A shard made by other means: derive what we can from the engine's own config file.
            return self._layout_from_engine(name, metadata={})
        return None

    def _engine_vectors(self, name: str) -> tuple[set[str], dict[str, tuple[int, str]]] | None:
        cfg_path = os.path.join(self._shard_dir(name), "edge_config.json")
        try:
            with open(cfg_path, encoding="utf-8") as fh:
                cfg = json.load(fh)
        except (OSError, ValueError):
            return None
        try:  # the engine's own file: read defensively, the sidecar is the fallback
            sparse = set((cfg.get("sparse_vectors") or {}).keys())
            dense = {
                str(k): (int(v.get("size", 0)), str(v.get("distance", "Cosine")).lower())
                for k, v in (cfg.get("vectors") or {}).items()
            }
        except (AttributeError, TypeError, ValueError):
            return None
        return sparse, dense

    def _layout_from_engine(self, name: str, metadata: dict[str, Any]) -> Layout:
        found = self._engine_vectors(name)
        if found is None:
            raise ConnectorError(f"{self._shard_dir(name)} is not a Qdrant Edge shard sparsebridge can read")
        sparse, dense = found
        if len(sparse) != 1:
            raise ConnectorError(
                f"collection {name!r} in {self.root} has {len(sparse)} sparse vectors and no "
                f"{SIDECAR}; call ensure_index with the IndexSpec to say which one to use"
            )
        layout = Layout(sparse_field=next(iter(sparse)), metadata=metadata)
        if len(dense) == 1:
            layout.dense_field, (layout.dense_size, layout.distance) = next(iter(dense.items()))
        return layout

    def check(self, name: str, want: Layout) -> Layout:
        """Check an existing collection against ``want``; returns the stored layout."""
        self._hold(name)
        have = self.read_layout(name)
        if have is None:
            raise ConnectorError(f"collection {name!r} was deleted from {self.root} while it was being opened")
        engine = self._engine_vectors(name) if os.path.isdir(self._shard_dir(name)) else None
        if engine is not None:
            sparse, dense = engine
        else:
            sparse = {have.sparse_field}
            dense = {have.dense_field: (have.dense_size, have.distance)} if have.dense_field else {}
        check_layout(name, sparse, dense, want, f"delete the folder {self._dir(name)}")
        if not os.path.isdir(self._shard_dir(name)):
            # The sidecar landed but the process died before the shard did: finish the creation.
            self._create_shard(name, have)
        self._cleanup_tmp(name)
        self.ensure_payload_indexes(name, want.payload_fields)
        self._start_optimizer(name)
        return have

    def create(self, name: str, layout: Layout) -> None:
        self._hold(name)
        if self.exists(name):  # another process created it before we had the lock
            self.check(name, layout)
            return
        os.makedirs(self._dir(name), exist_ok=True)
        write_json_atomic(self._sidecar(name), layout.to_json())
        self._create_shard(name, layout)
        self.ensure_payload_indexes(name, layout.payload_fields)
        self._start_optimizer(name)

    def _start_optimizer(self, name: str) -> None:
        """A writer's background optimizer (one per collection and process); see the module docstring."""
        if self.storage.optimize_mb <= 0:
            return
        key = self._hold(name)
        with _OPEN_LOCK:
            entry = _OPEN[key]
            if entry.optimizer is None:
                threshold = int(self.storage.optimize_mb * 2**20)
                entry.optimizer = _Optimizer(entry, self._shard_dir(name), threshold)

    def _create_shard(self, name: str, layout: Layout) -> None:
        edge = _require_edge()
        vectors = {}
        if layout.dense_field is not None:
            vectors[layout.dense_field] = edge.EdgeVectorParams(
                size=int(layout.dense_size or 0), distance=getattr(edge.Distance, _DISTANCE[layout.distance])
            )
        config = self.storage.edge_config(edge, vectors or None, layout.sparse_field)
        self._cleanup_tmp(name)
        tmp = os.path.join(self._dir(name), f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            shard = edge.EdgeShard.create(tmp, config)
            shard.flush()
            shard.close()
            os.rename(tmp, self._shard_dir(name))
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ConnectorError(f"cannot create Qdrant Edge shard for {name!r}: {one_line(str(exc))}") from exc
        fsync_dir(self._dir(name))

    def _cleanup_tmp(self, name: str) -> None:
        try:
            entries = os.listdir(self._dir(name))
        except OSError:
            return
        for entry in entries:
            if entry.startswith(_TMP_PREFIX):
                shutil.rmtree(os.path.join(self._dir(name), entry), ignore_errors=True)

    def _shard(self, name: str) -> Any:
        shard_dir = self._shard_dir(name)
        missing = f"collection {name!r} does not exist in {self.root}; run an ingest first"
        if not os.path.isdir(shard_dir):  # nothing to open: no lock taken, no folder made
            raise ConnectorError(missing)
        key = self._hold(name)
        if not os.path.isdir(shard_dir):  # dropped by the process that held the lock before us
            raise ConnectorError(missing)
        return _open_shard(key, shard_dir)

    def ensure_payload_indexes(self, name: str, fields: dict[str, str]) -> None:
        if not fields:
            return
        edge = _require_edge()
        shard = self._shard(name)
        schema = shard.info().payload_schema
        for key, kind in fields.items():
            want = getattr(edge.PayloadSchemaType, _PAYLOAD_SCHEMA[kind])
            if key in schema:
                have = schema[key].data_type
                if have != want:
                    raise IndexMismatchError(
                        f"collection {name!r} indexes payload field {key!r} as {have}, the spec asks for "
                        f"{kind}; change payload_fields, or drop the collection ({self._dir(name)}) and "
                        f"ingest again"
                    )
                continue
            shard.update(edge.UpdateOperation.create_field_index(key, want))
        shard.flush()

    def drop(self, name: str) -> None:
        if not os.path.isdir(self._dir(name)) and _key(self.root, name) not in _OPEN:
            return  # nothing to delete, nothing to lock
        key = self._hold(name)  # never delete what another process has open
        try:
            with _OPEN_LOCK:
                entry = _OPEN[key]
                optimizer, entry.optimizer = entry.optimizer, None
            if optimizer is not None:
                optimizer.stop()
            with entry.busy, _OPEN_LOCK:
                shard, entry.shard = entry.shard, None
            if shard is not None:  # every connector of this process loses it: the engine closes first
                shard.close()
            if os.path.isdir(self._dir(name)):
                # Remove the sidecar first: a crash mid-way leaves a shard without sidecar, which
                # read_layout still understands, rather than a sidecar promising a shard.
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self._sidecar(name))
                shutil.rmtree(self._dir(name))
                fsync_dir(self.root)
        finally:
            self._held.pop(name, None)
            _leave(key, force=True)

    def close(self) -> None:
        held, self._held = self._held, {}
        for key, entry in held.values():
            if _OPEN.get(key) is entry:
                _leave(key)

    # -- data ---------------------------------------------------------------------------------------
    def _point(self, layout: Layout, p: PreparedPoint) -> Any:
        vector: dict[str, Any] = {
            layout.sparse_field: qe.SparseVector(indices=p.sparse_indices, values=p.sparse_values)
        }
        if p.dense is not None and layout.dense_field is not None:
            vector[layout.dense_field] = p.dense
        return qe.Point(id=p.point_id, vector=vector, payload=p.payload)

    def upsert(
        self, name: str, layout: Layout, points: Sequence[PreparedPoint]
    ) -> tuple[list[str], dict[str, str], int]:
        if not points:
            return [], {}, 0
        return self._upsert_points(name, [p.record_id for p in points], [self._point(layout, p) for p in points])

    def upsert_columns(
        self, name: str, layout: Layout, columns: RecordColumns, payloads: list[dict[str, Any]]
    ) -> tuple[list[str], dict[str, str], int]:
        """Points straight from a columnar batch (see ``QdrantConnector.write_columns``): each
        sparse vector is a slice of the batch's flat lists, converted once per batch."""
        if not len(columns):
            return [], {}, 0
        offsets, indices, values = columns.flat_lists()
        field, point, sparse = layout.sparse_field, qe.Point, qe.SparseVector
        points = [
            point(id=point_id(rid), vector={field: sparse(indices=indices[a:b], values=values[a:b])}, payload=body)
            for rid, a, b, body in zip(columns.ids, offsets, offsets[1:], payloads)
        ]
        return self._upsert_points(name, columns.ids, points)

    def _upsert_points(
        self, name: str, record_ids: Sequence[str], points: list[Any]
    ) -> tuple[list[str], dict[str, str], int]:
        """One upsert of ``points``; on failure point by point, naming the culprits. Once the
        engine's ``update`` returns, the operation is in its write-ahead log (see the module
        docstring), so what is reported written survives a killed process."""
        shard = self._shard(name)
        written: list[str] = []
        failed: dict[str, str] = {}
        try:
            shard.update(qe.UpdateOperation.upsert_points(points))
            written = list(record_ids)
        except Exception:
            # One bad point fails the whole operation: retry point by point to name the culprits.
            for rid, p in zip(record_ids, points):
                try:
                    shard.update(qe.UpdateOperation.upsert_points([p]))
                    written.append(rid)
                except Exception as exc:
                    failed[rid] = one_line(str(exc))
        if written:
            self._after_write(shard)
        return written, failed, 0

    def _after_write(self, shard: Any) -> None:
        """Flush the segments as the flush policy says: after every write, at most every
        ``flush_interval`` seconds, or only when the shard closes."""
        if self.flush == "write":
            shard.flush()
        elif self.flush == "interval":
            now = time.monotonic()
            if now - self._last_flush >= self.flush_interval:
                shard.flush()
                self._last_flush = time.monotonic()

    def delete(self, name: str, point_ids: Sequence[str]) -> None:
        if not point_ids:
            return
        shard = self._shard(name)
        shard.update(qe.UpdateOperation.delete_points(list(point_ids)))
        self._after_write(shard)

    def count(self, name: str) -> int:
        return int(self._shard(name).count(qe.CountRequest(exact=True)))

    def retrieve(self, name: str, point_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not point_ids:
            return []
        recs = self._shard(name).retrieve(list(point_ids), True, False)
        return [r.payload or {} for r in recs]

    def _condition(self, c: Condition) -> Any:
        if c.kind == "eq":
            return qe.FieldCondition(c.key, **_edge_match(c.value))
        values = c.values
        if all(isinstance(v, str) for v in values):
            return qe.FieldCondition(c.key, match=qe.MatchAny(list(values)))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return qe.FieldCondition(c.key, match=qe.MatchAny([int(v) for v in values]))
        return qe.Filter(should=[qe.FieldCondition(c.key, **_edge_match(v)) for v in values])

    def _filter(self, conditions: list[Condition]) -> Any:
        if not conditions:
            return None
        return qe.Filter(must=[self._condition(c) for c in conditions])

    def search(
        self, name: str, layout: Layout, plans: Sequence[PlannedQuery], options: SearchOptions, id_key: str
    ) -> list[list[tuple[Any, float, dict[str, Any]]]]:
        shard = self._shard(name)
        bo = options.backend_options or {}
        params = None
        if bo.get("exact") or bo.get("hnsw_ef"):
            params = qe.SearchParams(hnsw_ef=bo.get("hnsw_ef"), exact=bool(bo.get("exact", False)))
        with_payload: Any = True if options.with_payload else qe.PayloadSelector.Include([id_key])
        requests = []
        for plan in plans:
            flt = self._filter(plan.conditions)
            sparse_q = dense_q = None
            if plan.sparse is not None:
                sparse_q = qe.Query.Nearest(
                    qe.SparseVector(indices=plan.sparse[0], values=plan.sparse[1]), using=layout.sparse_field
                )
            if plan.dense is not None:
                dense_q = qe.Query.Nearest(plan.dense, using=layout.dense_field)
            if plan.hybrid:
                fusion = qe.Fusion.Rrf(k=engine_rrf_k(options)) if options.fusion == "rrf" else qe.Fusion.Dbsf()
                prefetches = [
                    qe.Prefetch(limit=options.candidates, query=q, filter=flt, params=params)
                    for q in (sparse_q, dense_q)
                ]
                req = qe.QueryRequest(
                    limit=options.top_k,
                    query=fusion,
                    prefetches=prefetches,
                    filter=flt,
                    with_payload=with_payload,
                    with_vector=False,
                )
            else:
                req = qe.QueryRequest(
                    limit=options.top_k,
                    query=sparse_q or dense_q,
                    filter=flt,
                    params=params,
                    with_payload=with_payload,
                    with_vector=False,
                )
            requests.append(req)
        try:
            if len(requests) == 1:
                batches = [shard.query(requests[0])]
            else:
                batches = shard.query_batch(qe.QueryBatchRequest(requests))
        except Exception as exc:
            raise ConnectorError(f"Qdrant Edge search in {name!r} failed: {one_line(str(exc))}") from exc
        return [[(p.id, float(p.score), p.payload or {}) for p in points] for points in batches]

    def scroll(
        self, name: str, layout: Layout, offset: Any, limit: int
    ) -> tuple[list[tuple[dict[str, Any], list[int], list[float], list[float] | None]], Any]:
        """One page of points with payload and vectors: ``[(payload, indices, values, dense)]`` and
        the offset of the next page (None at the end)."""
        shard = self._shard(name)
        try:
            records, next_offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=int(limit), with_payload=True, with_vector=True)
            )
        except Exception as exc:
            raise ConnectorError(f"Qdrant Edge scroll of {name!r} failed: {one_line(str(exc))}") from exc
        return [_exported(r.payload, r.vector, layout) for r in records], next_offset


FLUSH_POLICIES = {True: "write", "write": "write", "interval": "interval", False: "close", "close": "close"}


def flush_policy(value: Any) -> str:
    """The ``flush`` option as a policy: ``"write"`` (true), ``"interval"`` or ``"close"`` (false)."""
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, bool) or key in ("write", "interval", "close"):
        return FLUSH_POLICIES[key]
    raise ConnectorError(f"flush must be 'interval', 'write' (or true), or 'close' (or false), got {value!r}")


def _edge_match(value: Any) -> dict[str, Any]:
    """Keyword arguments of FieldCondition for equality with ``value``."""
    if isinstance(value, bool):
        # qdrant-edge-py 0.9 reads a Python bool given to MatchValue as the integer 0/1, which then
        # matches no boolean payload; a numpy bool is read as a boolean.
        import numpy as np

        return {"match": qe.MatchValue(np.bool_(value))}
    if isinstance(value, float):
        # MatchValue takes strings, integers and booleans; equality on a float is a closed range.
        return {"range": qe.RangeFloat(gte=value, lte=value)}
    return {"match": qe.MatchValue(value)}


def _exported(payload: Any, vector: Any, layout: Layout) -> tuple[dict[str, Any], list[int], list[float], Any]:
    vectors = vector if isinstance(vector, dict) else {}
    sparse = vectors.get(layout.sparse_field)
    indices = list(sparse.indices) if sparse is not None else []
    values = list(sparse.values) if sparse is not None else []
    dense = vectors.get(layout.dense_field) if layout.dense_field else None
    return dict(payload or {}), indices, values, list(dense) if dense is not None else None
