"""Encode and ingest on Ray Data: the same code on a laptop (local Ray) and on a cluster.

Beyond one machine sparsebridge runs on an existing distributed engine rather than one of its own.
Ray Data is the engine people use for batch embedding inference, and ``ray.init(address=...)`` turns
the laptop run into a cluster run without touching the code::

    import ray
    from sparsebridge.index.ray_engine import encode_dataset, read_corpus, write_dataset

    ray.init()                                     # or ray.init(address="ray://head:10001")
    ds = ray.data.read_parquet("passages/")        # any dataset with "_id" and "text" columns
    vectors = encode_dataset(ds, "naver/splade-v3", concurrency=8, num_gpus=1)
    vectors.write_parquet("vectors/")              # the columns of the sparse-vector dataset

How it is built, and why:

* Encoding is ``map_batches`` with a callable class, so each actor loads the model once. Ray Data
  restarts a dead actor and retries its batch (``max_restarts=-1``, ``max_task_retries=-1`` are its
  defaults for actor pools); a batch is only ever *encoded* twice, never written twice, because
  the write comes after the encode and every write is an upsert keyed by document id.
* Writes go through the configured connector. A backend that one process owns (Qdrant Edge's
  folder, qdrant-client's local mode: ``Connector.single_writer``) is written by the driver alone;
  a server backend is written from the workers, in parallel.
* Rows keep the number of their document (the JSONL line), so ordering is deterministic
  (``preserve_order``) and a duplicate id is resolved as an in-process ingest resolves it: the first
  document is kept, the later one is reported.

This module imports ``ray`` (the ``sparsebridge[ray]`` extra); the rest of sparsebridge does not.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import ray

from ..config import Config, ConfigError, IngestSettings
from ..connector import Record, SparseVector
from ..errors import ClusterError
from .corpus import STDLIB_SPEC, CorpusError, beir_corpus_path, open_corpus, parse_jsonl_line
from .documents import text_id
from .passages import count_truncated
from .preparation import Plan, plan_corpus, prepare_document
from .results import IngestReport

__all__ = ["encode_dataset", "ingest_with_ray", "read_corpus", "write_dataset"]

# Columns of an encoded dataset: those of the Parquet sparse-vector dataset, plus ``error`` (why a
# row could not be encoded; null when it was) and ``n`` (the document's number in its corpus).
ID, TEXT, PAYLOAD, INDICES, VALUES, DENSE, ERROR, NUMBER = (
    "id",
    "text",
    "payload",
    "indices",
    "values",
    "dense",
    "error",
    "n",
)
DOCUMENT = "document"  # a raw corpus row: one JSON object as text
REF = "ref"  # where a raw row came from (file:line)
TRUNCATED = "truncated"  # an ingest's rows: documents of the batch cut at max_seq_length (first row)
# Lines per read task: large enough that task overhead vanishes, small enough to spread a file.
LINES_PER_TASK = 2000
CONNECT_SECONDS = 5.0  # how long a cluster address may take to accept a connection


# --------------------------------------------------------------------------- reading


def read_corpus(
    spec: str | Path, *, limit: int | None = None, lines_per_task: int = LINES_PER_TASK
) -> ray.data.Dataset:
    """A corpus (JSONL file, BEIR folder or its corpus.jsonl, ``stdlib:[N]``) as a Ray dataset.

    Rows are ``{"n": document number, "ref": "file:line", "document": the JSON text}``; parsing
    happens in the encode step, where a bad line is reported by its ``ref`` like an in-process
    ingest does. The driver only scans the file for line offsets (one pass, no parsing); the read
    tasks each seek to their slice, so the file is read in parallel and never held whole.
    """
    text = str(spec)
    if text.startswith(STDLIB_SPEC):
        corpus = open_corpus(text, limit=limit)
        rows = [
            {NUMBER: n, REF: f"stdlib #{n}", DOCUMENT: json.dumps(doc, ensure_ascii=False).encode()}
            for n, doc in enumerate(corpus, 1)
        ]
        return ray.data.from_items(rows)
    path = Path(spec)
    if not path.exists():
        raise CorpusError(f"corpus not found: {path} (expected a JSONL file, a BEIR folder or stdlib:)")
    corpus_file = beir_corpus_path(path) if path.is_dir() else path
    slices = _line_slices(corpus_file, lines_per_task, limit)
    if not slices:
        return ray.data.from_items([]).map_batches(lambda b: b)  # an empty dataset with no schema
    # Zero-CPU read tasks: the encode actors hold a CPU each, and reading must not wait for them.
    return ray.data.from_items(slices).flat_map(_read_slice, num_cpus=0)


def _line_slices(path: Path, lines_per_task: int, limit: int | None) -> list[dict[str, Any]]:
    # Byte offset and first line number of every ``lines_per_task``-th line.
    slices: list[dict[str, Any]] = []
    offset, line = 0, 0
    with open(path, "rb") as fh:
        while limit is None or line < limit:
            take = lines_per_task if limit is None else min(lines_per_task, limit - line)
            start, first = offset, line + 1
            count = 0
            for raw in fh:
                offset += len(raw)
                count += 1
                if count == take:
                    break
            if count == 0:
                break
            slices.append({"path": str(path), "name": path.name, "start": start, "first": first, "count": count})
            line += count
            if count < take:
                break
    return slices


def _loaded(model: Any, device: str | None, precision: str, kind: str) -> Any:
    """An actor's own copy of ``model``: loaded by the builder when it is a name, a folder or a
    :class:`~sparsebridge.config.builder.ModelChoice`; used as it is when already loaded."""
    from ..config.builder import ModelChoice

    if isinstance(model, (str, Path)):
        model = ModelChoice(str(model), device, precision, kind)
    return model.load() if isinstance(model, ModelChoice) else model


def _read_slice(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    with open(task["path"], "rb") as fh:
        fh.seek(task["start"])
        for k in range(task["count"]):
            raw = fh.readline()
            n = task["first"] + k
            rows.append({NUMBER: n, REF: f"{task['name']}:{n}", DOCUMENT: raw})
    return rows


# --------------------------------------------------------------------------- encoding


class _Encode:
    """A Ray Data callable class: loads the model(s) once per actor, encodes batches of rows.

    In ``corpus`` mode rows are raw corpus lines, prepared exactly as an in-process ingest prepares
    documents (ids, text fields, payload, passages); otherwise they carry ``text_column`` and
    ``id_column`` and are encoded as they are.
    """

    def __init__(
        self,
        model: Any,
        *,
        side: str = "document",
        batch_size: int = 32,
        max_active_dims: int | None = None,
        device: str | None = None,
        precision: str = "fp32",
        text_column: str = "text",
        id_column: str | None = "_id",
        payload_columns: Sequence[str] = (),
        corpus: Mapping[str, Any] | None = None,
        dense_model: Any | None = None,
    ) -> None:
        from .encoding import Encoding

        encoder = _loaded(model, device, precision, "sparse")
        dense = _loaded(dense_model, device, precision, "dense") if dense_model is not None else None
        self.settings = IngestSettings(**corpus["settings"]) if corpus else IngestSettings()
        # The in-process ingest's own preparation and encoding, with no connector: the vectors are
        # those of an in-process ingest by construction.
        self.encoding = Encoding(encoder, dense_encoder=dense, batch_size=batch_size, max_active_dims=max_active_dims)
        self.side = side
        self.text_column, self.id_column, self.payload_columns = text_column, id_column, tuple(payload_columns)
        self.corpus = dict(corpus) if corpus else None

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = self._prepare_corpus(batch) if self.corpus else self._prepare_plain(batch)
        ok = [r for r in rows if r[ERROR] is None]
        truncated = self._count_truncated([r[TEXT] for r in ok]) if self.corpus else 0
        if ok:
            texts = [r[TEXT] for r in ok]
            if self.side == "query":
                vectors, errors = self.encoding.encode_queries(texts), {}
            else:
                vectors, errors = self.encoding.encode_documents_checked(texts)
            dense = self._dense(texts) if self.encoding.dense_encoder is not None else None
            for k, row in enumerate(ok):
                if k in errors:
                    row[ERROR] = errors[k]
                    continue
                row[INDICES], row[VALUES] = list(vectors[k].indices), list(vectors[k].values)
                if dense is not None:
                    row[DENSE] = dense[k]
        table = _rows_to_table(rows, with_dense=self.encoding.dense_encoder is not None)
        if self.corpus:  # an ingest: the batch's count of truncated documents rides on its first row
            counts = [0] * len(rows)
            if counts:
                counts[0] = truncated
            table = table.append_column(TRUNCATED, pa.array(counts, pa.int64()))
        return table

    def _count_truncated(self, texts: list[str]) -> int:
        # As an in-process ingest counts them: documents cut at max_seq_length (passages are never cut).
        max_len = getattr(self.encoding.encoder, "max_seq_length", None)
        if self.side != "document" or not max_len or self.settings.split_passages:
            return 0
        return count_truncated(texts, self.encoding.encoder.tokenizer, int(max_len))

    def _dense(self, texts: list[str]) -> list[list[float]] | None:
        from ..vectors.convert import dense_rows

        encode = self.encoding.dense_encoder.encode_document
        return dense_rows(encode(texts, batch_size=self.encoding.batch_size))

    def _prepare_plain(self, batch: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        if self.text_column not in batch:
            raise ConfigError(f"the dataset has no column {self.text_column!r} (columns: {', '.join(batch)})")
        rows = []
        texts = batch[self.text_column]
        ids = batch.get(self.id_column) if self.id_column else None
        numbers = batch.get(NUMBER)
        for k, text in enumerate(texts):
            text = "" if text is None else str(text)
            doc_id = str(ids[k]) if ids is not None and ids[k] is not None else text_id(text)
            payload = {c: _plain(batch[c][k]) for c in self.payload_columns if c in batch}
            error = None if text.strip() else "no text: the text column is empty"
            n = int(numbers[k]) if numbers is not None else 0
            rows.append(_row(doc_id, text, payload, error, n))
        return rows

    def _prepare_corpus(self, batch: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        corpus = self.corpus or {}
        plan = Plan(corpus["id_field"], corpus["text_fields"], corpus["payload_types"], corpus["passage_tokens"])
        rows = []
        for n, ref, raw in zip(batch[NUMBER], batch[REF], batch[DOCUMENT]):
            n = int(n)
            doc = parse_jsonl_line(bytes(raw), str(ref))
            if doc is None:
                continue  # a blank line, skipped as by the in-process reader
            report = IngestReport()
            prepared = prepare_document(
                doc,
                n,
                plan,
                report,
                {},  # duplicates across the corpus are resolved by the writer, which sees every id
                tokenizer=self.encoding.encoder.tokenizer,
                passage_overlap=self.settings.passage_overlap,
            )
            if prepared is None:
                for key, reason in report.failed.items():
                    rows.append(_row(key, "", {}, reason, n))
                continue
            for rid, text, payload in zip(prepared.ids, prepared.texts, prepared.payloads):
                rows.append(_row(rid, text, payload, None, n))
        return rows


def _row(doc_id: str, text: str, payload: Mapping[str, Any], error: str | None, n: int) -> dict[str, Any]:
    return {ID: doc_id, TEXT: text, PAYLOAD: payload, INDICES: [], VALUES: [], DENSE: None, ERROR: error, NUMBER: n}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _rows_to_table(rows: list[dict[str, Any]], *, with_dense: bool) -> pa.Table:
    columns: dict[str, pa.Array] = {
        ID: pa.array([r[ID] for r in rows], pa.string()),
        TEXT: pa.array([r[TEXT] for r in rows], pa.string()),
        PAYLOAD: pa.array([json.dumps(r[PAYLOAD], ensure_ascii=False, default=str) for r in rows], pa.string()),
        INDICES: pa.array([r[INDICES] for r in rows], pa.list_(pa.uint32())),
        VALUES: pa.array([r[VALUES] for r in rows], pa.list_(pa.float32())),
    }
    if with_dense:
        columns[DENSE] = pa.array([r[DENSE] for r in rows], pa.list_(pa.float32()))
    columns[ERROR] = pa.array([r[ERROR] for r in rows], pa.string())
    columns[NUMBER] = pa.array([r[NUMBER] for r in rows], pa.int64())
    return pa.table(columns)


def encode_dataset(
    ds: ray.data.Dataset,
    model: Any,
    *,
    text_column: str = "text",
    id_column: str | None = "_id",
    payload_columns: Sequence[str] = (),
    side: str = "document",
    batch_size: int = 32,
    max_active_dims: int | None = None,
    device: str | None = None,
    precision: str = "fp32",
    concurrency: int = 1,
    num_cpus: float | None = 1,
    num_gpus: float | None = None,
) -> ray.data.Dataset:
    """Encode a dataset's ``text_column`` into sparse vectors, one model per actor.

    ``model`` is a model name or folder (``packaged:splade`` too) loaded by each actor (on ``device``,
    in ``precision``: "fp32", "bf16" or "int8", as ``[model] precision``), a
    :class:`~sparsebridge.config.builder.ModelChoice` (``sparse_model(config)``), or a loaded
    :class:`~sparsebridge.SparseEncoder` shipped to them. The result has the columns of the Parquet
    sparse-vector dataset (``id``, ``text``, ``payload`` as JSON, ``indices`` list<uint32>, ``values``
    list<float32>), plus ``error`` (why a row could not be encoded, else null) and ``n``; rows
    without an id get the hash of their text, as in an in-process ingest. ``side`` is
    ``"document"`` or ``"query"``.
    """
    if side not in ("document", "query"):
        raise ValueError(f"side must be 'document' or 'query', got {side!r}")
    return ds.map_batches(
        _Encode,
        fn_constructor_kwargs={
            "model": model,
            "side": side,
            "batch_size": batch_size,
            "max_active_dims": max_active_dims,
            "device": device,
            "precision": precision,
            "text_column": text_column,
            "id_column": id_column,
            "payload_columns": tuple(payload_columns),
        },
        batch_size=batch_size * 4,
        batch_format="numpy",
        compute=_pool(concurrency),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


# --------------------------------------------------------------------------- writing


class _Write:
    """A Ray Data callable class for server backends: one connector per actor, upserts by id."""

    def __init__(self, config: Config, vocab_tokens: list[str]) -> None:
        from ..config.builder import connector_from_config

        self.connector = connector_from_config(config)
        self.tokens = np.array(vocab_tokens, dtype=object)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        written, failed, retries, notes = _write_batch(self.connector, self.tokens, batch)
        # One row per input row: its id, number, and why it failed (null when written); the
        # batch's retries and the backend's notes ride on its first row.
        reasons = [failed.get(str(doc_id)) for doc_id in batch[ID]]
        retried = [0] * len(reasons)
        noted: list[list[str]] = [[] for _ in reasons]
        if retried:
            retried[0], noted[0] = retries, notes
        return pa.table(
            {
                ID: pa.array([str(x) for x in batch[ID]], pa.string()),
                NUMBER: pa.array([int(x) for x in batch[NUMBER]], pa.int64()),
                ERROR: pa.array(reasons, pa.string()),
                "encoded": pa.array([bool(t) for t in batch[TEXT]], pa.bool_()),
                "retries": pa.array(retried, pa.int64()),
                "notes": pa.array(noted, pa.list_(pa.string())),
                TRUNCATED: pa.array([int(x) for x in batch.get(TRUNCATED, [0] * len(reasons))], pa.int64()),
            }
        )


def _records(batch: Mapping[str, Any], tokens: np.ndarray) -> tuple[list[Record], dict[str, str]]:
    records: list[Record] = []
    failed: dict[str, str] = {}
    dense_col = batch.get(DENSE)
    for k, doc_id in enumerate(batch[ID]):
        doc_id = str(doc_id)
        error = batch[ERROR][k]
        if error is not None:
            failed[doc_id] = str(error)
            continue
        indices = [int(i) for i in batch[INDICES][k]]
        values = [float(v) for v in batch[VALUES][k]]
        sparse = SparseVector(tuple(indices), tuple(values), tuple(tokens[indices].tolist()) if indices else ())
        dense = None
        if dense_col is not None and dense_col[k] is not None:
            dense = [float(x) for x in dense_col[k]]
        records.append(
            Record(
                id=doc_id, text=str(batch[TEXT][k]), sparse=sparse, payload=json.loads(batch[PAYLOAD][k]), dense=dense
            )
        )
    return records, failed


def _write_batch(
    connector: Any, tokens: np.ndarray, batch: Mapping[str, Any]
) -> tuple[list[str], dict[str, str], int, list[str]]:
    """Write a batch's encoded rows: (ids written, failed ids with reasons, retries, the backend's notes)."""
    records, failed = _records(batch, tokens)
    written: list[str] = []
    retries, notes = 0, []
    if records:
        result = connector.write(records)
        written, retries, notes = list(result.written), result.retries, list(result.notes)
        failed.update(result.failed)
    return written, failed, retries, notes


def _add_notes(report: IngestReport, notes: Sequence[str]) -> None:
    # What the backend wants the user to know (e.g. weights clipped by SEISMIC), once each, as in-process.
    report.notes.extend(n for n in dict.fromkeys(notes) if n not in report.notes)


def write_dataset(
    ds: ray.data.Dataset,
    config: Config,
    *,
    pipeline: Any | None = None,
    batch_size: int = 256,
    concurrency: int = 2,
    show_progress: bool = True,
    total: int | None = None,
) -> IngestReport:
    """Write an encoded dataset (from :func:`encode_dataset`) to the configured backend.

    Every write is an upsert keyed by document id, so a retried Ray task rewrites the same records
    and can neither lose nor duplicate one. The index is created (or checked against the model's
    vocabulary) first, by the driver. Backends owned by one process are written by the driver;
    server backends from ``concurrency`` writer actors. Returns the same report as an ingest.
    """
    from .pipeline import Pipeline
    from .writer import progress_bar

    own = pipeline is None
    pipe = pipeline if pipeline is not None else Pipeline.from_config(config, show_progress=False)
    report = IngestReport(index=pipe.index)
    start = time.perf_counter()
    try:
        if pipeline is None:
            # The same checks as a local ingest: vocabulary and what produced the vectors.
            pipe.open_index(pipe.index_spec(dict(config.ingest.payload_fields or {})))
        tokens = pipe.vocab.token_array(len(pipe.vocab.tokens))
        progress = progress_bar(total, "ingest (ray)", "docs", show_progress)
        try:
            if getattr(pipe.connector, "single_writer", False):
                _write_from_driver(ds, pipe, tokens, report, batch_size, progress)
            else:
                _write_from_workers(ds, config, pipe, tokens, report, batch_size, concurrency, progress)
        finally:
            progress.close()
    finally:
        report.seconds = time.perf_counter() - start
        if own:
            pipe.close()
    return report


def _write_from_driver(
    ds: ray.data.Dataset, pipe: Any, tokens: np.ndarray, report: IngestReport, batch_size: int, progress: Any
) -> None:
    seen: dict[str, int] = {}
    documents = _DocumentCounter()
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        keep = _first_occurrences(batch, seen, report)
        before = documents.count
        documents.add(batch[NUMBER])
        report.documents += documents.count - before
        if keep is not None:
            batch = {key: col[keep] for key, col in batch.items()}
        started = time.perf_counter()
        written, failed, retries, notes = _write_batch(pipe.connector, tokens, batch)
        report.write_seconds += time.perf_counter() - started
        report.records += _encoded_rows(batch)
        report.written += len(written)
        report.failed.update(failed)
        report.retries += retries
        report.truncated += int(batch[TRUNCATED].sum()) if TRUNCATED in batch else 0
        _add_notes(report, notes)
        progress.update(documents.count - before)


def _first_occurrences(batch: Mapping[str, np.ndarray], seen: dict[str, int], report: IngestReport) -> Any:
    # Rows arrive in corpus order (preserve_order), so "first seen" is "first in the corpus", as in
    # an in-process ingest. Passages of one document share its number and are not duplicates.
    keep = []
    for k, (doc_id, n) in enumerate(zip(batch[ID], batch[NUMBER])):
        doc_id, n = str(doc_id), int(n)
        if batch[ERROR][k] is not None:
            keep.append(k)
            continue
        first = seen.setdefault(doc_id, n)
        if first != n:
            report.failed[f"{doc_id} (document {n})"] = (
                f"duplicate id {doc_id!r}: document {first} of this corpus has the same id "
                f"(ids compare as strings; without an id field, equal texts get equal ids); it was kept"
            )
            continue
        keep.append(k)
    return None if len(keep) == len(batch[ID]) else np.array(keep, dtype=np.int64)


def _encoded_rows(batch: Mapping[str, np.ndarray]) -> int:
    # Records, as an in-process ingest counts them: rows that reached the encoder (documents
    # refused before it, e.g. with no text, carry no text here).
    return sum(1 for text in batch[TEXT] if text)


class _DocumentCounter:
    """Counts distinct document numbers (a document's passages share one) in a bitmap: one bit per
    corpus line keeps this small for tens of millions of documents, whatever order rows come in."""

    def __init__(self) -> None:
        self.bits = bytearray()
        self.count = 0

    def add(self, numbers: np.ndarray) -> None:
        for n in numbers.tolist():
            byte, bit = divmod(int(n), 8)
            if byte >= len(self.bits):
                self.bits.extend(bytes(max(byte + 1 - len(self.bits), len(self.bits))))
            if not self.bits[byte] >> bit & 1:
                self.bits[byte] |= 1 << bit
                self.count += 1


def _write_from_workers(
    ds: ray.data.Dataset,
    config: Config,
    pipe: Any,
    tokens: np.ndarray,
    report: IngestReport,
    batch_size: int,
    concurrency: int,
    progress: Any,
) -> None:
    # Duplicate ids can only be seen once the writers report back: the index holds one of the two
    # documents (whichever was written last), and the report names the other.
    started = time.perf_counter()
    results = ds.map_batches(
        _Write,
        fn_constructor_kwargs={"config": config, "vocab_tokens": tokens.tolist()},
        batch_size=batch_size,
        batch_format="numpy",
        compute=_pool(concurrency),
        num_cpus=0.5,
    )
    first: dict[str, int] = {}
    documents = _DocumentCounter()
    for batch in results.iter_batches(batch_size=4096, batch_format="numpy"):
        before = documents.count
        documents.add(batch[NUMBER])
        report.documents += documents.count - before
        report.records += int(batch["encoded"].sum())
        for doc_id, n, error in zip(batch[ID], batch[NUMBER], batch[ERROR]):
            doc_id, n = str(doc_id), int(n)
            if error is not None:
                report.failed[doc_id] = str(error)
                continue
            report.written += 1
            if first.setdefault(doc_id, n) != n:
                report.written -= 1
                report.failed[f"{doc_id} (document {n})"] = (
                    f"duplicate id {doc_id!r}: document {first[doc_id]} of this corpus has the same id; "
                    f"with parallel writers the index holds whichever was written last"
                )
        report.retries += int(batch["retries"].sum())
        report.truncated += int(batch[TRUNCATED].sum())
        _add_notes(report, [note for notes in batch["notes"] for note in notes])
        progress.update(documents.count - before)
    report.write_seconds += time.perf_counter() - started


# --------------------------------------------------------------------------- the CLI's ingest


def ingest_with_ray(
    config: Config,
    corpus: str | Path,
    *,
    address: str | None = None,
    workers: int = 2,
    gpus_per_worker: float = 0,
    limit: int | None = None,
    recreate: bool = False,
    show_progress: bool = True,
) -> IngestReport:
    """``sparsebridge ingest CORPUS --engine ray``: read, prepare and encode on Ray workers, write
    through the configured connector; the index holds what an in-process ingest would write.

    Connects to the cluster at ``address``, or starts a local Ray when none is given (and stops it
    afterwards). ``workers`` encode actors each hold one copy of the model (and of the dense model
    when ``[search] hybrid`` is on), with ``gpus_per_worker`` GPUs each.
    """
    from ..config.builder import dense_model, sparse_model
    from .pipeline import Pipeline

    started_here = not ray.is_initialized()
    if started_here and address:
        check_address(address)
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    elif started_here:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    # Our own progress bar and report say what happened; Ray Data's would print over them.
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        source = open_corpus(corpus, limit=limit)  # field layout and size; the reading is Ray's
        pipe = Pipeline.from_config(config, show_progress=False)
        try:
            settings = pipe.ingest_settings
            plan = plan_corpus(settings, source, getattr(pipe.encoder, "max_seq_length", None))
            if recreate:
                pipe.connector.drop()
            pipe.open_index(pipe.index_spec(plan.payload_types))

            ds = read_corpus(corpus, limit=limit)
            encoded = ds.map_batches(
                _Encode,
                fn_constructor_kwargs={
                    # What to load, as the builder read it from the config: each actor loads its own copy.
                    "model": sparse_model(config),
                    "dense_model": dense_model(config),
                    "batch_size": config.model.batch_size,
                    "max_active_dims": config.model.max_active_dims,
                    "corpus": {
                        "settings": _settings_dict(settings),
                        "id_field": plan.id_field,
                        "text_fields": plan.text_fields,
                        "payload_types": plan.payload_types,
                        "passage_tokens": plan.passage_tokens,
                    },
                },
                batch_size=config.model.batch_size * 4,
                batch_format="numpy",
                compute=_pool(workers),
                num_cpus=1,
                num_gpus=gpus_per_worker or None,
            )
            encode_started = time.perf_counter()
            report = write_dataset(
                encoded, config, pipeline=pipe, show_progress=show_progress, total=source.size, concurrency=workers
            )
            if not settings.split_passages:
                report.max_seq_length = int(pipe.encoder.max_seq_length)
            # Encoding and writing overlap on Ray; what is not writing is the workers' share.
            report.encode_seconds = max(time.perf_counter() - encode_started - report.write_seconds, 0.0)
            return report
        finally:
            pipe.close()
    finally:
        if started_here:
            ray.shutdown()


def _pool(actors: int) -> Any:
    """An actor pool that grows from one actor up to ``actors``: a fixed pool larger than the
    dataset's blocks (one for a corpus under 2,000 lines) made Ray Data warn about idle actors."""
    return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(actors)))


def check_address(address: str) -> None:
    """Refuse a cluster address that is malformed, names an unknown host or does not answer, in
    one line and within ``CONNECT_SECONDS``: ``ray.init`` raised a ValueError traceback for a port
    that is not a number and retried a closed port for about 30 s before a ConnectionError."""
    if address in ("auto", "local"):
        return
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "ray":
        return  # another client scheme (a Ray plugin's): Ray checks it itself
    where = rest if sep else address
    try:
        parts = urlsplit("//" + where)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port that is not a number, or out of range
        raise ClusterError(
            f"--address {address!r} is not a Ray address ({exc}); use HOST:PORT or ray://HOST:PORT"
        ) from None
    if not host or port is None:
        raise ClusterError(f"--address {address!r} is not a Ray address; use HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            pass
    except socket.gaierror as exc:
        raise ClusterError(f"Ray cluster {address!r}: host {host!r} is not known ({exc.strerror})") from None
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address!r} ({exc.strerror or exc}); start one (`ray start --head`) "
            f"or leave out --address to run a local Ray"
        ) from None


def _settings_dict(settings: IngestSettings) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(settings)


def iter_rows(ds: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    """The rows of an encoded dataset as plain dicts (``payload`` parsed), for inspection and tests."""
    for row in ds.iter_rows():
        out = dict(row)
        out[PAYLOAD] = json.loads(out[PAYLOAD])
        out[INDICES] = [int(i) for i in out[INDICES]]
        out[VALUES] = [float(v) for v in out[VALUES]]
        yield out
