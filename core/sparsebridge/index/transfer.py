"""Moving vectors out of an index: ``export`` (index -> vector dataset) and ``migrate`` (index ->
another index, any backend to any backend), streaming, never re-encoding.

Both read through the connector contract's :meth:`~sparsebridge.connector.Connector.export`, which
gives every record back with its vectors; a vocabulary (the model's tokenizer) turns token keys back
into ids and ids into tokens. Both are safe to interrupt and run again: an export skips the ids its
dataset's complete parts already hold, and a migration's writes are upserts by id, so a re-run
loses nothing and duplicates nothing. A migration ends by comparing the two indexes' counts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import reveal
from ..connector import Connector, ConnectorError, IndexSpec, Record, check_vocabulary
from ..errors import ConfigError
from ..vectors.vocabulary import Vocabulary
from .results import IngestReport
from .writer import progress_bar

# Connector options that say where an index lives (not how to talk to it: timeouts, credentials).
_ADDRESS_OPTIONS = ("url", "hosts", "host", "port", "path", "location", "mode", "cloud_id")
# Index metadata keys that describe the vectors (what a dataset and a migrated index carry over).
_CARRIED = ("model", "vocab_size", "vocab_fingerprint", "producer", "vectors_producer", "dense_model")


@dataclass
class TransferReport:
    """What an export or migration did: records read and written, counts on both sides."""

    source: str
    target: str
    read: int = 0
    written: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    source_count: int | None = None
    target_count: int | None = None
    target_before: int | None = None  # records the target index held before a migration
    values_quantised: str = "none"
    seconds: float = 0.0
    # Why an export found its earlier rows stale and started over, or None.
    restarted: str | None = None

    @property
    def counts_equal(self) -> bool:
        """Whether the target ends with as many records as the source."""
        return self.source_count is not None and self.source_count == self.target_count

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--json``)."""
        out = asdict(self)
        out["counts_equal"] = self.counts_equal
        out["seconds"] = round(self.seconds, 3)
        return out


# Connection options that say where an index lives (the rest: credentials, timeouts, retries).
_PLACE_KEYS = ("mode", "path", "location", "url", "hosts", "host", "port")


def _place(config: Any) -> tuple[Any, ...]:
    options = reveal(config.backend.options)
    where = []
    for key in _PLACE_KEYS:
        value = options.get(key)
        if key in ("path", "location") and isinstance(value, str) and value != ":memory:":
            value = os.path.realpath(os.path.expanduser(value))
        elif isinstance(value, str):
            value = value.rstrip("/").lower()
        elif isinstance(value, list):
            value = tuple(str(v).rstrip("/").lower() for v in value)
        where.append(value)
    return (config.backend.connector, config.backend.index, *where)


def check_distinct_indexes(source: Any, target: Any) -> None:
    """Refuse a migration whose two configs name one index (same connector, place and index name)
    before either is opened: nothing could be gained, and embedded engines lock their folder."""
    if _place(source) == _place(target) and source.backend.options.get("location") != ":memory:":
        raise ConfigError(
            f"--from {source.source} and --to {target.source} name the same index ({source.backend.connector} "
            f"index {source.backend.index!r}): an index cannot be migrated into itself; give --to another "
            f"index or backend"
        )


def _stored_metadata(connector: Connector, vocab: Vocabulary, where: str) -> dict[str, Any]:
    stored = connector.index_metadata()
    if stored is None:
        raise ConnectorError(f"{where} does not exist; nothing to read")
    check_vocabulary(stored, vocab.metadata, where)
    return stored


def _check_range(batch: list[Record], vocab: Vocabulary, where: str) -> None:
    problem = vocab.outside(batch)
    if problem is not None:
        raise ConnectorError(
            f"{where}: {problem}: not a vector of this model; delete or re-ingest that record and run again"
        )


def _peek(batches: Iterator[list[Record]]) -> tuple[list[Record] | None, Iterator[list[Record]]]:
    first = next(batches, None)
    if first is None:
        return None, iter(())
    return first, itertools.chain([first], batches)


def export_index(
    connector: Connector,
    vocab: Vocabulary,
    output: str | Path,
    *,
    index: str = "index",
    batch_size: int = 500,
    part_rows: int | None = None,
    show_progress: bool = False,
) -> TransferReport:
    """Read every record of ``connector``'s index back into a vector dataset at ``output``.

    The dataset's metadata is the index's (model, vocabulary, producer) plus ``values_quantised``
    as the connector reports it (``"lucene-9bit"`` when the engine gave back Lucene's rounded
    weights), and ``export_of``: which index of which backend it holds. Re-running resumes an
    export of the same index only (another is refused): ids already in complete parts are skipped
    once they are found unchanged; if a record changed or left the index since, the export starts
    over (``report.restarted`` says why), so a dataset never mixes two states of an index.
    """
    from ..vectors.dataset import DEFAULT_PART_ROWS, DatasetWriter, dataset_metadata

    start = time.perf_counter()
    where = f"index {index!r}"
    stored = _stored_metadata(connector, vocab, where)
    report = TransferReport(source=where, target=str(output), source_count=connector.count())

    def read() -> Iterator[list[Record]]:
        return iter(connector.export(list(vocab.tokens), batch_size=batch_size))

    first, batches = _peek(read())
    if first is None and not _has_parts(Path(output)):
        report.target_count = 0
        report.seconds = time.perf_counter() - start
        return report
    dense_size = next((len(r.dense) for r in first or () if r.dense is not None), None)
    # The first batch tells how the engine keeps weights; the whole export is checked at the end.
    report.values_quantised = connector.export_quantisation()
    producer = dict(stored.get("vectors_producer") or {"model": stored.get("model")})
    meta = dataset_metadata(
        stored,
        producer,
        dense_model=stored.get("dense_model"),
        dense_size=dense_size,
        values_quantised=report.values_quantised,
        source=f"export of {where} ({type(connector).__name__})",
    )
    meta["export_of"] = {"index": index, "backend": type(connector).__name__, "location": _location(connector)}
    if isinstance(stored.get("producer"), dict):
        meta["index_producer"] = dict(stored["producer"])  # what an index built from it will check
    progress = progress_bar(report.source_count, "export", "records", show_progress)
    try:
        with DatasetWriter(output, meta, part_rows=part_rows or DEFAULT_PART_ROWS, digests=True) as out:
            stale = _export_pass(batches, out, vocab, where, report, progress)
            if stale is not None:
                # The parts hold another state of the index than the one being read: keeping them
                # would hand out stale rows, and rewriting them in place is a new export anyway.
                report.restarted = f"{stale}; the export started over"
                out.reset()
                report.read = report.written = report.skipped = 0
                report.failed.clear()
                progress.reset()
                _export_pass(read(), out, vocab, where, report, progress)
            report.target_count = len(out.done_ids) + report.written
    finally:
        progress.close()
    if connector.export_quantisation() != report.values_quantised:
        raise ConnectorError(
            f"{where}: the first records' weights looked {report.values_quantised!r}, the rest did not; "
            f"the index mixes exact and Lucene-rounded weights: export again into a new folder"
        )
    report.seconds = time.perf_counter() - start
    return report


def _export_pass(
    batches: Iterator[list[Record]], out: Any, vocab: Vocabulary, where: str, report: TransferReport, progress: Any
) -> str | None:
    """Write the records ``out`` lacks; None, or why its complete rows are stale (a record that
    differs from its row, or rows whose records left the index), stopping at the first difference."""
    from ..vectors.dataset import record_digest

    done: dict[str, bytes] = out.done_digests
    confirmed: set[str] = set()
    for batch in batches:
        _check_range(batch, vocab, where)
        report.read += len(batch)
        fresh = []
        for rec in batch:
            digest = done.get(rec.id)
            if digest is None:
                fresh.append(rec)
            elif digest != record_digest(rec):
                return f"record {rec.id!r} of {where} changed since {out.path} was written"
            else:
                confirmed.add(rec.id)
        report.skipped += len(batch) - len(fresh)
        failed = out.write(fresh)
        report.failed.update(failed)
        report.written += len(fresh) - len(failed)
        progress.update(len(batch))
    gone = [i for i in done if i not in confirmed]
    if gone:
        return f"{len(gone)} records of {out.path} are no longer in {where} (e.g. {gone[0]!r})"
    return None


def _has_parts(path: Path) -> bool:
    from ..vectors.dataset import PART_RE

    return path.is_dir() and any(PART_RE.match(entry.name) for entry in path.iterdir())


def _location(connector: Connector) -> str:
    """Where the connector's index lives, as a digest of its address options (URLs may carry
    credentials, which must not be written into a dataset's metadata)."""
    options = connector.options
    address = {k: options[k] for k in _ADDRESS_OPTIONS if options.get(k) is not None}
    if isinstance(address.get("path"), str):
        address["path"] = os.path.abspath(address["path"])
    return hashlib.sha256(json.dumps(address, sort_keys=True, default=str).encode()).hexdigest()[:16]


def migrate(
    source: Connector,
    target: Any,
    *,
    source_name: str = "source",
    batch_size: int = 500,
    show_progress: bool = False,
) -> TransferReport:
    """Copy every record of ``source``'s index into ``target`` (a :class:`~sparsebridge.pipeline.
    Pipeline` on the target backend), streaming batches through the target's write path.

    The target pipeline's model must have the source index's vocabulary; the target index is
    created with the source's metadata (model, vocabulary, producer) or checked against it.
    """
    start = time.perf_counter()
    where = f"index {source_name!r}"
    stored = _stored_metadata(source, target.vocab, where)
    report = TransferReport(source=where, target=f"index {target.index!r}", source_count=source.count())
    first, batches = _peek(iter(source.export(list(target.vocab.tokens), batch_size=batch_size)))
    dense_size = next((len(r.dense) for r in first or () if r.dense is not None), None)
    spec = IndexSpec(
        name=target.index,
        sparse_field=target.sparse_field,
        dense_field=target.dense_field if dense_size else None,
        dense_size=dense_size,
        payload_fields={k: v for k, v in (target.ingest_settings.payload_fields or {}).items() if v},
        metadata={k: stored[k] for k in _CARRIED if stored.get(k) is not None},
        options=dict(target.index_options),
    )
    report.target_before = _check_target(target, first, where)
    target.open_index(spec)
    ingest = IngestReport(index=target.index)
    progress = progress_bar(report.source_count, "migrate", "records", show_progress)

    def chunks() -> Iterator[tuple[list[Record], int]]:
        for batch in batches:
            _check_range(batch, target.vocab, where)
            report.read += len(batch)
            ingest.records += len(batch)
            yield batch, len(batch)

    try:
        target.write_records(chunks(), ingest, progress)
    finally:
        progress.close()
    report.values_quantised = source.export_quantisation() if first is not None else "none"
    report.written = ingest.written
    report.failed.update(ingest.failed)
    report.target_count = target.count()
    report.seconds = time.perf_counter() - start
    return report


def _check_target(target: Any, first: list[Record] | None, where: str) -> int:
    """The target's record count before a migration; refuses a target that holds other records.

    A re-run of an interrupted migration finds the source's first batch in the target (the export
    order is the same); a target that holds records but none of those holds another index's.
    """
    before = target.count() if target.exists() else 0
    if not before or not first:
        return before
    try:
        found = target.connector.get([r.id for r in first])
    except NotImplementedError:
        return before  # the final count comparison still tells
    if not found:
        raise ConnectorError(
            f"index {target.index!r} already holds {before} records, and none of the first {len(first)} records "
            f"of {where}: it holds another index's records; migrate into a new or empty index, or drop it first"
        )
    return before
