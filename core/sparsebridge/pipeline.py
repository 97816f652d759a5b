"""Ingest documents into a backend, search it, explain the hits, and evaluate the ranking.

The way of a document: ``corpus`` (read) -> ``documents``/``passages`` (ids, records to make) ->
``cache`` | the encoder -> ``vectors`` (``SparseVector`` rows) -> ``dataset`` or the connector. A
vector dataset (``ingest_dataset``) and another index (``transfer.migrate``) are vector sources too:
every source feeds the one write path, :meth:`Pipeline.write_records`. ``components`` builds what a config
names, ``results`` holds what comes back, ``metrics`` scores a run.

The pipeline only speaks the connector contract (``sparsebridge.connector``), so every backend
works the same way::

    from sparsebridge.config import load_config
    from sparsebridge.pipeline import Pipeline

    with Pipeline.from_config(load_config("sparsebridge.toml")) as pipe:
        report = pipe.ingest("data/scifact")            # BEIR folder, JSONL file, "stdlib:" or dicts
        results = pipe.search(["what is splade?"], explain=True)

Choices worth knowing:

* Record ids are the document's id field, or ``sha256`` of its text when it has none, so running an
  ingest again updates records instead of duplicating them, and an interrupted run is simply rerun.
* Explanations recompute each hit's document vector from its stored text with
  ``encode_document``. Storing the token weights in the payload instead would double what every
  backend stores and, on Elasticsearch/OpenSearch, map one field per vocabulary token; the encoder
  is deterministic, so recomputing gives the weights that were indexed (up to float noise, and
  before any quantisation the engine applies).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .cache import EncodeCache
from .components import (
    connector_from_config,
    dense_dimension,
    has_inference_free_queries,  # noqa: F401  (re-exported)
    load_dense_encoder,
    load_query_encoder,
    load_sparse_encoder,
)
from .config import Config, ConfigError, IngestSettings, SearchSettings, check_device, reveal
from .connector import (
    Connector,
    ConnectorError,
    Filter,
    IndexSpec,
    Query,
    Record,
    SearchOptions,
    SparseVector,
    WriteResult,
    check_vector_kinds,
    check_vocabulary,
)
from .corpus import Corpus, InvalidDocument, open_corpus, read_beir_queries, read_qrels
from .documents import AUTO_ID_FIELDS, document_id, id_problem, text_id  # noqa: F401  (AUTO_ID_FIELDS re-exported)
from .errors import IncompleteIndexError, IndexMismatchError, IngestInterrupted
from .filters import PAYLOAD_FIELDS_KEY, PAYLOAD_TYPES_KEY, check_filter_fields
from .metrics import evaluate_run, mrr_at_k, ndcg_at_k, recall_at_k  # noqa: F401  (re-exported)
from .passages import PARENT_KEY, PASSAGE_KEY, collapse_passages, count_truncated, split_passages
from .producer import check_vectors_producer, dataset_index_metadata, producer_info
from .provenance import check_producers, producer_fingerprint
from .results import (  # noqa: F401  (re-exported for callers of the older module layout)
    Explanation,
    IngestError,
    IngestReport,
    QueryResult,
    SearchHit,
    TokenMatch,
    explain_match,
)
from .vectors import dense_rows, to_sparse_vectors
from .vocabulary import Vocabulary, vocab_fingerprint, vocabulary  # noqa: F401  (re-exported)

TEXT_KEY = "text"
SEARCH_MODES = ("sparse", "dense", "hybrid")


# --------------------------------------------------------------------------- the pipeline


@dataclass
class _Prepared:
    """A document turned into the records it becomes (one, or one per passage)."""

    ids: list[str]
    texts: list[str]
    payloads: list[dict[str, Any]]


@dataclass
class _Plan:
    """Where a corpus keeps ids, text and payload, and whether long texts become passages."""

    id_field: str | None
    text_fields: tuple[str, ...]
    payload_types: dict[str, Any]
    passage_tokens: int | None


class Pipeline:
    """Encoder + connector + index: ingest, search, explain, evaluate.

    ``encoder`` has the SparseEncoder API (``encode_document``, ``encode_query``, ``tokenizer``,
    ``max_seq_length``); ``query_encoder`` defaults to it; ``dense_encoder`` is any object whose
    ``encode_document``/``encode_query`` return dense arrays (enables dense and hybrid search).
    """

    def __init__(
        self,
        encoder: Any,
        connector: Connector,
        index: str = "sparsebridge",
        *,
        model_name: str | None = None,
        query_encoder: Any | None = None,
        dense_encoder: Any | None = None,
        dense_model_name: str | None = None,
        batch_size: int = 32,
        max_active_dims: int | None = None,
        sparse_field: str = "sparse",
        dense_field: str = "dense",
        index_options: Mapping[str, Any] | None = None,
        ingest_settings: IngestSettings | None = None,
        search_settings: SearchSettings | None = None,
        show_progress: bool = True,
        cache: EncodeCache | None = None,
        allow_model_change: bool | None = None,
    ) -> None:
        self.encoder = encoder
        self.cache = cache
        self._cache_keys: dict[str, str] = {}
        self._producer: dict[str, Any] | None = None
        self.connector = connector
        self.index = index
        self.query_encoder = query_encoder if query_encoder is not None else encoder
        self.dense_encoder = dense_encoder
        self.dense_model_name = dense_model_name or str(
            getattr(dense_encoder, "model_name_or_path", None) or type(dense_encoder).__name__
        )
        self.batch_size = batch_size
        self.max_active_dims = max_active_dims
        self.sparse_field = sparse_field
        self.dense_field = dense_field
        self.index_options = dict(index_options or {})
        self.ingest_settings = ingest_settings or IngestSettings()
        self.search_settings = search_settings or SearchSettings()
        self.show_progress = show_progress
        # Write into / search an index built by another model (see sparsebridge.provenance).
        if allow_model_change is None:
            allow_model_change = bool(getattr(self.ingest_settings, "allow_model_change", False))
        self.allow_model_change = allow_model_change
        self._producers: dict[str, dict[str, Any]] = {}
        self.model_name = model_name or str(getattr(encoder, "model_name_or_path", None) or type(encoder).__name__)
        self.vocab = Vocabulary.of(encoder, self.model_name)
        if self.query_encoder is encoder:
            self.query_vocab = self.vocab
        else:
            self.query_vocab = Vocabulary.of(self.query_encoder, self.model_name)
        self._dense_size: int | None = None

    # -- construction

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        encoder: Any | None = None,
        connector: Connector | None = None,
        dense_encoder: Any | None = None,
        show_progress: bool = True,
        cache: EncodeCache | None = None,
    ) -> Pipeline:
        """Build everything the config names (model, query side, backend, dense model if hybrid)."""
        # The connector first: it is cheap (clients connect lazily), so a wrong option is reported
        # before seconds go into loading models.
        check_device(config)
        if connector is None:
            connector = connector_from_config(config)
        try:
            connector.check()  # an unreachable backend fails in a second, before any model loads
            if encoder is None:
                encoder = load_sparse_encoder(config.model.name_or_path, config.model.device, config.model.precision)
            query_encoder = load_query_encoder(config.model.query_side, encoder, config)
            if dense_encoder is None and config.search.hybrid:
                dense_encoder = load_dense_encoder(config.search.dense_model, config.model.device)
        except BaseException:
            connector.close()
            raise
        return cls(
            encoder,
            connector,
            config.backend.index,
            model_name=config.model.name_or_path,
            query_encoder=query_encoder,
            dense_encoder=dense_encoder,
            dense_model_name=config.search.dense_model if dense_encoder is not None else None,
            batch_size=config.model.batch_size,
            max_active_dims=config.model.max_active_dims,
            sparse_field=config.backend.sparse_field,
            dense_field=config.backend.dense_field,
            index_options=reveal(config.backend.index_options),
            ingest_settings=config.ingest,
            search_settings=config.search,
            show_progress=show_progress,
            cache=cache,
            allow_model_change=config.ingest.allow_model_change,
        )

    def close(self) -> None:
        if self.connector is not None:  # None: a pipeline that only encodes into a dataset
            self.connector.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- index

    @property
    def metadata(self) -> dict[str, Any]:
        """What an index records about its vectors: model, vocabulary, producer fingerprints, dense model."""
        meta = dict(self.vocab.metadata)
        sides = ("document", "query", "dense") if self.dense_encoder is not None else ("document", "query")
        meta["producer"] = self.producers(sides)
        # The vectors' own producer dict (sparsebridge.producer): what a dataset exported from this
        # index carries, so a round trip keeps it.
        meta["vectors_producer"] = self.producer
        if self.dense_encoder is not None:
            meta["dense_model"] = self.dense_model_name
            meta["dense_field"] = self.dense_field
        return meta

    def producers(self, sides: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The producer fingerprints (``sparsebridge.provenance``) of ``sides``: "document" and
        "query" of the sparse model, "dense" for the dense model's vectors. Computed once."""
        makers = {
            "document": lambda: producer_fingerprint(self.encoder, self.max_active_dims, "document"),
            "query": lambda: producer_fingerprint(self.query_encoder, self.max_active_dims, "query"),
            "dense": lambda: producer_fingerprint(self.dense_encoder, None, "document"),
        }
        for side in sides:
            if side not in self._producers:
                self._producers[side] = makers[side]()
        return {side: self._producers[side] for side in sides}

    def index_spec(self, payload_types: Mapping[str, str | None] | None = None) -> IndexSpec:
        dense_size = None
        if self.dense_encoder is not None:
            if self._dense_size is None:
                self._dense_size = dense_dimension(self.dense_encoder)
            dense_size = self._dense_size
        return IndexSpec(
            name=self.index,
            sparse_field=self.sparse_field,
            dense_field=self.dense_field if dense_size else None,
            dense_size=dense_size,
            payload_fields={k: v for k, v in (payload_types or {}).items() if v},
            metadata={
                **self.metadata,
                PAYLOAD_FIELDS_KEY: sorted(payload_types or {}),
                PAYLOAD_TYPES_KEY: {k: v for k, v in (payload_types or {}).items() if v},
            },
            options=dict(self.index_options),
        )

    def count(self) -> int:
        return self.connector.count()

    def exists(self) -> bool:
        return self.connector.index_metadata() is not None

    # -- ingest
    #
    # One write path, several vector sources: text (read -> prepare -> cache | encode), a vector
    # dataset, or another index (see ``transfer``). Each source yields (records, documents done)
    # chunks; ``write_records`` sends them to the connector, ``encode_dataset`` to a dataset.

    def ingest(
        self,
        documents: Corpus | str | Path | Iterable[Mapping[str, Any]],
        *,
        limit: int | None = None,
        recreate: bool = False,
    ) -> IngestReport:
        """Encode and write documents; returns an :class:`IngestReport` (failures by id).

        ``documents`` is a :class:`~sparsebridge.corpus.Corpus`, a corpus spec (JSONL file, BEIR
        folder, ``stdlib:``) or an iterable of dicts. With a cache (``cache=``), texts encoded
        before by the same producer are served from it.
        """
        corpus = self._corpus(documents, limit)
        plan = self._plan(corpus)
        report = IngestReport(index=self.index)
        start = time.perf_counter()
        if recreate:
            self.connector.drop()
        self.open_index(self.index_spec(plan.payload_types), report)
        progress = _progress(corpus.size, "ingest", "docs", self.show_progress)
        try:
            self.write_records(self.text_vectors(corpus, plan, report, progress), report, progress)
        except KeyboardInterrupt as exc:
            # What was written before Ctrl-C is in the report; a rerun resumes (writes are upserts).
            raise IngestInterrupted(report) from exc
        finally:
            progress.close()
            report.seconds = time.perf_counter() - start
        return report

    def ingest_dataset(self, path: str | Path, *, recreate: bool = False) -> IngestReport:
        """Write a vector dataset (see :mod:`sparsebridge.dataset`) to the backend: no encoder runs.

        The dataset's vocabulary must be the configured model's, and the index's (as for text).
        """
        from .dataset import open_dataset

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
        progress = _progress(data.rows, "ingest", "records", self.show_progress)

        seen: dict[str, int] = {}  # id -> the row that holds it, as text ingest keeps ids

        def chunks() -> Iterator[tuple[list[Record], int]]:
            for records in data.records(self.vocab, batch_rows=self.batch_size * 32):
                kept = []
                for rec in records:
                    report.documents += 1
                    row = report.documents
                    if rec.id in seen:
                        # A later row would silently replace the first in the index (an upsert).
                        report.failed[f"{rec.id} (row {row})"] = (
                            f"duplicate id {rec.id!r}: row {seen[rec.id]} of this dataset has the same id; it was kept"
                        )
                        continue
                    seen[rec.id] = row
                    kept.append(rec)
                report.records += len(kept)
                yield kept, len(records)

        try:
            self.write_records(chunks(), report, progress)
        finally:
            progress.close()
            report.seconds = time.perf_counter() - start
        return report

    def encode_dataset(
        self,
        documents: Corpus | str | Path | Iterable[Mapping[str, Any]],
        output: str | Path,
        *,
        limit: int | None = None,
        part_rows: int | None = None,
        with_text: bool = True,
    ) -> IngestReport:
        """Encode documents into a vector dataset at ``output`` (no backend involved).

        Resumable: ids already in the dataset's complete parts are skipped (``report.skipped``)
        before encoding, so a killed run is simply run again.
        """
        from .dataset import DEFAULT_PART_ROWS, DatasetWriter, dataset_metadata

        corpus = self._corpus(documents, limit)
        plan = self._plan(corpus)
        report = IngestReport(index=str(output))
        start = time.perf_counter()
        dense_size = dense_dimension(self.dense_encoder) if self.dense_encoder is not None else None
        meta = dataset_metadata(
            self.vocab.metadata,
            self.producer,
            dense_model=self.dense_model_name if dense_size else None,
            dense_size=dense_size,
        )
        # What an index built from this dataset records and checks (sparsebridge.provenance).
        meta["index_producer"] = self.producers(("document", "query", "dense") if dense_size else ("document", "query"))
        progress = _progress(corpus.size, "encode", "docs", self.show_progress)
        try:
            with DatasetWriter(output, meta, part_rows=part_rows or DEFAULT_PART_ROWS, with_text=with_text) as out:
                # Chunks no larger than a part: a killed run loses at most one part of work.
                chunks = self.text_vectors(
                    corpus,
                    plan,
                    report,
                    progress,
                    skip=out.done_ids,
                    chunk_records=min(out.part_rows, self.batch_size * 4),
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

    @property
    def producer(self) -> dict[str, Any]:
        """What produces this pipeline's document vectors (see :mod:`sparsebridge.producer`)."""
        if self._producer is None:
            self._producer = producer_info(self.encoder, self.model_name, max_active_dims=self.max_active_dims)
        return self._producer

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

    def _corpus(self, documents: Corpus | str | Path | Iterable[Mapping[str, Any]], limit: int | None) -> Corpus:
        corpus = documents if isinstance(documents, Corpus) else None
        if corpus is None and isinstance(documents, (str, Path)):
            corpus = open_corpus(documents, limit=limit)
        elif corpus is None:
            docs = documents if limit is None else _take(documents, limit)
            size = len(documents) if hasattr(documents, "__len__") else None  # type: ignore[arg-type]
            corpus = Corpus(documents=docs, name="documents", size=min(size, limit) if size and limit else size)
        return corpus

    def _plan(self, corpus: Corpus) -> _Plan:
        settings = self.ingest_settings
        if settings.payload_fields is not None:
            payload_types = dict(settings.payload_fields)
        else:
            payload_types = {name: None for name in corpus.payload_fields}
        passage_tokens = None
        if settings.split_passages:
            passage_tokens = settings.passage_tokens or max(int(self.encoder.max_seq_length) - 2, 8)
        return _Plan(
            id_field=settings.id_field or corpus.id_field,
            text_fields=tuple(settings.text_fields or corpus.text_fields),
            payload_types=payload_types,
            passage_tokens=passage_tokens,
        )

    def text_vectors(
        self,
        corpus: Corpus,
        plan: _Plan,
        report: IngestReport,
        progress: Any,
        *,
        skip: set[str] | None = None,
        chunk_records: int | None = None,
    ) -> Iterator[tuple[list[Record], int]]:
        """The text vector source: read -> prepare -> (cache | encode) -> records, by chunk.

        Documents that fail are recorded in ``report.failed``; documents whose id (or first
        passage id) is in ``skip`` are counted in ``report.skipped`` and not encoded. A chunk holds
        about ``chunk_records`` records (default: four encoding batches).
        """
        chunk_records = chunk_records or self.batch_size * 4
        chunk: list[_Prepared] = []
        in_chunk = 0
        seen: dict[str, int] = {}  # id -> number of the document that holds it in this run
        for n, doc in enumerate(corpus, 1):
            report.documents += 1
            where = corpus.location() or f"#{n}"
            prepared = self._prepare(
                doc, n, plan.id_field, plan.text_fields, plan.payload_types, plan.passage_tokens, report, seen, where
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
                yield self._encode_chunk(chunk, report), len(chunk)
                chunk, in_chunk = [], 0
        if chunk:
            yield self._encode_chunk(chunk, report), len(chunk)

    def write_records(self, chunks: Iterable[tuple[list[Record], int]], report: IngestReport, progress: Any) -> None:
        """The one write path: every vector source's records go to the connector here."""
        for records, n_docs in chunks:
            if records:
                started = time.perf_counter()
                try:
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

    def _prepare(
        self,
        doc: Mapping[str, Any] | InvalidDocument,
        n: int,
        id_field: str | None,
        text_fields: Sequence[str],
        payload_types: Mapping[str, Any],
        passage_tokens: int | None,
        report: IngestReport,
        seen: dict[str, int],
        where: str | None = None,
    ) -> _Prepared | None:
        where = where or f"#{n}"
        if isinstance(doc, InvalidDocument):
            report.failed[doc.ref] = doc.reason
            return None
        if not isinstance(doc, Mapping):
            report.failed[where] = f"document {n} is a {type(doc).__name__}, not a mapping"
            return None
        bad_id = id_problem(doc, id_field)
        if bad_id is not None:
            report.failed[where] = bad_id
            return None
        doc_id = document_id(doc, id_field)
        parts, problem = [], None
        for name in text_fields:
            value = doc.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                problem = f"text field {name!r} is not a string (got {type(value).__name__})"
                break
            if value.strip():
                parts.append(value.strip())
        if problem is None and not parts:
            problem = f"no text: the fields {', '.join(repr(f) for f in text_fields)} are missing or empty"
        if problem is not None:
            report.failed[doc_id or where] = problem
            return None
        text = " ".join(parts)
        doc_id = doc_id or text_id(text)
        if passage_tokens is None and doc_id in seen:
            # The first document with an id is kept; a later one would silently replace it.
            report.failed[f"{doc_id} (document {n})"] = (
                f"duplicate id {doc_id!r}: document {seen[doc_id]} of this corpus has the same id "
                f"(ids compare as strings; without an id field, equal texts get equal ids); it was kept"
            )
            return None
        payload = {k: doc[k] for k in payload_types if k in doc and doc[k] is not None}
        prepared = self._records(doc_id, text, payload, passage_tokens)
        # A passage id ("a#p1") can be another document's own id: each record id is kept by the
        # first document that gives it, and a later one is reported, never silently overwritten.
        kept = []
        for k, rid in enumerate(prepared.ids):
            if rid in seen:
                report.failed[f"{rid} (document {n})"] = (
                    f"duplicate id {rid!r}: document {seen[rid]} of this corpus already gives a record this id "
                    f"(a passage's id is its document's id + '#pN'); it was kept"
                )
            else:
                kept.append(k)
        for k in kept:
            seen[prepared.ids[k]] = n
        if len(kept) == len(prepared.ids):
            return prepared
        if not kept:
            return None
        return _Prepared(*([part[k] for k in kept] for part in (prepared.ids, prepared.texts, prepared.payloads)))

    def _records(self, doc_id: str, text: str, payload: dict[str, Any], passage_tokens: int | None) -> _Prepared:
        """The records of one document: itself, or one per passage when it is too long for the model."""
        if passage_tokens is None:
            return _Prepared([doc_id], [text], [payload])
        passages = split_passages(text, self.encoder.tokenizer, passage_tokens, self.ingest_settings.passage_overlap)
        if len(passages) == 1:
            return _Prepared([doc_id], [text], [payload])
        return _Prepared(
            [f"{doc_id}#p{i}" for i in range(len(passages))],
            passages,
            [{**payload, PARENT_KEY: doc_id, PASSAGE_KEY: i} for i in range(len(passages))],
        )

    def _encode_chunk(self, chunk: list[_Prepared], report: IngestReport) -> list[Record]:
        """Vectors of a chunk of prepared documents, from the cache where it has them; records
        that cannot be encoded go to ``report.failed``."""
        ids = [i for p in chunk for i in p.ids]
        texts = [t for p in chunk for t in p.texts]
        payloads = [pl for p in chunk for pl in p.payloads]
        max_len = getattr(self.encoder, "max_seq_length", None)
        if max_len and not self.ingest_settings.split_passages:
            report.max_seq_length = int(max_len)
            report.truncated += count_truncated(texts, self.encoder.tokenizer, int(max_len))
        started = time.perf_counter()
        sparse, errors = self._cached_sparse(texts, report)
        dense: list[list[float]] | None = None
        if self.dense_encoder is not None:
            try:
                dense = self._cached_dense(texts, report)
            except Exception as exc:  # noqa: BLE001 - reported per record, never dropped
                errors = {i: f"dense encoding failed: {exc}" for i in range(len(texts))}
        report.encode_seconds += time.perf_counter() - started
        records: list[Record] = []
        for k, (rid, text, payload) in enumerate(zip(ids, texts, payloads)):
            if k in errors:
                report.failed[rid] = errors[k]
                continue
            records.append(
                Record(id=rid, text=text, sparse=sparse[k], payload=payload, dense=dense[k] if dense else None)
            )
        report.records += len(ids)
        return records

    def _cached_sparse(self, texts: list[str], report: IngestReport) -> tuple[list[SparseVector], dict[int, str]]:
        if self.cache is None:
            return self._encode_documents(texts)
        key = self._cache_key("sparse")
        before = self.cache.corrupt
        found = self.cache.get(key, texts)
        report.cache_corrupt += self.cache.corrupt - before
        missing = [k for k in range(len(texts)) if k not in found]
        report.cache_hits += len(texts) - len(missing)
        report.cache_misses += len(missing)
        fresh, errors = self._encode_documents([texts[k] for k in missing]) if missing else ([], {})
        self.cache.put(
            key,
            [(texts[k], vec.indices, vec.values) for j, (k, vec) in enumerate(zip(missing, fresh)) if j not in errors],
        )
        out: list[SparseVector | None] = [None] * len(texts)
        for k, vec in zip(missing, fresh):
            out[k] = vec
        high = max((max(ind) for ind, _ in found.values() if ind), default=-1)
        tokens = self.vocab.token_array(high + 1)
        for k, (ind, vals) in found.items():
            out[k] = SparseVector(tuple(ind or ()), tuple(vals), tuple(tokens[ind].tolist()) if ind else ())
        return out, {missing[j]: reason for j, reason in errors.items()}  # type: ignore[return-value]

    def _cached_dense(self, texts: list[str], report: IngestReport) -> list[list[float]]:
        if self.cache is None:
            return dense_rows(self.dense_encoder.encode_document(texts, batch_size=self.batch_size))
        key = self._cache_key("dense")
        found = self.cache.get(key, texts)
        missing = [k for k in range(len(texts)) if k not in found]
        fresh = (
            dense_rows(self.dense_encoder.encode_document([texts[k] for k in missing], batch_size=self.batch_size))
            if missing
            else []
        )
        self.cache.put(key, [(texts[k], None, row) for k, row in zip(missing, fresh)])
        out = {k: vals for k, (_, vals) in found.items()}
        out.update(zip(missing, fresh))
        return [out[k] for k in range(len(texts))]

    def _cache_key(self, side: str) -> str:
        if side not in self._cache_keys:
            assert self.cache is not None
            if side == "sparse":
                info = self.producer
            else:
                info = producer_info(self.dense_encoder, self.dense_model_name, max_active_dims=None)
                info["kind"] = "dense"
            self._cache_keys[side] = self.cache.register(info)
        return self._cache_keys[side]

    def _account(self, result: WriteResult, report: IngestReport) -> None:
        report.written += len(result.written)
        report.failed.update(result.failed)
        report.retries += result.retries
        # What the backend wants the user to know (e.g. weights clipped by SEISMIC), once each.
        report.notes.extend(n for n in dict.fromkeys(result.notes) if n not in report.notes)

    def _encode_documents(self, texts: list[str]) -> tuple[list[SparseVector], dict[int, str]]:
        """Encode a batch; if the batch fails, encode one by one so only the bad texts fail."""
        try:
            return to_sparse_vectors(self._encode(self.encoder.encode_document, texts), self.vocab), {}
        except Exception as exc:  # noqa: BLE001 - isolate the culprit below
            if len(texts) == 1:  # the culprit is known: report it like any other, never abort the ingest
                return [SparseVector((), (), ())], {0: f"encoding failed: {type(exc).__name__}: {exc}"}
        vectors: list[SparseVector] = []
        errors: dict[int, str] = {}
        for k, text in enumerate(texts):
            try:
                vectors.extend(to_sparse_vectors(self._encode(self.encoder.encode_document, [text]), self.vocab))
            except Exception as exc:  # noqa: BLE001
                errors[k] = f"encoding failed: {type(exc).__name__}: {exc}"
                vectors.append(SparseVector((), (), ()))
        return vectors, errors

    def _encode(self, method: Any, texts: list[str]) -> torch.Tensor:
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size,
            "show_progress_bar": False,
            "convert_to_sparse_tensor": True,
        }
        if self.max_active_dims is not None:
            kwargs["max_active_dims"] = self.max_active_dims
        return method(texts, **kwargs)

    # -- search

    def encode_queries(self, queries: Sequence[str]) -> list[SparseVector]:
        return to_sparse_vectors(self._encode(self.query_encoder.encode_query, list(queries)), self.query_vocab)

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        return to_sparse_vectors(self._encode(self.encoder.encode_document, list(texts)), self.vocab)

    def search(
        self,
        queries: str | Sequence[str],
        *,
        top_k: int | None = None,
        filter: Filter | None = None,
        explain: bool = False,
        mode: str | None = None,
        sparse_vectors: Sequence[SparseVector] | None = None,
    ) -> list[QueryResult]:
        """Search many queries in one backend request; one :class:`QueryResult` per query.

        ``mode`` is ``"sparse"``, ``"dense"`` or ``"hybrid"`` (default: hybrid when a dense encoder
        is configured, else sparse). ``explain`` adds the shared tokens of query and hit.
        ``sparse_vectors`` are the queries' sparse vectors when the caller encoded them already
        (``encode_queries``), so it knows exactly what was sent.
        """
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        if not queries:
            return []
        mode = mode or ("hybrid" if self.dense_encoder is not None else "sparse")
        if mode not in SEARCH_MODES:
            raise ValueError(f"search mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        if mode != "sparse" and self.dense_encoder is None:
            raise ConfigError(f"search mode {mode!r} needs a dense model ([search] hybrid = true)")

        stored = self.connector.index_metadata()
        if stored is None:
            raise ConnectorError(f"index {self.index!r} does not exist; run `sparsebridge ingest` first")
        check_vocabulary(stored, self.query_vocab.metadata, self.index)
        check_filter_fields(filter, stored, self.index, also=self.ingest_settings.payload_fields or ())
        notes: list[str] = []
        if mode != "sparse" and stored.get("vocab_fingerprint") and not stored.get("dense_model"):
            # Built by sparsebridge without a dense model: there is nothing to fuse with.
            what = f"index {self.index!r} holds no dense vectors (it was ingested without [search] hybrid = true)"
            if mode == "dense":
                raise IndexMismatchError(f"{what}; search it with --mode sparse, or re-ingest it with hybrid = true")
            notes.append(f"{what}: searched with its sparse vectors only; re-ingest with hybrid = true for hybrid")
            mode = "sparse"
        sides = ("query",) if mode == "sparse" else ("query", "dense")
        notes.extend(
            check_producers(
                stored, self.producers(sides), self.index, sides=sides, allow_change=self.allow_model_change
            )
        )

        if sparse_vectors is not None:
            if len(sparse_vectors) != len(queries):
                raise ValueError(f"{len(sparse_vectors)} sparse vectors for {len(queries)} queries")
            sparse: Sequence[SparseVector | None] = list(sparse_vectors)
        elif mode != "dense" or explain:
            sparse = self.encode_queries(queries)
        else:
            sparse = [None] * len(queries)
        dense: list[list[float]] | list[None] = [None] * len(queries)
        if mode != "sparse":
            encode = getattr(self.dense_encoder, "encode_query", None) or self.dense_encoder.encode_document
            dense = dense_rows(encode(queries))
        batch = [
            Query(sparse=s if mode != "dense" else None, dense=d if mode != "sparse" else None, filter=filter)
            for s, d in zip(sparse, dense)
        ]
        settings = self.search_settings
        options = SearchOptions(
            top_k=top_k or settings.top_k,
            fusion=settings.fusion,  # type: ignore[arg-type]
            rrf_k=settings.rrf_k,
            weights=settings.weights,
            prefetch_limit=settings.prefetch_limit,
        )
        raw = self.connector.search(batch, options)
        results = [
            QueryResult(
                q, [SearchHit(h.id, float(h.score), dict(h.payload or {})) for h in r.hits], notes + list(r.notes)
            )
            for q, r in zip(queries, raw)
        ]
        if explain:
            self._explain(results, sparse)
        return results

    def _explain(self, results: list[QueryResult], query_vectors: Sequence[SparseVector | None]) -> None:
        hits = [h for r in results for h in r.hits]
        texts = self._hit_texts(hits)
        unique = sorted({t for t in texts.values()})
        vectors = dict(zip(unique, self.encode_documents(unique))) if unique else {}
        for result, qvec in zip(results, query_vectors):
            for hit in result.hits:
                text = texts.get(hit.id)
                if text is None or qvec is None:
                    hit.explanation = Explanation([], note="the hit's text is not stored; cannot explain")
                else:
                    hit.explanation = explain_match(qvec, vectors[text])

    def _hit_texts(self, hits: Sequence[SearchHit]) -> dict[str, str]:
        texts = {h.id: h.payload[TEXT_KEY] for h in hits if isinstance(h.payload.get(TEXT_KEY), str)}
        missing = [h.id for h in hits if h.id not in texts]
        if missing:
            try:
                stored = self.connector.get(sorted(set(missing)))
            except NotImplementedError:
                stored = {}
            for doc_id, payload in stored.items():
                if isinstance(payload.get(TEXT_KEY), str):
                    texts[doc_id] = payload[TEXT_KEY]
        return texts

    # -- evaluation

    def evaluate(
        self,
        beir_dir: str | Path,
        *,
        split: str = "test",
        ingest_if_missing: bool = True,
        top_k: int = 100,
        exact_recall: bool = False,
        exact_k: int = 10,
    ) -> dict[str, Any]:
        """nDCG@10, MRR@10 and Recall@100 of this backend on a BEIR dataset's qrels.

        With ``exact_recall``, also what an approximate index costs: the mean recall of each query's
        exact top ``exact_k`` records in the engine's sparse top ``exact_k`` (see
        :mod:`sparsebridge.exact_recall`), under ``"exact_recall"`` by side (``"sparse"``).

        The index is first compared with the corpus (see :meth:`coverage`): documents it lacks
        (none of it exists yet, or an ingest was interrupted) are ingested first, since ingest is an
        idempotent upsert, or, with ``ingest_if_missing=False``, :class:`IncompleteIndexError` is
        raised: a score over part of a corpus means nothing. Passage hits count for their parent
        document.
        """
        beir_dir = Path(beir_dir)
        qrels = read_qrels(beir_dir, split)
        queries = read_beir_queries(beir_dir)
        missing = [q for q in qrels if q not in queries]
        if missing:
            raise ConfigError(f"{beir_dir}: {len(missing)} qrels queries are not in queries.jsonl (e.g. {missing[0]})")
        out: dict[str, Any] = {"dataset": str(beir_dir), "split": split, "index": self.index}
        coverage, absent = self.coverage(beir_dir)
        out["coverage"] = coverage
        if coverage["extra"]:  # checked before anything is ingested
            raise IndexMismatchError(self._extra_message(coverage, beir_dir))
        if coverage["missing"]:
            if not ingest_if_missing:
                example = ", ".join(repr(d) for d in coverage["missing_ids"][:3])
                raise IncompleteIndexError(
                    f"index {self.index!r} holds {coverage['indexed']} of the {coverage['documents']} documents "
                    f"of {beir_dir} ({coverage['missing']} missing{', e.g. ' + example if example else ''}); a "
                    f"score over part of the corpus means nothing: run eval without --no-ingest to ingest the "
                    f"missing ones (an upsert: nothing is duplicated), or `sparsebridge ingest {beir_dir}` first"
                )
            out["ingest"] = self.ingest(absent).to_dict()
        qids = [q for q in queries if q in qrels]
        texts = [queries[q] for q in qids]
        per_passage = self.ingest_settings.split_passages
        vectors = self.encode_queries(texts) if exact_recall and texts else None
        results = self.search(texts, top_k=top_k * (3 if per_passage else 1), sparse_vectors=vectors)
        run = {qid: collapse_passages(r.hits)[:top_k] for qid, r in zip(qids, results)}
        out.update(evaluate_run(run, qrels))
        outside = judged_outside_corpus(open_corpus(beir_dir), self.ingest_settings.id_field, qrels)
        if outside:
            # No run can retrieve them, so they lower recall and nDCG; trec_eval users expect a word.
            pairs = sum(1 for rel in qrels.values() for d, s in rel.items() if s > 0 and d in outside)
            out["qrels_outside_corpus"] = {"documents": len(outside), "judgements": pairs}
            out.setdefault("notes", []).append(
                f"{pairs} relevant judgements of qrels/{split}.tsv name {len(outside)} documents that are not in "
                f"the corpus (e.g. {sorted(outside)[0]!r}); no run can retrieve them, so recall and nDCG are "
                f"lower than over the corpus alone"
            )
        if exact_recall:
            figures = self.exact_recall(texts, vectors or [], k=exact_k)
            figures["per_query"] = dict(zip(qids, figures["per_query"]))
            out["exact_recall"] = {"sparse": figures}
        return out

    def exact_recall(self, texts: Sequence[str], vectors: Sequence[SparseVector], k: int = 10) -> dict[str, Any]:
        """The recall of the exact sparse top ``k`` in the engine's sparse top ``k`` for queries
        ``texts`` encoded as ``vectors``: one ``--mode sparse --top-k k`` search, as a user runs it
        (records, passages not collapsed), against the brute-force dot product with every record's
        vector as the index gives it back (``Connector.export``; see :mod:`sparsebridge.exact_recall`).
        """
        from .exact_recall import exact_recall

        results = self.search(list(texts), top_k=k, mode="sparse", sparse_vectors=vectors) if texts else []
        rankings = [[h.id for h in r.hits] for r in results]
        try:
            documents = self.connector.export(list(self.vocab.tokens))
            figures = exact_recall(vectors, rankings, documents, k=k, rtol=type(self.connector).score_rtol)
        except NotImplementedError as exc:
            raise ConfigError(
                f"--exact-recall reads the index's vectors back, and the {type(self.connector).__name__} "
                f"cannot export them ({exc})"
            ) from exc
        notes = sorted({n for r in results for n in r.notes})
        if notes:
            figures["notes"] = notes
        return figures

    def coverage(self, corpus: str | Path, chunk: int = 1000) -> tuple[dict[str, Any], Corpus]:
        """How much of ``corpus`` the index holds, and a corpus of the documents it lacks.

        Only documents an ingest would write count (one without text is not expected). Ids are
        looked up with ``connector.get`` in chunks of ``chunk``; with a connector without ``get``,
        ``count()`` decides (fewer records than documents: the whole corpus is given back, which is
        safe to ingest again). The figures: ``documents``, ``indexed``, ``missing``, ``missing_ids``
        (the first 20), ``method`` ("ids", "count", or "empty" when the index holds nothing), and the
        other way round ``extra``, the records that are neither a document of the corpus nor one of
        its passages, with ``extra_ids`` (the first 20; ``extra`` is None when the connector can tell
        neither ids nor passages apart).
        """
        source = open_corpus(corpus)
        settings = self.ingest_settings
        id_field = settings.id_field or source.id_field
        text_fields = tuple(settings.text_fields or source.text_fields)
        method = "ids" if self.exists() and self.count() > 0 else "empty"
        scratch, seen = IngestReport(), {}
        expected = 0
        absent: list[tuple[str, Any]] = []  # (id, document) of the missing ones, when looked up by id
        corpus_ids: set[str] = set()
        batch: list[tuple[str, Any]] = []

        def lookup() -> None:
            nonlocal method
            if method != "ids":
                return
            ids = [i for i, _ in batch]
            # Passages whatever the config says now: the index may have been ingested with --split-passages.
            asked = ids + [f"{i}#p0" for i in ids]
            try:
                found = self.connector.get(asked)
            except NotImplementedError:
                method = "count"
                absent.clear()
                return
            absent.extend((i, doc) for i, doc in batch if i not in found and f"{i}#p0" not in found)

        for n, doc in enumerate(source, 1):
            prepared = self._prepare(doc, n, id_field, text_fields, {}, None, scratch, seen)
            if prepared is None:
                continue  # an ingest would report it, not write it
            expected += 1
            corpus_ids.add(prepared.ids[0])
            batch.append((prepared.ids[0], doc))
            if len(batch) >= chunk:
                lookup()
                batch = []
        if batch:
            lookup()

        whole, indexed = method == "empty", 0
        if method == "count":
            held = self.count()
            # Passages make more records than documents: without ids only an empty index is sure.
            whole = held == 0 if settings.split_passages else held < expected
            indexed = min(held, expected)
        if whole:
            missing, missing_ids, rest = expected - indexed, [], open_corpus(corpus)
        else:
            missing, missing_ids = len(absent), [i for i, _ in absent[:20]]
            rest = Corpus(
                documents=[doc for _, doc in absent],
                name=source.name,
                id_field=source.id_field,
                text_fields=source.text_fields,
                payload_fields=source.payload_fields,
                size=len(absent),
            )
        figures = {
            "documents": expected,
            "indexed": expected - missing if method != "count" else indexed,
            "missing": missing,
            "missing_ids": missing_ids,
            "method": method,
        }
        figures["extra"], figures["extra_ids"] = self._extra_records(corpus_ids, figures["indexed"], method)
        return figures, rest

    def _extra_message(self, coverage: Mapping[str, Any], corpus: Path) -> str:
        # Records from elsewhere compete with the corpus for every rank: the scores would be lower
        # than the corpus's own, silently.
        shown = ", ".join(repr(i) for i in coverage["extra_ids"][:3])
        return (
            f"index {self.index!r} holds {coverage['extra']} records that are not documents of {corpus}"
            f"{f' (e.g. {shown})' if shown else ''} besides {coverage['indexed']} of its {coverage['documents']}; "
            f"they would take ranks from the corpus, so the scores would mean nothing: evaluate in a fresh "
            f"index (--index NAME), or drop this one first (--recreate)"
        )

    def _extra_records(self, corpus_ids: set[str], indexed: int, method: str) -> tuple[int | None, list[str]]:
        """How many records of the index belong to no document of ``corpus_ids`` (neither its own
        id nor a passage of it), and the first 20 of them."""
        if method == "empty":
            return 0, []
        held = self.count()
        if method == "ids" and held <= indexed:
            return 0, []  # each document present is at least one record: there is no room for others
        # Reading the records back needs this model's vocabulary: refuse another one here, as search would.
        check_vocabulary(self.connector.index_metadata(), self.vocab.metadata, self.index)
        try:
            extra, ids = 0, []
            for batch in self.connector.export(list(self.vocab.tokens)):
                for rec in batch:
                    parent = (rec.payload or {}).get(PARENT_KEY)
                    if rec.id in corpus_ids or (isinstance(parent, str) and parent in corpus_ids):
                        continue
                    extra += 1
                    if len(ids) < 20:
                        ids.append(rec.id)
            return extra, ids
        except NotImplementedError:
            # Without ids a count is all there is; passages make more records than documents.
            if self.ingest_settings.split_passages:
                return None, []
            return max(held - len(corpus_ids), 0), []


def judged_outside_corpus(corpus: Corpus, id_field: str | None, qrels: Mapping[str, Mapping[str, int]]) -> set[str]:
    """Ids that qrels judge relevant but that no document of ``corpus`` has."""
    judged = {d for rel in qrels.values() for d, score in rel.items() if score > 0}
    for doc in corpus:
        if judged and isinstance(doc, Mapping):
            judged.discard(document_id(doc, id_field or corpus.id_field) or "")
    return judged


def _take(items: Iterable[Any], n: int) -> Iterator[Any]:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item


def _progress(total: int | None, desc: str, unit: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)
