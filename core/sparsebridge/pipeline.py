"""Ingest documents into a backend, search it, explain the hits, and evaluate the ranking.

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

import hashlib
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, ConfigError, IngestSettings, SearchSettings, reveal
from .connector import (
    Connector,
    ConnectorError,
    Filter,
    Hit,
    IndexSpec,
    Query,
    Record,
    SearchOptions,
    SparseVector,
    WriteResult,
    check_vocabulary,
)
from .corpus import Corpus, InvalidDocument, open_corpus, read_beir_queries, read_qrels
from .defaults import resolve_model

TEXT_KEY = "text"
PARENT_KEY = "parent_id"
PASSAGE_KEY = "passage"
AUTO_ID_FIELDS = ("_id", "id")
SEARCH_MODES = ("sparse", "dense", "hybrid")


class IngestError(ConnectorError):
    """The backend failed as a whole during an ingest; ``report`` holds what was done before."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------- vectors


def vocabulary(tokenizer: Any) -> list[str]:
    """The tokenizer's tokens in id order (``convert_ids_to_tokens`` over every id)."""
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    return [t if t is not None else f"[{i}]" for i, t in enumerate(tokens)]


def vocab_fingerprint(tokenizer: Any) -> str:
    """sha256 over the id-ordered vocabulary: equal exactly when two tokenizers map ids alike."""
    return _fingerprint(vocabulary(tokenizer))


def _fingerprint(vocab: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, token in enumerate(vocab):
        h.update(f"{i}\t{token}\n".encode())
    return h.hexdigest()


class Vocabulary:
    """Id -> token lookup as a numpy array, plus the metadata stored with an index."""

    def __init__(self, tokenizer: Any, model_name: str) -> None:
        tokens = vocabulary(tokenizer)
        self.tokens = np.array(tokens, dtype=object)
        self.metadata = {
            "model": model_name,
            "vocab_size": len(tokens),
            "vocab_fingerprint": _fingerprint(tokens),
        }

    def token_array(self, size: int) -> np.ndarray:
        # Models may pad their output past the tokenizer (multiples of 8); name those ids by number.
        if size > len(self.tokens):
            extra = np.array([f"[{i}]" for i in range(len(self.tokens), size)], dtype=object)
            self.tokens = np.concatenate([self.tokens, extra])
        return self.tokens


def to_sparse_vectors(embeddings: torch.Tensor, vocab: Vocabulary) -> list[SparseVector]:
    """Rows of a (sparse COO or dense) ``[n, vocab]`` tensor as :class:`SparseVector`.

    Works on the coalesced COO arrays at once: one filter, one bincount and one id -> token
    lookup for the whole batch; Python only slices the results per row.
    """
    if embeddings.dim() == 1:
        embeddings = embeddings.unsqueeze(0)
    n_rows = embeddings.shape[0]
    emb = embeddings.detach().to("cpu")
    if emb.layout == torch.sparse_coo:
        emb = emb.coalesce()
        idx, values = emb.indices(), emb.values()
    elif emb.layout == torch.strided:
        idx = emb.nonzero().t()
        values = emb[idx[0], idx[1]]
    else:
        emb = emb.to_sparse_coo().coalesce()
        idx, values = emb.indices(), emb.values()
    values = values.float()
    keep = (values > 0) & torch.isfinite(values)
    rows, cols, values = idx[0][keep], idx[1][keep], values[keep]
    counts = torch.bincount(rows, minlength=n_rows).tolist()
    cols_np = cols.numpy()
    tokens = vocab.token_array(int(embeddings.shape[1]))[cols_np].tolist()
    cols_list, values_list = cols_np.tolist(), values.tolist()
    out, start = [], 0
    for count in counts:
        end = start + count
        out.append(SparseVector(tuple(cols_list[start:end]), tuple(values_list[start:end]), tuple(tokens[start:end])))
        start = end
    return out


def text_id(text: str) -> str:
    """The id of a document without one: the first 32 hex digits of sha256 of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# --------------------------------------------------------------------------- passages


def split_passages(text: str, tokenizer: Any, max_tokens: int, overlap: int = 0) -> list[str]:
    """Split ``text`` into passages of at most ``max_tokens`` tokens (``overlap`` shared between
    neighbours), cutting between words; a text that fits is returned whole."""
    if overlap >= max_tokens:
        raise ValueError(f"passage overlap ({overlap}) must be smaller than passage length ({max_tokens})")
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
            "offset_mapping"
        ]
    except (NotImplementedError, TypeError, ValueError, KeyError):  # slow tokenizers have no offsets
        return _split_by_tokens(text, tokenizer, max_tokens, overlap)
    n = len(offsets)
    if n <= max_tokens:
        return [text]

    def word_start(pos: int, low: int) -> int:
        # Move a cut back to a token that follows whitespace, so no word (nor "word," / "##piece")
        # is split; a single "word" longer than the window is cut where it falls.
        if pos >= n:
            return pos
        back = pos
        while back > low and offsets[back][0] == offsets[back - 1][1]:
            back -= 1
        return back if back > low else pos

    passages, start = [], 0
    while start < n:
        end = word_start(min(start + max_tokens, n), start)
        passages.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end >= n:
            break
        nxt = word_start(max(end - overlap, start + 1), start)
        start = nxt if nxt > start else end
    return passages


def _split_by_tokens(text: str, tokenizer: Any, max_tokens: int, overlap: int) -> list[str]:
    tokens = tokenizer.tokenize(text)
    if len(tokens) <= max_tokens:
        return [text]
    step = max_tokens - overlap
    return [
        tokenizer.convert_tokens_to_string(tokens[i : i + max_tokens])
        for i in range(0, max(len(tokens) - overlap, 1), step)
    ]


# --------------------------------------------------------------------------- reports and results


@dataclass
class IngestReport:
    """What an ingest did. ``failed`` maps each failed document/record id to the reason."""

    index: str = ""
    documents: int = 0
    records: int = 0
    written: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    seconds: float = 0.0
    # Where the time went: encoding (sparse and dense models) and the connector's writes; the rest
    # of ``seconds`` is reading, preparing and converting documents.
    encode_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def docs_per_second(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["docs_per_second"] = round(self.docs_per_second, 2)
        for key in ("seconds", "encode_seconds", "write_seconds"):
            out[key] = round(out[key], 3)
        return out


@dataclass
class TokenMatch:
    token: str
    query_weight: float
    document_weight: float

    @property
    def product(self) -> float:
        return self.query_weight * self.document_weight

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "query_weight": self.query_weight,
            "document_weight": self.document_weight,
            "product": self.product,
        }


@dataclass
class Explanation:
    """Tokens a query and a hit share, strongest contribution first; ``score`` is their dot product."""

    matches: list[TokenMatch]
    note: str | None = None

    @property
    def score(self) -> float:
        return float(sum(m.product for m in self.matches))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"score": self.score, "matches": [m.to_dict() for m in self.matches]}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class SearchHit:
    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    explanation: Explanation | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "score": self.score, "payload": self.payload}
        if self.explanation is not None:
            out["explanation"] = self.explanation.to_dict()
        return out


@dataclass
class QueryResult:
    query: str
    hits: list[SearchHit]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "hits": [h.to_dict() for h in self.hits], "notes": self.notes}


def explain_match(query: SparseVector, document: SparseVector) -> Explanation:
    """The shared tokens of two sparse vectors with both weights, largest product first."""
    doc = document.as_index_dict()
    matches = [
        TokenMatch(token, qw, doc[i]) for i, token, qw in zip(query.indices, query.tokens, query.values) if i in doc
    ]
    matches.sort(key=lambda m: (-m.product, m.token))
    return Explanation(matches)


# --------------------------------------------------------------------------- evaluation metrics


def ndcg_at_k(ranking: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (as trec_eval and BEIR compute it); 0 if nothing is relevant."""
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(rel / math.log2(i + 2) for i, rel in enumerate(ideal))
    if idcg == 0:
        return 0.0
    dcg = sum(max(relevant.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranking[:k]))
    return dcg / idcg


def mrr_at_k(ranking: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top k (0 if none)."""
    for i, doc in enumerate(ranking[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranking: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    """Share of the relevant documents found in the top k (0 if nothing is relevant)."""
    wanted = {doc for doc, rel in relevant.items() if rel > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranking[:k])) / len(wanted)


def evaluate_run(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Mean nDCG@10, MRR@10 and Recall@100 over the queries of ``qrels`` with a relevant document.

    ``run`` maps query ids to ranked document ids; a query missing from it scores 0.
    """
    per_query: dict[str, dict[str, float]] = {}
    for qid, relevant in qrels.items():
        if not any(r > 0 for r in relevant.values()):
            continue
        ranking = list(run.get(qid, ()))
        per_query[qid] = {
            "ndcg@10": ndcg_at_k(ranking, relevant, 10),
            "mrr@10": mrr_at_k(ranking, relevant, 10),
            "recall@100": recall_at_k(ranking, relevant, 100),
        }
    n = len(per_query)
    means = {
        metric: (sum(q[metric] for q in per_query.values()) / n if n else 0.0)
        for metric in ("ndcg@10", "mrr@10", "recall@100")
    }
    return {"queries": n, **means, "per_query": per_query}


def collapse_passages(hits: Iterable[Hit | SearchHit]) -> list[str]:
    """Document ids in rank order, passages folded into their parent (best passage counts)."""
    seen: dict[str, None] = {}
    for hit in hits:
        doc = str(hit.payload.get(PARENT_KEY, hit.id)) if hit.payload else hit.id
        seen.setdefault(doc, None)
    return list(seen)


# --------------------------------------------------------------------------- encoders


def load_sparse_encoder(name_or_path: str, device: str | None = None, precision: str = "fp32") -> Any:
    """The SPLADE encoder named in the config (``packaged:splade`` by default)."""
    import sparsebridge

    encoder_cls = getattr(sparsebridge, "SparseEncoder", None)
    if encoder_cls is None:
        raise ConfigError("this sparsebridge build has no SparseEncoder (sparsebridge.SparseEncoder)")
    return encoder_cls(resolve_model(name_or_path), device=device, precision=precision)


def load_dense_encoder(name_or_path: str, device: str | None = None) -> Any:
    """The dense encoder for hybrid search (``packaged:minilm`` by default)."""
    import sparsebridge

    encoder_cls = getattr(sparsebridge, "DenseEncoder", None)
    if encoder_cls is None:
        raise ConfigError("[search] hybrid = true needs sparsebridge.DenseEncoder, which this version does not include")
    return encoder_cls(resolve_model(name_or_path), device=device)


def has_inference_free_queries(encoder: Any) -> bool:
    """Whether ``encoder.encode_query`` skips the transformer: a Router whose query route holds a
    ``SparseStaticEmbedding`` (one weight per vocabulary token, looked up, no forward pass)."""
    from .modules import Router, SparseStaticEmbedding

    modules = encoder.modules() if hasattr(encoder, "modules") else ()
    for module in modules:
        if isinstance(module, Router):
            try:
                route = module.sub_modules[module.route("query")]
            except (ValueError, KeyError):
                return False
            return any(isinstance(m, SparseStaticEmbedding) for m in route.modules())
    return False


def load_query_encoder(side: str, encoder: Any, config: Config) -> Any:
    """The object that encodes queries, checked against ``[model] query_side``.

    ``"inference-free"`` needs a model that encodes queries without a transformer pass (see
    :func:`has_inference_free_queries`); ``"full"`` needs one that runs it. Either way queries go
    through ``encode_query``: the setting states, and checks, what the model does.
    """
    free = has_inference_free_queries(encoder)
    where = f"{config.source}: [model] query_side = {side!r}"
    if side == "inference-free" and not free:
        raise ConfigError(
            f"{where}: the model {config.model.name_or_path!r} has no inference-free query route (a Router "
            f"whose query route is a SparseStaticEmbedding); use query_side = 'full', or an inference-free model"
        )
    if side == "full" and free:
        raise ConfigError(
            f"{where}: the model {config.model.name_or_path!r} encodes queries inference-free (a "
            f"SparseStaticEmbedding query route); set query_side = 'inference-free'"
        )
    return encoder


def _dense_dimension(dense_encoder: Any) -> int:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        method = getattr(dense_encoder, name, None)
        if method is not None:
            dim = method()
            if dim:
                return int(dim)
    return int(np.asarray(dense_encoder.encode_document(["dimension probe"])).shape[-1])


def _as_rows(vectors: Any) -> list[list[float]]:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu").float().numpy()
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    return arr.tolist()


def connector_from_config(config: Config) -> Connector:
    """The connector named in ``[backend]``, given its options and the index name (as ``index``,
    so it can count, search and read metadata before or without ``ensure_index``)."""
    from . import plugins

    where = f"{config.source}: [backend]"
    try:
        connector_cls = plugins.get_connector_class(config.backend.connector)
    except plugins.UnknownConnectorError as exc:
        raise ConfigError(f"{where} connector = {config.backend.connector!r}: {exc}") from exc
    options = config.backend.connector_options()
    options.setdefault("index", config.backend.index)
    try:
        return connector_cls(**options)
    except (TypeError, ValueError, ConnectorError) as exc:
        raise ConfigError(f"{where} options for connector {config.backend.connector!r}: {exc}") from exc


# --------------------------------------------------------------------------- the pipeline


@dataclass
class _Prepared:
    """A document turned into the records it becomes (one, or one per passage)."""

    ids: list[str]
    texts: list[str]
    payloads: list[dict[str, Any]]


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
    ) -> None:
        self.encoder = encoder
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
        self.model_name = model_name or str(getattr(encoder, "model_name_or_path", None) or type(encoder).__name__)
        self.vocab = Vocabulary(encoder.tokenizer, self.model_name)
        if self.query_encoder is encoder:
            self.query_vocab = self.vocab
        else:
            self.query_vocab = Vocabulary(self.query_encoder.tokenizer, self.model_name)
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
    ) -> Pipeline:
        """Build everything the config names (model, query side, backend, dense model if hybrid)."""
        # The connector first: it is cheap (clients connect lazily), so a wrong option is reported
        # before seconds go into loading models.
        if connector is None:
            connector = connector_from_config(config)
        try:
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
        )

    def close(self) -> None:
        self.connector.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- index

    @property
    def metadata(self) -> dict[str, Any]:
        meta = dict(self.vocab.metadata)
        if self.dense_encoder is not None:
            meta["dense_model"] = self.dense_model_name
        return meta

    def index_spec(self, payload_types: Mapping[str, str | None] | None = None) -> IndexSpec:
        dense_size = None
        if self.dense_encoder is not None:
            if self._dense_size is None:
                self._dense_size = _dense_dimension(self.dense_encoder)
            dense_size = self._dense_size
        return IndexSpec(
            name=self.index,
            sparse_field=self.sparse_field,
            dense_field=self.dense_field if dense_size else None,
            dense_size=dense_size,
            payload_fields={k: v for k, v in (payload_types or {}).items() if v},
            metadata=self.metadata,
            options=dict(self.index_options),
        )

    def count(self) -> int:
        return self.connector.count()

    def exists(self) -> bool:
        return self.connector.index_metadata() is not None

    # -- ingest

    def ingest(
        self,
        documents: Corpus | str | Path | Iterable[Mapping[str, Any]],
        *,
        limit: int | None = None,
        recreate: bool = False,
    ) -> IngestReport:
        """Encode and write documents; returns an :class:`IngestReport` (failures by id).

        ``documents`` is a :class:`~sparsebridge.corpus.Corpus`, a corpus spec (JSONL file, BEIR
        folder, ``stdlib:``) or an iterable of dicts.
        """
        corpus = documents if isinstance(documents, Corpus) else None
        if corpus is None and isinstance(documents, (str, Path)):
            corpus = open_corpus(documents, limit=limit)
        elif corpus is None:
            docs = documents if limit is None else _take(documents, limit)
            size = len(documents) if hasattr(documents, "__len__") else None  # type: ignore[arg-type]
            corpus = Corpus(documents=docs, name="documents", size=min(size, limit) if size and limit else size)

        settings = self.ingest_settings
        id_field = settings.id_field or corpus.id_field
        text_fields = tuple(settings.text_fields or corpus.text_fields)
        if settings.payload_fields is not None:
            payload_types = dict(settings.payload_fields)
        else:
            payload_types = {name: None for name in corpus.payload_fields}
        passage_tokens = None
        if settings.split_passages:
            passage_tokens = settings.passage_tokens or max(int(self.encoder.max_seq_length) - 2, 8)

        report = IngestReport(index=self.index)
        start = time.perf_counter()
        if recreate:
            self.connector.drop()
        spec = self.index_spec(payload_types)
        check_vocabulary(self.connector.index_metadata(), spec.metadata, self.index)
        self.connector.ensure_index(spec)

        progress = _progress(corpus.size, "ingest", "docs", self.show_progress)
        try:
            chunk: list[_Prepared] = []
            chunk_records = 0
            seen: dict[str, int] = {}  # id -> number of the document that holds it in this run
            for n, doc in enumerate(corpus, 1):
                report.documents += 1
                prepared = self._prepare(doc, n, id_field, text_fields, payload_types, passage_tokens, report, seen)
                if prepared is not None:
                    chunk.append(prepared)
                    chunk_records += len(prepared.ids)
                else:
                    progress.update(1)
                if chunk_records >= self.batch_size * 4:
                    self._encode_and_write(chunk, report, progress)
                    chunk, chunk_records = [], 0
            if chunk:
                self._encode_and_write(chunk, report, progress)
        finally:
            progress.close()
            report.seconds = time.perf_counter() - start
        return report

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
    ) -> _Prepared | None:
        if isinstance(doc, InvalidDocument):
            report.failed[doc.ref] = doc.reason
            return None
        if not isinstance(doc, Mapping):
            report.failed[f"#{n}"] = f"document {n} is a {type(doc).__name__}, not a mapping"
            return None
        doc_id = _document_id(doc, id_field)
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
            report.failed[doc_id or f"#{n}"] = problem
            return None
        text = " ".join(parts)
        doc_id = doc_id or text_id(text)
        if doc_id in seen:
            # The first document with an id is kept; a later one would silently replace it.
            report.failed[f"{doc_id} (document {n})"] = (
                f"duplicate id {doc_id!r}: document {seen[doc_id]} of this corpus has the same id "
                f"(ids compare as strings; without an id field, equal texts get equal ids); it was kept"
            )
            return None
        seen[doc_id] = n
        payload = {k: doc[k] for k in payload_types if k in doc and doc[k] is not None}
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

    def _encode_and_write(self, chunk: list[_Prepared], report: IngestReport, progress: Any) -> None:
        ids = [i for p in chunk for i in p.ids]
        texts = [t for p in chunk for t in p.texts]
        payloads = [pl for p in chunk for pl in p.payloads]
        started = time.perf_counter()
        sparse, errors = self._encode_documents(texts)
        dense: list[list[float]] | None = None
        if self.dense_encoder is not None:
            try:
                dense = _as_rows(self.dense_encoder.encode_document(texts, batch_size=self.batch_size))
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
        progress.update(len(chunk))

    def _account(self, result: WriteResult, report: IngestReport) -> None:
        report.written += len(result.written)
        report.failed.update(result.failed)
        report.retries += result.retries

    def _encode_documents(self, texts: list[str]) -> tuple[list[SparseVector], dict[int, str]]:
        """Encode a batch; if the batch fails, encode one by one so only the bad texts fail."""
        try:
            return to_sparse_vectors(self._encode(self.encoder.encode_document, texts), self.vocab), {}
        except Exception:  # noqa: BLE001 - isolate the culprit below
            if len(texts) == 1:
                raise
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
    ) -> list[QueryResult]:
        """Search many queries in one backend request; one :class:`QueryResult` per query.

        ``mode`` is ``"sparse"``, ``"dense"`` or ``"hybrid"`` (default: hybrid when a dense encoder
        is configured, else sparse). ``explain`` adds the shared tokens of query and hit.
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

        sparse = self.encode_queries(queries) if mode != "dense" or explain else [None] * len(queries)
        dense: list[list[float]] | list[None] = [None] * len(queries)
        if mode != "sparse":
            encode = getattr(self.dense_encoder, "encode_query", None) or self.dense_encoder.encode_document
            dense = _as_rows(encode(queries))
        batch = [
            Query(sparse=s if mode != "dense" else None, dense=d if mode != "sparse" else None, filter=filter)
            for s, d in zip(sparse, dense)
        ]
        settings = self.search_settings
        options = SearchOptions(
            top_k=top_k or settings.top_k,
            fusion=settings.fusion,  # type: ignore[arg-type]
            rrf_k=settings.rrf_k,
            prefetch_limit=settings.prefetch_limit,
        )
        raw = self.connector.search(batch, options)
        results = [
            QueryResult(q, [SearchHit(h.id, float(h.score), dict(h.payload or {})) for h in r.hits], list(r.notes))
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
    ) -> dict[str, Any]:
        """nDCG@10, MRR@10 and Recall@100 of this backend on a BEIR dataset's qrels.

        Ingests the corpus first when the index is missing or empty. Passage hits count for
        their parent document.
        """
        beir_dir = Path(beir_dir)
        qrels = read_qrels(beir_dir, split)
        queries = read_beir_queries(beir_dir)
        missing = [q for q in qrels if q not in queries]
        if missing:
            raise ConfigError(f"{beir_dir}: {len(missing)} qrels queries are not in queries.jsonl (e.g. {missing[0]})")
        out: dict[str, Any] = {"dataset": str(beir_dir), "split": split, "index": self.index}
        if ingest_if_missing and (not self.exists() or self.count() == 0):
            out["ingest"] = self.ingest(beir_dir).to_dict()
        qids = [q for q in queries if q in qrels]
        per_passage = self.ingest_settings.split_passages
        results = self.search([queries[q] for q in qids], top_k=top_k * (3 if per_passage else 1))
        run = {qid: collapse_passages(r.hits)[:top_k] for qid, r in zip(qids, results)}
        out.update(evaluate_run(run, qrels))
        return out


def _document_id(doc: Mapping[str, Any], id_field: str | None) -> str | None:
    names = (id_field,) if id_field else AUTO_ID_FIELDS
    for name in names:
        value = doc.get(name)
        if value is not None and str(value) != "":
            return str(value)
    return None


def _take(items: Iterable[Any], n: int) -> Iterator[Any]:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item


def _progress(total: int | None, desc: str, unit: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)
