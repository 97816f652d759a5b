"""Text -> vectors with the configured encoders: document and query vectors, the dense vectors
of hybrid search, the encode cache in front of them, and what produced them (the fingerprints an
index records). No backend: ``encode --output`` and the Ray workers encode with an ``Encoding``
alone; the :class:`~sparsebridge.index.pipeline.Pipeline` is one as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import Config
from ..config.builder import build_encoders
from ..connector import SparseVector
from ..vectors.cache import EncodeCache
from ..vectors.convert import dense_rows, to_sparse_vectors
from ..vectors.producer import producer_info
from ..vectors.provenance import producer_fingerprint
from ..vectors.vocabulary import Vocabulary
from .results import IngestReport


class Encoding:
    """The encoders and their vocabularies, with an optional encode cache.

    ``encoder`` has the SparseEncoder API (``encode_document``, ``encode_query``, ``tokenizer``,
    ``max_seq_length``); ``query_encoder`` defaults to it; ``dense_encoder`` is any object whose
    ``encode_document``/``encode_query`` return dense arrays.
    """

    def __init__(
        self,
        encoder: Any,
        *,
        model_name: str | None = None,
        query_encoder: Any | None = None,
        dense_encoder: Any | None = None,
        dense_model_name: str | None = None,
        batch_size: int = 32,
        max_active_dims: int | None = None,
        cache: EncodeCache | None = None,
    ) -> None:
        self.encoder = encoder
        self.model_name = model_name or str(getattr(encoder, "model_name_or_path", None) or type(encoder).__name__)
        self.vocab = Vocabulary.of(encoder, self.model_name)
        self.query_encoder = query_encoder if query_encoder is not None else encoder
        if self.query_encoder is encoder:
            self.query_vocab = self.vocab
        else:
            self.query_vocab = Vocabulary.of(self.query_encoder, self.model_name)
        self.dense_encoder = dense_encoder
        self.dense_model_name = dense_model_name or str(
            getattr(dense_encoder, "model_name_or_path", None) or type(dense_encoder).__name__
        )
        self.batch_size = batch_size
        self.max_active_dims = max_active_dims
        self.cache = cache
        self._cache_keys: dict[str, str] = {}
        self._producer: dict[str, Any] | None = None
        self._producers: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, config: Config, encoder: Any | None = None, cache: EncodeCache | None = None) -> Encoding:
        """The encoders the config names, built by :func:`~sparsebridge.config.builder.build_encoders`
        (``encoder`` if given, and the dense one when ``[search] hybrid`` is on)."""
        encoders = build_encoders(config, encoder=encoder)
        return cls(encoders.encoder, **encoders.encoding_options(), cache=cache)

    @property
    def producer(self) -> dict[str, Any]:
        """What produces this pipeline's document vectors (see :mod:`sparsebridge.producer`)."""
        if self._producer is None:
            self._producer = producer_info(self.encoder, self.model_name, max_active_dims=self.max_active_dims)
        return self._producer

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

    def cached_sparse(self, texts: list[str], report: IngestReport) -> tuple[list[SparseVector], dict[int, str]]:
        """Document vectors of ``texts`` (and errors by position), from the cache where it has
        them; what is encoded goes into it. Hits, misses and corrupt entries are counted in ``report``."""
        if self.cache is None:
            return self.encode_documents_checked(texts)
        key = self._cache_key("sparse")
        before = self.cache.corrupt
        found = self.cache.get(key, texts)
        report.cache_corrupt += self.cache.corrupt - before
        missing = [k for k in range(len(texts)) if k not in found]
        report.cache_hits += len(texts) - len(missing)
        report.cache_misses += len(missing)
        fresh, errors = self.encode_documents_checked([texts[k] for k in missing]) if missing else ([], {})
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

    def cached_dense(self, texts: list[str], report: IngestReport) -> list[list[float]]:
        """Dense document vectors of ``texts``, from the cache where it has them."""
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

    def encode_documents_checked(self, texts: list[str]) -> tuple[list[SparseVector], dict[int, str]]:
        """Encode a batch of documents into vectors and the errors by position; if the batch fails,
        encode one by one so only the bad texts fail (each gets an empty vector and its reason)."""
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

    def _encode(self, method: Any, texts: list[str]) -> Any:
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size,
            "show_progress_bar": False,
            "convert_to_sparse_tensor": True,
        }
        if self.max_active_dims is not None:
            kwargs["max_active_dims"] = self.max_active_dims
        return method(texts, **kwargs)

    def encode_queries(self, queries: Sequence[str]) -> list[SparseVector]:
        """Query vectors (``encode_query`` of the query encoder)."""
        return to_sparse_vectors(self._encode(self.query_encoder.encode_query, list(queries)), self.query_vocab)

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        """Document vectors (``encode_document``); an encoding error is raised."""
        return to_sparse_vectors(self._encode(self.encoder.encode_document, list(texts)), self.vocab)
