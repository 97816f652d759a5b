"""Ingest documents into a backend, search it, explain the hits, and evaluate the ranking.

The way of a document: ``corpus`` (read) -> ``documents``/``passages`` (ids, records to make) ->
``cache`` | the encoder -> ``vectors`` (``SparseVector`` rows) -> ``dataset`` or the connector. A
vector dataset (``ingest_dataset``) and another index (``transfer.migrate``) are vector sources too:
every source feeds the one write path, :meth:`Pipeline.write_records`. ``components`` builds what a config
names, ``results`` holds what comes back, ``metrics`` scores a run.

The pipeline only speaks the connector contract (``sparsebridge.connector``), so every backend
works the same way::

    from sparsebridge.config import load_config
    from sparsebridge.index.pipeline import Pipeline

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

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..config import Config, IngestSettings, SearchSettings, reveal
from ..config.builder import (
    build_encoders,
    connector_from_config,
    dense_dimension,
    has_inference_free_queries,  # noqa: F401  (re-exported)
    load_dense_encoder,  # noqa: F401  (re-exported)
    load_query_encoder,  # noqa: F401  (re-exported)
    load_sparse_encoder,  # noqa: F401  (re-exported)
)
from ..connector import (
    Connector,
    IndexSpec,
)
from ..connector.filters import PAYLOAD_FIELDS_KEY, PAYLOAD_TYPES_KEY
from ..errors import IngestInterrupted
from ..vectors.cache import EncodeCache
from ..vectors.convert import to_sparse_vectors  # noqa: F401  (re-exported)
from ..vectors.vocabulary import Vocabulary, vocab_fingerprint, vocabulary  # noqa: F401  (re-exported)
from .corpus import Corpus
from .documents import AUTO_ID_FIELDS, document_id, id_problem, text_id  # noqa: F401  (AUTO_ID_FIELDS re-exported)
from .encoding import Encoding
from .evaluate import Evaluating
from .metrics import evaluate_run, mrr_at_k, ndcg_at_k, recall_at_k  # noqa: F401  (re-exported)
from .passages import PARENT_KEY, collapse_passages, split_passages  # noqa: F401  (re-exported)
from .preparation import open_documents, plan_corpus
from .results import (  # noqa: F401  (re-exported for callers of the older module layout)
    Explanation,
    IngestError,
    IngestReport,
    QueryResult,
    SearchHit,
    TokenMatch,
    explain_match,
)
from .search import Searching
from .text_vectors import encode_to_dataset, text_vectors
from .writer import IndexWriter, progress_bar

# --------------------------------------------------------------------------- the pipeline


class Pipeline(IndexWriter, Encoding, Searching, Evaluating):
    """Encoder + connector + index: ingest, search, explain, evaluate.

    Each job lives in a module of its own, and the Pipeline puts them together: the write side
    (:class:`~sparsebridge.index.writer.IndexWriter`), the encoders (:class:`~sparsebridge.index.
    encoding.Encoding`), preparation and the text vector source (``preparation``, ``text_vectors``),
    search (``search``) and evaluation (``evaluate``).

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
        Encoding.__init__(
            self,
            encoder,
            model_name=model_name,
            query_encoder=query_encoder,
            dense_encoder=dense_encoder,
            dense_model_name=dense_model_name,
            batch_size=batch_size,
            max_active_dims=max_active_dims,
            cache=cache,
        )
        IndexWriter.__init__(
            self,
            connector,
            self.vocab,
            index,
            batch_size=batch_size,
            sparse_field=sparse_field,
            dense_field=dense_field,
            index_options=index_options,
            ingest_settings=ingest_settings,
            show_progress=show_progress,
            allow_model_change=allow_model_change,
        )
        self.search_settings = search_settings or SearchSettings()
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
        queries_only: bool = False,
    ) -> Pipeline:
        """Build everything the config names (model, query side, backend, dense model if hybrid).

        ``queries_only``: the pipeline will only encode queries (a search without explanations); an
        inference-free model's query side is then read without loading the model (see
        :func:`~sparsebridge.config.builder.build_encoders`)."""
        # The connector first: it is cheap (clients connect lazily), so a wrong option is reported
        # before seconds go into loading models (the builder checks [model] device first).
        if connector is None:
            connector = connector_from_config(config)
        try:
            connector.check()  # an unreachable backend fails in a second, before any model loads
            encoders = build_encoders(config, encoder=encoder, dense_encoder=dense_encoder, queries_only=queries_only)
        except BaseException:
            connector.close()
            raise
        return cls(
            encoders.encoder,
            connector,
            config.backend.index,
            **encoders.encoding_options(),
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
        """Close the connector and the encode cache."""
        super().close()
        if self.cache is not None:
            self.cache.close()

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

    def index_spec(self, payload_types: Mapping[str, str | None] | None = None) -> IndexSpec:
        """The index this pipeline writes: its fields, dense size, payload fields and metadata (producers)."""
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
        corpus = open_documents(documents, limit)
        plan = plan_corpus(self.ingest_settings, corpus, getattr(self.encoder, "max_seq_length", None))
        report = IngestReport(index=self.index)
        start = time.perf_counter()
        if recreate:
            self.connector.drop()
        self.open_index(self.index_spec(plan.payload_types), report)
        progress = progress_bar(corpus.size, "ingest", "docs", self.show_progress)
        try:
            vectors = text_vectors(self, corpus, plan, report, progress, settings=self.ingest_settings)
            self.write_records(vectors, report, progress)
        except KeyboardInterrupt as exc:
            # What was written before Ctrl-C is in the report; a rerun resumes (writes are upserts).
            raise IngestInterrupted(report) from exc
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
        """Encode documents into a vector dataset at ``output`` (no backend involved; see
        :func:`~sparsebridge.index.text_vectors.encode_to_dataset`). Resumable: ids already in the
        dataset's complete parts are skipped (``report.skipped``), so a killed run is run again."""
        return encode_to_dataset(
            self,
            documents,
            output,
            limit=limit,
            part_rows=part_rows,
            with_text=with_text,
            settings=self.ingest_settings,
            show_progress=self.show_progress,
        )
