"""The write side of an index, without a model: open (create or check) an index and send records
to it through the one write path. Vector sources feed it: a vector dataset (here), another index
(``transfer.migrate``), or text encoded by the :class:`~sparsebridge.index.pipeline.Pipeline`,
which extends this class with the encoders.

Nothing here imports torch: ``sparsebridge ingest vectors.parquet`` and ``migrate`` write through an
``IndexWriter`` whose vocabulary comes from the model's tokenizer file, not from a loaded model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..config import Config, IngestSettings, reveal
from ..config.builder import build_vocabulary, connector_from_config
from ..connector import (
    Connector,
    ConnectorError,
    IndexSpec,
    Record,
    RecordColumns,
    WriteResult,
    check_vector_kinds,
    check_vocabulary,
)
from ..vectors.producer import check_vectors_producer, dataset_index_metadata
from ..vectors.provenance import check_producers
from ..vectors.vocabulary import Vocabulary
from .results import IngestError, IngestReport


class IndexWriter:
    """Connector + index + vocabulary: open an index and write records to it.

    ``vocab`` is the configured model's :class:`~sparsebridge.vectors.vocabulary.Vocabulary`: what
    is written is checked against it and against the index's own. ``allow_model_change`` lets
    vectors of another producer into the index (with a note).
    """

    def __init__(
        self,
        connector: Connector,
        vocab: Vocabulary,
        index: str = "sparsebridge",
        *,
        batch_size: int = 32,
        sparse_field: str = "sparse",
        dense_field: str = "dense",
        index_options: Mapping[str, Any] | None = None,
        ingest_settings: IngestSettings | None = None,
        show_progress: bool = True,
        allow_model_change: bool | None = None,
    ) -> None:
        self.connector = connector
        self.vocab = vocab
        self.index = index
        self.batch_size = batch_size
        self.sparse_field = sparse_field
        self.dense_field = dense_field
        self.index_options = dict(index_options or {})
        self.ingest_settings = ingest_settings or IngestSettings()
        self.show_progress = show_progress
        # Write into / search an index built by another model (see sparsebridge.vectors.provenance).
        if allow_model_change is None:
            allow_model_change = bool(getattr(self.ingest_settings, "allow_model_change", False))
        self.allow_model_change = allow_model_change

    @classmethod
    def from_config(
        cls, config: Config, *, connector: Connector | None = None, show_progress: bool = True
    ) -> IndexWriter:
        """The backend and model the config names, without loading the model: the vocabulary is
        read from its tokenizer (see :func:`~sparsebridge.config.builder.build_vocabulary`)."""
        if connector is None:
            connector = connector_from_config(config)
        try:
            connector.check()  # an unreachable backend fails in a second
            vocab = build_vocabulary(config)
        except BaseException:
            connector.close()
            raise
        return cls(
            connector,
            vocab,
            config.backend.index,
            batch_size=config.model.batch_size,
            sparse_field=config.backend.sparse_field,
            dense_field=config.backend.dense_field,
            index_options=reveal(config.backend.index_options),
            ingest_settings=config.ingest,
            show_progress=show_progress,
            allow_model_change=config.ingest.allow_model_change,
        )

    def close(self) -> None:
        """Close the connector (None: a pipeline that only encodes into a dataset)."""
        if self.connector is not None:
            self.connector.close()

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self) -> int:
        """Records in the index."""
        return self.connector.count()

    def exists(self) -> bool:
        """Whether the index exists (it has metadata)."""
        return self.connector.index_metadata() is not None

    def open_index(self, spec: IndexSpec, report: IngestReport | None = None) -> None:
        """Create the index, or check it before anything is written: the vocabulary, the kinds of
        vector it holds, then what produced them (refused unless ``allow_model_change``; notes go
        to ``report``)."""
        stored = self.connector.index_metadata()
        check_vocabulary(stored, spec.metadata, self.index)
        check_vector_kinds(stored, spec.metadata, self.index, self.dense_field)
        producers = spec.metadata.get("producer")
        if isinstance(producers, Mapping) and producers:
            notes = check_producers(
                stored, producers, self.index, sides=producers.keys(), allow_change=self.allow_model_change
            )
            if report is not None:
                report.notes.extend(notes)
        elif not self.allow_model_change:
            # Vectors whose per-side fingerprints are unknown (a dataset written without them): the
            # producer dict they carry is what can be compared.
            check_vectors_producer(stored, spec.metadata, self.index)
        self.connector.ensure_index(spec)

    def write_records(
        self, chunks: Iterable[tuple[list[Record] | RecordColumns, int]], report: IngestReport, progress: Any
    ) -> None:
        """The one write path: every vector source's records (or columns) go to the connector here."""
        for records, n_docs in chunks:
            if len(records):
                started = time.perf_counter()
                try:
                    if isinstance(records, RecordColumns):
                        result = self.connector.write_columns(records)
                    else:
                        result = self.connector.write(records)
                except ConnectorError as exc:
                    raise IngestError(
                        f"writing to index {self.index!r} failed after {report.written} records: {exc}; "
                        f"run the same ingest again to resume (writes are upserts by id)",
                        report,
                    ) from exc
                finally:
                    report.write_seconds += time.perf_counter() - started
                self._account(result, report)
            progress.update(n_docs)

    def _account(self, result: WriteResult, report: IngestReport) -> None:
        report.written += len(result.written)
        report.failed.update(result.failed)
        report.retries += result.retries
        # What the backend wants the user to know (e.g. weights clipped by SEISMIC), once each.
        report.notes.extend(n for n in dict.fromkeys(result.notes) if n not in report.notes)

    def ingest_dataset(self, path: str | Path, *, recreate: bool = False) -> IngestReport:
        """Write a vector dataset (see :mod:`sparsebridge.vectors.dataset`) to the backend: no encoder runs.

        The dataset's vocabulary must be the configured model's, and the index's (as for text).
        """
        from ..vectors.dataset import open_dataset

        data = open_dataset(path)
        data.check_start(self.vocab)  # a dataset refused from its first rows on creates no index
        report = IngestReport(index=self.index)
        start = time.perf_counter()
        meta = data.metadata
        spec = IndexSpec(
            name=self.index,
            sparse_field=self.sparse_field,
            dense_field=self.dense_field if meta.get("dense_size") else None,
            dense_size=meta.get("dense_size"),
            payload_fields={k: v for k, v in (self.ingest_settings.payload_fields or {}).items() if v},
            metadata=dataset_index_metadata(meta),
            options=dict(self.index_options),
        )
        if recreate:
            self.connector.drop()
        self.open_index(spec, report)
        progress = progress_bar(data.rows, "ingest", "records", self.show_progress)

        seen: dict[str, int] = {}  # id -> the row that holds it, as text ingest keeps ids

        def chunks() -> Iterator[tuple[RecordColumns, int]]:
            # Columns, not a Record per row: the connector builds its points from the flat arrays.
            for cols in data.columns(self.vocab, batch_rows=self.batch_size * 32):
                first = report.documents + 1
                dropped = []
                for k, rid in enumerate(cols.ids):
                    row = seen.setdefault(rid, first + k)
                    if row != first + k:
                        # A later row would silently replace the first in the index (an upsert).
                        report.failed[f"{rid} (row {first + k})"] = (
                            f"duplicate id {rid!r}: row {row} of this dataset has the same id; it was kept"
                        )
                        dropped.append(k)
                n_rows = len(cols)
                report.documents += n_rows
                if dropped:
                    gone = set(dropped)
                    cols = cols.take([k for k in range(n_rows) if k not in gone])
                report.records += len(cols)
                yield cols, n_rows

        try:
            self.write_records(chunks(), report, progress)
        finally:
            progress.close()
            report.seconds = time.perf_counter() - start
        return report


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool) -> Any:
    """A tqdm bar on stderr (disabled: a no-op with the same methods)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)
