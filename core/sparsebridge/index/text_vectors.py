"""The text vector source: a corpus read, prepared, and encoded (cache first) into records, chunk
by chunk, for an index (``Pipeline.ingest``) or a vector dataset (:func:`encode_to_dataset`,
behind ``sparsebridge encode CORPUS --output vectors.parquet``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..config import IngestSettings
from ..config.builder import dense_dimension
from ..connector import Record
from .corpus import Corpus
from .encoding import Encoding
from .passages import count_truncated
from .preparation import Plan, Prepared, open_documents, plan_corpus, prepare_document
from .results import IngestReport
from .writer import progress_bar


def text_vectors(
    encoding: Encoding,
    corpus: Corpus,
    plan: Plan,
    report: IngestReport,
    progress: Any,
    *,
    settings: IngestSettings,
    skip: set[str] | None = None,
    chunk_records: int | None = None,
) -> Iterator[tuple[list[Record], int]]:
    """The text vector source: read -> prepare -> (cache | encode) -> records, by chunk.

    Documents that fail are recorded in ``report.failed``; documents whose id (or first
    passage id) is in ``skip`` are counted in ``report.skipped`` and not encoded. A chunk holds
    about ``chunk_records`` records (default: four encoding batches).
    """
    chunk_records = chunk_records or encoding.batch_size * 4
    chunk: list[Prepared] = []
    in_chunk = 0
    seen: dict[str, int] = {}  # id -> number of the document that holds it in this run
    for n, doc in enumerate(corpus, 1):
        report.documents += 1
        where = corpus.location() or f"#{n}"
        prepared = prepare_document(
            doc,
            n,
            plan,
            report,
            seen,
            tokenizer=encoding.encoder.tokenizer,
            passage_overlap=settings.passage_overlap,
            where=where,
        )
        if prepared is not None and skip and (prepared.ids[0] in skip):
            report.skipped += 1
            prepared = None
        if prepared is not None:
            chunk.append(prepared)
            in_chunk += len(prepared.ids)
        else:
            progress.update(1)
        if in_chunk >= chunk_records:
            yield encode_chunk(encoding, chunk, report, settings), len(chunk)
            chunk, in_chunk = [], 0
    if chunk:
        yield encode_chunk(encoding, chunk, report, settings), len(chunk)


def encode_chunk(
    encoding: Encoding, chunk: list[Prepared], report: IngestReport, settings: IngestSettings
) -> list[Record]:
    """Vectors of a chunk of prepared documents, from the cache where it has them; records
    that cannot be encoded go to ``report.failed``."""
    ids = [i for p in chunk for i in p.ids]
    texts = [t for p in chunk for t in p.texts]
    payloads = [pl for p in chunk for pl in p.payloads]
    max_len = getattr(encoding.encoder, "max_seq_length", None)
    if max_len and not settings.split_passages:
        report.max_seq_length = int(max_len)
        report.truncated += count_truncated(texts, encoding.encoder.tokenizer, int(max_len))
    started = time.perf_counter()
    sparse, errors = encoding.cached_sparse(texts, report)
    dense: list[list[float]] | None = None
    if encoding.dense_encoder is not None:
        try:
            dense = encoding.cached_dense(texts, report)
        except Exception as exc:  # noqa: BLE001 - reported per record, never dropped
            errors = {i: f"dense encoding failed: {exc}" for i in range(len(texts))}
    report.encode_seconds += time.perf_counter() - started
    records: list[Record] = []
    for k, (rid, text, payload) in enumerate(zip(ids, texts, payloads)):
        if k in errors:
            report.failed[rid] = errors[k]
            continue
        records.append(Record(id=rid, text=text, sparse=sparse[k], payload=payload, dense=dense[k] if dense else None))
    report.records += len(ids)
    return records


def encode_to_dataset(
    encoding: Encoding,
    documents: Corpus | str | Path | Iterable[Mapping[str, Any]],
    output: str | Path,
    *,
    limit: int | None = None,
    part_rows: int | None = None,
    with_text: bool = True,
    settings: IngestSettings,
    show_progress: bool = True,
) -> IngestReport:
    """Encode documents into a vector dataset at ``output`` (no backend involved).

    Resumable: ids already in the dataset's complete parts are skipped (``report.skipped``)
    before encoding, so a killed run is simply run again.
    """
    from ..vectors.dataset import DEFAULT_PART_ROWS, DatasetWriter, dataset_metadata

    corpus = open_documents(documents, limit)
    plan = plan_corpus(settings, corpus, getattr(encoding.encoder, "max_seq_length", None))
    report = IngestReport(index=str(output))
    start = time.perf_counter()
    dense_size = dense_dimension(encoding.dense_encoder) if encoding.dense_encoder is not None else None
    meta = dataset_metadata(
        encoding.vocab.metadata,
        encoding.producer,
        dense_model=encoding.dense_model_name if dense_size else None,
        dense_size=dense_size,
    )
    # What an index built from this dataset records and checks (sparsebridge.provenance).
    meta["index_producer"] = encoding.producers(("document", "query", "dense") if dense_size else ("document", "query"))
    progress = progress_bar(corpus.size, "encode", "docs", show_progress)
    try:
        with DatasetWriter(output, meta, part_rows=part_rows or DEFAULT_PART_ROWS, with_text=with_text) as out:
            # Chunks no larger than a part: a killed run loses at most one part of work.
            chunks = text_vectors(
                encoding,
                corpus,
                plan,
                report,
                progress,
                settings=settings,
                skip=out.done_ids,
                chunk_records=min(out.part_rows, encoding.batch_size * 4),
            )
            for records, n_docs in chunks:
                failed = out.write(records)
                report.failed.update(failed)
                report.written += len(records) - len(failed)
                progress.update(n_docs)
    finally:
        progress.close()
        report.seconds = time.perf_counter() - start
    return report
