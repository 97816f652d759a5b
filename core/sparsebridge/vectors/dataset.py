"""A vector dataset: encoded documents in Parquet, written once and ingested anywhere.

Layout: a folder (conventionally named ``vectors.parquet``) of part files ``part-00000.parquet``,
``part-00001.parquet``... Any Parquet reader opens the folder as one table (``pyarrow.dataset``,
pandas, DuckDB, Spark). Columns:

========== =========================== =====================================================
``id``     string                      the record id (document id, or ``doc#pN`` for passages)
``text``   string, nullable            the text that was encoded (left out with ``with_text=False``)
``payload`` string (JSON)              the record's payload
``indices`` list<uint32>               vocabulary ids, ascending
``values``  list<float32>              their weights (> 0), bit for bit what the encoder gave
``dense``   fixed_size_list<float32>   optional: the dense vector (hybrid search)
========== =========================== =====================================================

Token strings are not stored per row: the vocabulary, identified by ``vocab_fingerprint`` in the
metadata, gives them back (:meth:`VectorDataset.records`).

``payload`` is a JSON string rather than a struct: payloads differ from document to document (keys
present in some rows only, nested values, a key that is an integer here and a string there), a
struct column needs one schema for the whole file before the first row group is written, and it
would turn a missing key into an explicit null. JSON keeps every payload exactly as it was.

Every part file carries the same file metadata under the key ``sparsebridge`` (a JSON object):
``model``, ``vocab_size``, ``vocab_fingerprint`` (what an index's metadata holds today), ``producer``
(model name, weights hash, pooling, ``max_active_dims``, side: see :mod:`sparsebridge.producer`),
``max_active_dims``, ``pooling``, ``side``, ``sparsebridge_version``, ``values_quantised`` (``"none"``,
or ``"lucene-9bit"`` for weights read back from an Elasticsearch/OpenSearch index that kept only
Lucene's 9 significant bits), ``dense_model`` / ``dense_size``, ``source`` (how it was made) and, for
an export, ``export_of`` (index name, backend class, digest of its address): a dataset folder takes
more rows only from the run that made it, and an export checks the rows it holds against the index.

Writing streams: rows are buffered up to one row group, and a part holds ``part_rows`` rows, so the
memory a writer or a reader needs does not grow with the dataset. Crash safety: a part is written
to a hidden temporary name and renamed into place (after an fsync) only when it is complete, so a
killed writer leaves complete parts and at most one temporary file, which the next writer removes.
A re-run reads the ids of the complete parts and skips them: nothing is lost, nothing is written
twice. A lock file keeps a second writer out of a folder while one is at work.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..connector import Record, RecordColumns, SparseVector
from ..connector.durability import fsync_dir
from ..errors import DatasetError
from .producer import producer_differences, producer_key
from .vocabulary import Vocabulary

FORMAT = 1
META_KEY = b"sparsebridge"
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
TMP_PREFIX = ".part-"
LOCK_NAME = ".sparsebridge.lock"
DEFAULT_PART_ROWS = 4096
DEFAULT_ROW_GROUP_ROWS = 1024
QUANTISATIONS = ("none", "lucene-9bit")
# What must agree between the parts of one dataset (and between a dataset and what extends it).
_IDENTITY_KEYS = ("vocab_size", "vocab_fingerprint", "dense_size", "dense_model", "values_quantised")


def schema(dense_size: int | None = None) -> pa.Schema:
    """The Arrow schema of a dataset (with a ``dense`` column when ``dense_size`` is given)."""
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("payload", pa.string()),
        pa.field("indices", pa.list_(pa.uint32()), nullable=False),
        pa.field("values", pa.list_(pa.float32()), nullable=False),
    ]
    if dense_size:
        fields.append(pa.field("dense", pa.list_(pa.float32(), int(dense_size))))
    return pa.schema(fields)


def dataset_metadata(
    vocab_metadata: Mapping[str, Any],
    producer: Mapping[str, Any],
    *,
    dense_model: str | None = None,
    dense_size: int | None = None,
    values_quantised: str = "none",
    source: str = "encode",
) -> dict[str, Any]:
    """The file metadata of a dataset (see the module docstring)."""
    from .._version import __version__

    if values_quantised not in QUANTISATIONS:
        raise ValueError(f"values_quantised must be one of {', '.join(QUANTISATIONS)}, got {values_quantised!r}")
    return {
        "format": FORMAT,
        "model": vocab_metadata.get("model"),
        "vocab_size": vocab_metadata.get("vocab_size"),
        "vocab_fingerprint": vocab_metadata.get("vocab_fingerprint"),
        "producer": dict(producer),
        "max_active_dims": producer.get("max_active_dims"),
        "pooling": producer.get("pooling"),
        "side": producer.get("side", "document"),
        "sparsebridge_version": __version__,
        "values_quantised": values_quantised,
        "dense_model": dense_model if dense_size else None,
        "dense_size": int(dense_size) if dense_size else None,
        "source": source,
    }


def _parts(folder: Path) -> list[Path]:
    found = []
    for entry in folder.iterdir():
        m = PART_RE.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), entry))
    return [p for _, p in sorted(found)]


def _read_meta(file: Path) -> dict[str, Any]:
    try:
        meta = pq.read_schema(file).metadata or {}
    except (OSError, pa.ArrowInvalid) as exc:
        raise DatasetError(f"{file}: not a readable Parquet file: {exc}") from None
    raw = meta.get(META_KEY)
    if raw is None:
        raise DatasetError(f"{file}: not a sparsebridge vector dataset (no 'sparsebridge' file metadata)")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DatasetError(f"{file}: the 'sparsebridge' file metadata is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetError(f"{file}: unknown dataset format {data.get('format') if isinstance(data, dict) else data!r}")
    return data


def _column_problem(name: str, kind: pa.DataType | None) -> str | None:
    """Why a column of type ``kind`` cannot be the dataset column ``name`` (None: it can)."""
    if kind is None:
        return None if name == "dense" else "is missing"
    text_like = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if name == "id":
        return None if text_like else f"is {kind}, not string"
    if name in ("text", "payload"):
        return None if text_like or pa.types.is_null(kind) else f"is {kind}, not string"
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    item = kind.value_type if is_list else None
    if name == "indices" and not (item is not None and pa.types.is_integer(item)):
        return f"is {kind}, not a list of integer token ids (list<uint32>)"
    if name in ("values", "dense") and not (item is not None and pa.types.is_floating(item)):
        return f"is {kind}, not a list of floats (list<float32>)"
    return None


def check_schema(file: Path) -> None:
    """Refuse a part whose columns cannot be read as a dataset's (e.g. float ``indices`` or string
    ``values`` written with pandas), naming the file, the column and its type."""
    found = pq.read_schema(file)
    for name in ("id", "text", "payload", "indices", "values", "dense"):
        kind = found.field(name).type if name in found.names else None
        problem = _column_problem(name, kind)
        if problem is not None:
            raise DatasetError(f"{file}: column {name!r} {problem}; it is not a sparsebridge vector dataset")


def _same_producer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return producer_key(dict(a.get("producer") or {})) == producer_key(dict(b.get("producer") or {}))


def check_compatible(have: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
    """Refuse to mix vectors of another model, vocabulary or dense model into one dataset, and
    another index's export (or an encode) into an export: a dataset resumes only its own run."""
    if have.get("export_of") != want.get("export_of"):
        theirs, ours = _origin(have), _origin(want)
        if theirs == ours:
            ours += " at another address"
        raise DatasetError(f"{where} holds {theirs}, not {ours}; write to another output, or delete it first")
    for key in _IDENTITY_KEYS:
        if have.get(key) != want.get(key):
            raise DatasetError(
                f"{where} holds vectors with {key} {have.get(key)!r} (model {have.get('model')!r}), not "
                f"{want.get(key)!r} (model {want.get('model')!r}); write to another output, or delete it first"
            )
    if not _same_producer(have, want):
        detail = producer_differences(
            dict(have.get("producer") or {}), dict(want.get("producer") or {}), "dataset", "new vectors"
        )
        raise DatasetError(
            f"{where} was encoded by another producer than the new vectors ({detail}); write to another output, "
            f"or delete it first"
        )


def _origin(meta: Mapping[str, Any]) -> str:
    of = meta.get("export_of")
    if isinstance(of, Mapping):
        return f"an export of index {of.get('index')!r} ({of.get('backend')})"
    source = str(meta.get("source") or "encode")
    return "vectors encoded from a corpus" if source == "encode" else f"an {source} from an older sparsebridge"


# --------------------------------------------------------------------------- writing


class DatasetWriter:
    """Append records to a dataset folder, a complete part at a time (see the module docstring).

    ``done_ids`` are the ids already in complete parts when the writer opened: a resumed run skips
    them. Use as a context manager; :meth:`close` completes the last part.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: Mapping[str, Any],
        *,
        part_rows: int = DEFAULT_PART_ROWS,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        with_text: bool = True,
        digests: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise DatasetError(f"{self.path} exists and is not a dataset folder; choose another output")
        self.path.mkdir(parents=True, exist_ok=True)
        self.metadata = dict(metadata)
        self.part_rows = max(1, int(part_rows))
        self.row_group_rows = max(1, int(row_group_rows))
        self.with_text = with_text
        self.schema = schema(self.metadata.get("dense_size")).with_metadata(
            {META_KEY: json.dumps(self.metadata, sort_keys=True).encode()}
        )
        self._lock = open(self.path / LOCK_NAME, "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise DatasetError(f"{self.path} is being written by another process; wait for it to finish") from None
        for entry in self.path.iterdir():  # a killed writer's unfinished part: its rows are redone
            if entry.name.startswith(TMP_PREFIX):
                entry.unlink()
        parts = _parts(self.path)
        self.done_ids: set[str] = set()
        # With ``digests``: id -> row_digest of each complete row, so that a resumed export can
        # tell a row that is still what its source holds from one that changed since.
        self.done_digests: dict[str, bytes] = {}
        for part in parts:
            check_compatible(_read_meta(part), self.metadata, str(self.path))
            if digests:
                self.done_digests.update(_part_digests(part))
            else:
                self.done_ids.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
        self.done_ids.update(self.done_digests)
        self._next = (int(PART_RE.match(parts[-1].name).group(1)) + 1) if parts else 0  # type: ignore[union-attr]
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._part_count = 0
        self._buffer: list[Record] = []
        self.written = 0

    def write(self, records: Sequence[Record]) -> dict[str, str]:
        """Add a batch (whole documents); returns ids that could not be stored, with the reason.

        A part is completed only between calls, so a document's passages never straddle parts.
        """
        failed: dict[str, str] = {}
        for rec in records:
            try:
                json.dumps(rec.payload or {}, allow_nan=False)
            except (TypeError, ValueError) as exc:
                failed[rec.id] = f"payload is not JSON-serialisable: {exc}"
                continue
            self._buffer.append(rec)
            if len(self._buffer) >= self.row_group_rows:
                self._flush_group()
        if self._part_count + len(self._buffer) >= self.part_rows:
            self._flush_group()
            self._finish_part()
        return failed

    def _flush_group(self) -> None:
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        if self._writer is None:
            self._tmp = self.path / f"{TMP_PREFIX}{self._next:05d}.parquet.tmp-{os.getpid()}"
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self._writer.write_table(to_table(rows, self.schema, with_text=self.with_text))
        self._part_count += len(rows)

    def _finish_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        assert self._tmp is not None
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        final = self.path / f"part-{self._next:05d}.parquet"
        os.replace(self._tmp, final)
        fsync_dir(self.path)
        self.written += self._part_count
        self._writer, self._tmp, self._part_count = None, None, 0
        self._next += 1

    def reset(self) -> None:
        """Delete every part (and the part being written): the dataset starts over, empty. For a
        writer whose complete parts turned out stale; the folder stays locked by this writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for entry in self.path.iterdir():
            if PART_RE.match(entry.name) or entry.name.startswith(TMP_PREFIX):
                entry.unlink()
        fsync_dir(self.path)
        self.done_ids, self.done_digests = set(), {}
        self._buffer, self._tmp, self._part_count, self._next, self.written = [], None, 0, 0, 0

    def close(self) -> None:
        """Complete the last part and release the folder."""
        try:
            self._flush_group()
            self._finish_part()
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_table(records: Sequence[Record], table_schema: pa.Schema, *, with_text: bool = True) -> pa.Table:
    """Records as one Arrow table of the dataset schema."""
    columns: dict[str, Any] = {
        "id": [r.id for r in records],
        "text": [r.text if with_text else None for r in records],
        "payload": [json.dumps(r.payload or {}, ensure_ascii=False, allow_nan=False) for r in records],
        "indices": [r.sparse.indices for r in records],
        "values": [r.sparse.values for r in records],
    }
    if "dense" in table_schema.names:
        columns["dense"] = [list(r.dense) if r.dense is not None else None for r in records]
    return pa.Table.from_pydict(columns, schema=table_schema)


def row_digest(
    text: str | None, payload: Mapping[str, Any] | None, indices: Sequence[int], values: Sequence[float], dense: Any
) -> bytes:
    """A digest of what a row holds besides its id, as the dataset stores it (payload keys in any
    order, text None or empty alike, weights as float32): equal exactly when the rows are."""
    h = hashlib.blake2b(digest_size=16)
    for part in (
        (text or "").encode("utf-8", "surrogatepass"),
        json.dumps(payload or {}, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"),
        np.asarray(indices, dtype="<u4").tobytes(),
        np.asarray(values, dtype="<f4").tobytes(),
        b"-" if dense is None else np.asarray(dense, dtype="<f4").tobytes(),
    ):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def record_digest(record: Record) -> bytes:
    """:func:`row_digest` of a record, as :func:`to_table` would store it."""
    return row_digest(record.text, record.payload, record.sparse.indices, record.sparse.values, record.dense)


def _part_digests(part: Path) -> dict[str, bytes]:
    reader = VectorDataset(part)
    return {
        row["id"]: row_digest(row["text"], row["payload"], row["indices"], row["values"], row["dense"])
        for batch in reader.batches()
        for row in reader.rows_of(batch)
    }


# --------------------------------------------------------------------------- reading


def is_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a vector dataset (a ``.parquet`` file, or a folder of part files)."""
    p = Path(path)
    if p.is_file():
        return p.suffix == ".parquet"
    return p.is_dir() and (p.suffix == ".parquet" or any(PART_RE.match(e.name) for e in p.iterdir()))


class VectorDataset:
    """A dataset opened for reading: its metadata, row count, and rows streamed a batch at a time."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_file():
            self.files = [self.path]
        elif self.path.is_dir():
            self.files = _parts(self.path)
            if not self.files:
                raise DatasetError(f"{self.path}: no complete part files (part-NNNNN.parquet); nothing to read")
        else:
            raise DatasetError(f"vector dataset not found: {self.path}")
        self.metadata = _read_meta(self.files[0])
        for f in self.files[1:]:
            check_compatible(_read_meta(f), self.metadata, str(f))
        for f in self.files:  # before anything is created from it (a made-by-hand file, say)
            check_schema(f)

    def check_start(self, vocab: Vocabulary, batch_rows: int = DEFAULT_ROW_GROUP_ROWS) -> None:
        """Read the first batch as :meth:`records` would, so a dataset refused from its first rows
        on is refused before an index is created for it."""
        next(iter(self.records(vocab, batch_rows)), None)

    @property
    def rows(self) -> int:
        """Number of rows, from the Parquet footers (nothing is scanned)."""
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def batches(self, batch_rows: int = DEFAULT_ROW_GROUP_ROWS) -> Iterator[pa.RecordBatch]:
        """The rows as Arrow record batches, one file and row group at a time."""
        for f in self.files:
            pf = pq.ParquetFile(f)
            try:
                yield from pf.iter_batches(batch_size=batch_rows)
            finally:
                pf.close()

    def rows_of(self, batch: pa.RecordBatch) -> Iterator[dict[str, Any]]:
        """Plain rows of a batch: id, text, payload (dict), indices, values, dense."""
        ids = batch.column("id").to_pylist()
        texts = batch.column("text").to_pylist()
        payloads = batch.column("payload").to_pylist()
        idx_off, idx_flat = _flat(batch.column("indices"))
        _, val_flat = _flat(batch.column("values"))
        dense = batch.column("dense").to_pylist() if "dense" in batch.schema.names else None
        for k, rid in enumerate(ids):
            a, b = idx_off[k], idx_off[k + 1]
            try:
                payload = json.loads(payloads[k]) if payloads[k] else {}
            except ValueError as exc:
                raise DatasetError(f"{self.path}: row {rid!r}: payload is not JSON: {exc}") from None
            yield {
                "id": rid,
                "text": texts[k],
                "payload": payload,
                "indices": idx_flat[a:b],
                "values": val_flat[a:b],
                "dense": dense[k] if dense is not None else None,
            }

    def _check_vocabulary(self, vocab: Vocabulary) -> None:
        want = vocab.metadata
        for key in ("vocab_size", "vocab_fingerprint"):
            if self.metadata.get(key) != want.get(key):
                raise DatasetError(
                    f"{self.path} was encoded with another vocabulary ({key} {self.metadata.get(key)!r}, model "
                    f"{self.metadata.get('model')!r}) than the configured model ({key} {want.get(key)!r}, model "
                    f"{want.get('model')!r}); configure the model it was encoded with"
                )

    def records(self, vocab: Vocabulary, batch_rows: int = DEFAULT_ROW_GROUP_ROWS) -> Iterator[list[Record]]:
        """Batches of :class:`Record` with token strings from ``vocab`` (checked against the
        dataset's vocabulary fingerprint). A row that breaks the vector rules names its id."""
        self._check_vocabulary(vocab)
        for batch in self.batches(batch_rows):
            yield self._records_of(batch, vocab)

    def _records_of(self, batch: pa.RecordBatch, vocab: Vocabulary) -> list[Record]:
        out = []
        high = pc.max(pc.list_flatten(batch.column("indices"))).as_py()
        tokens = vocab.token_array(int(high or 0) + 1)
        check_range = high is not None and high >= vocab.dimension  # rows are searched only then
        for row in self.rows_of(batch):
            bad = next((i for i in row["indices"] if i >= vocab.dimension), None) if check_range else None
            if bad is not None:
                raise DatasetError(
                    f"{self.path}: row {row['id']!r}: token index {bad} is outside the vocabulary of the "
                    f"configured model (ids 0 to {vocab.dimension - 1}); the dataset was not written by it"
                )
            idx = row["indices"]
            try:
                sparse = SparseVector(tuple(idx), tuple(row["values"]), tuple(tokens[idx].tolist()) if idx else ())
            except ValueError as exc:
                raise DatasetError(f"{self.path}: row {row['id']!r}: {exc}") from None
            out.append(
                Record(
                    id=row["id"],
                    text=row["text"] or "",
                    sparse=sparse,
                    payload=row["payload"],
                    dense=row["dense"],
                )
            )
        return out

    def columns(self, vocab: Vocabulary, batch_rows: int = DEFAULT_ROW_GROUP_ROWS) -> Iterator[RecordColumns]:
        """The rows as :class:`~sparsebridge.connector.RecordColumns`: what :meth:`records`
        gives, checked the same way (with numpy over each batch's flat arrays), without a
        :class:`Record` per row. A batch with a row that breaks the rules is read row by row, which
        names the row as :meth:`records` does."""
        self._check_vocabulary(vocab)
        for batch in self.batches(batch_rows):
            cols = self._columns_of(batch, vocab)
            if cols is None:
                self._records_of(batch, vocab)  # raises, naming the row
                raise DatasetError(f"{self.path}: a batch of rows could not be read")  # pragma: no cover
            yield cols

    def _columns_of(self, batch: pa.RecordBatch, vocab: Vocabulary) -> RecordColumns | None:
        """One batch as columns; None when some row breaks a rule (or a payload is no JSON object)."""
        offsets, indices = _flat_arrays(batch.column("indices"))
        value_offsets, values = _flat_arrays(batch.column("values"))
        if not np.array_equal(offsets, value_offsets):
            return None
        if len(values) and not bool(np.all(np.isfinite(values) & (values > 0))):
            return None
        if len(indices):
            if indices.dtype.kind == "i" and int(indices.min()) < 0:
                return None
            high = int(indices.max())
            if high >= vocab.dimension:
                return None
            if not _unique_per_row(offsets, indices):
                return None
        else:
            high = 0
        constants: list[str] = []

        def flag(name: str) -> float:
            constants.append(name)
            return float(name)

        decode = json.JSONDecoder(parse_constant=flag).decode
        payloads: list[Any] = []
        try:
            for raw in batch.column("payload").to_pylist():
                # "{}" is what most rows hold: a new dict without the parser.
                payloads.append(decode(raw) if raw and raw != "{}" else {})
        except ValueError:
            return None
        if not all(type(p) is dict for p in payloads):
            return None
        return RecordColumns(
            ids=batch.column("id").to_pylist(),
            texts=[t or "" for t in batch.column("text").to_pylist()],
            payloads=payloads,
            offsets=offsets,
            indices=indices,
            values=values,
            tokens=vocab.token_array(high + 1),
            dense=batch.column("dense").to_pylist() if "dense" in batch.schema.names else None,
            payload_constants=bool(constants),
        )


def _flat_arrays(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64, from 0) and the flat values (numpy) of a list column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets.to_numpy().astype(np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    return offsets - start, column.values.to_numpy(zero_copy_only=False)[start:end]


def _unique_per_row(offsets: np.ndarray, indices: np.ndarray) -> bool:
    """Whether no row repeats an index: strictly ascending rows (what encode writes) are checked at
    once; only rows that are not are checked one by one."""
    if len(indices) < 2:
        return True
    rising = np.diff(indices.astype(np.int64)) > 0
    inner = offsets[1:-1]
    rising[inner[(inner > 0) & (inner < len(indices))] - 1] = True  # across a row boundary: no constraint
    if bool(rising.all()):
        return True
    rows = np.unique(np.searchsorted(offsets, np.flatnonzero(~rising), side="right") - 1)
    for k in rows.tolist():
        row = indices[offsets[k] : offsets[k + 1]]
        if len(np.unique(row)) != len(row):
            return False
    return True


def _flat(column: pa.Array | pa.ChunkedArray) -> tuple[list[int], Any]:
    """Offsets (as a list) and flat values (as a numpy-backed list) of a list column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets.to_numpy()
    flat = column.values.to_numpy(zero_copy_only=False)
    start = offsets[0]
    flat = flat[start : offsets[-1]]
    offsets = (offsets - start).tolist()
    return offsets, _Sliceable(flat)


class _Sliceable:
    """Slices of a numpy array as Python lists (ints or floats, exact)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr

    def __getitem__(self, s: slice) -> list:
        return self.arr[s].tolist()


def open_dataset(path: str | os.PathLike) -> VectorDataset:
    """Open a vector dataset (a folder of parts, or a single ``.parquet`` file) for reading."""
    return VectorDataset(path)
