"""Searching an index: queries encoded (sparse, dense or both), checked against what built the
index, sent in one batch, and hits explained by the tokens query and document share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import ConfigError
from ..connector import ConnectorError, Filter, Query, SearchOptions, SparseVector, check_vocabulary
from ..connector.filters import check_filter_fields
from ..errors import IndexMismatchError
from ..vectors.convert import dense_rows
from ..vectors.provenance import check_producers
from .results import Explanation, QueryResult, SearchHit, explain_match

TEXT_KEY = "text"
SEARCH_MODES = ("sparse", "dense", "hybrid")


def search_options(settings: Any, top_k: int | None) -> SearchOptions:
    """The connector's :class:`SearchOptions` from the config's ``[search]`` settings (``top_k``
    given per call wins): one reading, whether the query is encoded here or by the engine."""
    return SearchOptions(
        top_k=top_k or settings.top_k,
        fusion=settings.fusion,
        rrf_k=settings.rrf_k,
        weights=settings.weights,
        prefetch_limit=settings.prefetch_limit,
    )


class Searching:
    """The search job of a :class:`~sparsebridge.index.pipeline.Pipeline` (its connector, index,
    encoders and settings)."""

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
        options = search_options(self.search_settings, top_k)
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
