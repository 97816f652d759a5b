"""The connector contract: what every search-engine plugin implements, and the records it moves.

A connector is a class registered through the ``register_connectors`` hook (see ``hookspecs.py``).
The core never imports a backend client; it only speaks the types defined here.

Lifecycle, in the order the pipeline calls it::

    conn = ConnectorClass(**backend_options)     # connect (lazily is fine), validate options
    conn.check()                                 # fail fast when the backend does not answer
    conn.ensure_index(spec)                      # create, or check an existing index matches spec
    conn.write(records)                          # upsert a batch; idempotent by Record.id
    conn.write_columns(columns)                  # the same from a vector dataset's columns (optional)
    conn.search(queries, top_k=10, ...)          # one batch request for many queries
    conn.count(); conn.drop()
    conn.export(vocabulary)                      # every record back, with its vectors
    conn.close()

What the core calls, and for which feature (a connector must implement the first group; each
method of the second that it lacks turns off what depends on it, with a clear error):

* always: ``__init__(**options)``, ``check``, ``ensure_index``, ``index_metadata``, ``write``,
  ``search``, ``count``, ``close``; ``drop`` for ``ingest --recreate``;
* ``get(ids)``: ``eval`` (which documents of the corpus the index lacks; without it only
  ``count()`` can tell) and ``search --explain`` of hits whose text is not in the search payload;
* ``export(vocabulary)`` (with ``export_quantisation``): ``export``, ``migrate`` (as the source)
  and ``eval --exact-recall``;
* ``delete(ids)`` is never called by the core; it is there for applications (optional);
* ``register_model_server(server)``: ``sparsebridge register`` (the engine calls a running
  ``sparsebridge serve`` to encode text; see :class:`ModelServer`); a connector with it sets
  ``encodes_text = True`` and then also takes a :class:`Query` that carries ``text`` instead of a
  sparse vector (``[search] query_encoding = "engine"``), encoded by the engine with the query
  model recorded under :data:`ENGINE_ENCODING_KEY` in the index metadata. The core refuses
  ``query_encoding = "engine"`` for a connector whose ``encodes_text`` is False.

The author's helpers (one-line messages, redaction, option errors, atomic writes) are in
:mod:`sparsebridge.connector.kit`; the contract as tests to subclass is
:class:`sparsebridge.testing.ConnectorConformance`.

Rules every connector follows:

* ``write`` is an upsert keyed by ``Record.id``: writing the same record twice leaves one copy, so an
  interrupted ingest can simply be run again.
* ``write`` never raises for a bad *item*: it returns a :class:`WriteResult` naming each failed id
  with its reason, and the rest of the batch still lands. It raises :class:`ConnectorError` only when
  the whole request cannot be made (unreachable server, wrong mapping, auth).
* Sparse weights that are zero or negative are never sent (engines reject or ignore them);
  :class:`SparseVector` already guarantees positive weights.
* ``ensure_index`` stores ``IndexSpec.metadata`` (model name, vocabulary size and fingerprint, the
  producer fingerprints of ``sparsebridge.provenance``, the dense model if any) with the index and
  ``index_metadata()`` reads it back as stored (nested JSON values included), so a query encoded with
  another vocabulary or model can be refused (see :func:`check_vocabulary`), and a write that would
  strip the index's dense vectors too (see :func:`check_vector_kinds`).
* ``get(ids)`` returns the stored records of the ids found; ``eval`` uses it to find the documents
  of a corpus an index is missing (a connector without it is compared by ``count()`` only).
* Secrets given as options (``api_key``, ``password``...) never appear in reprs, logs or errors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..errors import ConnectorError, IndexMismatchError  # noqa: F401  (defined in errors.py; re-exported here)


@dataclass(frozen=True)
class SparseVector:
    """A sparse vector over a model vocabulary.

    ``indices`` are unique vocabulary ids, ``values`` their strictly positive weights and
    ``tokens`` the vocabulary strings of those ids (engines keyed by token need them).
    """

    indices: tuple[int, ...]
    values: tuple[float, ...]
    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.indices)
        if len(self.values) != n or len(self.tokens) != n:
            raise ValueError(
                f"SparseVector needs as many values and tokens as indices: got {n} indices, "
                f"{len(self.values)} values, {len(self.tokens)} tokens"
            )
        if len(set(self.indices)) != n:
            raise ValueError("SparseVector indices must be unique")
        for i, v in zip(self.indices, self.values):
            if i < 0:
                raise ValueError(f"SparseVector index {i} is negative")
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"SparseVector weight for index {i} must be finite and > 0, got {v}")

    @classmethod
    def from_pairs(cls, items: Iterable[tuple[int, str, float]]) -> SparseVector:
        """Build from (index, token, weight) triples, dropping weights <= 0, sorted by index."""
        kept = sorted((int(i), str(t), float(w)) for i, t, w in items if w > 0)
        return cls(
            indices=tuple(i for i, _, _ in kept),
            values=tuple(w for _, _, w in kept),
            tokens=tuple(t for _, t, _ in kept),
        )

    def __len__(self) -> int:
        return len(self.indices)

    def as_token_dict(self) -> dict[str, float]:
        """token -> weight."""
        return dict(zip(self.tokens, self.values))

    def as_index_dict(self) -> dict[int, float]:
        """vocabulary id -> weight."""
        return dict(zip(self.indices, self.values))


@dataclass
class Record:
    """One document (or passage) on its way into an index."""

    id: str
    text: str
    sparse: SparseVector
    payload: dict[str, Any] = field(default_factory=dict)
    dense: Sequence[float] | None = None


PayloadType = Literal["keyword", "text", "integer", "float", "boolean"]
PAYLOAD_TYPES: tuple[str, ...] = ("keyword", "text", "integer", "float", "boolean")


@dataclass
class IndexSpec:
    """What an index must look like, independent of the backend.

    ``payload_fields`` maps payload keys to one of :data:`PAYLOAD_TYPES`; fields named there get a
    mapping/payload index so filters on them are fast. Other payload keys are still stored.
    ``options`` carries backend-specific settings (shards, HNSW, SEISMIC parameters...).
    """

    name: str
    sparse_field: str = "sparse"
    dense_field: str | None = None
    dense_size: int | None = None
    payload_fields: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("IndexSpec.name must not be empty")
        if (self.dense_field is None) != (self.dense_size is None):
            raise ValueError("IndexSpec needs both dense_field and dense_size, or neither")
        if self.dense_size is not None and self.dense_size <= 0:
            raise ValueError(f"IndexSpec.dense_size must be positive, got {self.dense_size}")
        for key, kind in self.payload_fields.items():
            if kind not in PAYLOAD_TYPES:
                raise ValueError(f"payload field {key!r} has type {kind!r}; allowed: {', '.join(PAYLOAD_TYPES)}")


# A backend-neutral metadata filter: every key must match. A scalar value means equality, a
# list means "any of these values" (an empty list matches nothing). Connectors parse it with
# sparsebridge.filters.parse_filter, so it means the same, and fails the same way, everywhere.
Filter = Mapping[str, Any]


@dataclass
class Query:
    """One query: its sparse vector, optionally a dense vector for hybrid search, and a filter.

    ``text`` instead of ``sparse``: the engine encodes the text itself (only for connectors whose
    ``encodes_text`` is True; see :meth:`Connector.register_model_server`).
    """

    sparse: SparseVector | None = None
    dense: Sequence[float] | None = None
    filter: Filter | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.sparse is None and self.dense is None and self.text is None:
            raise ValueError("a Query needs a sparse vector, a dense vector, a text, or a combination")
        if self.sparse is not None and self.text is not None:
            raise ValueError("a Query carries a sparse vector or a text for the engine to encode, not both")


# Where a connector records, in the index metadata, what its engine calls to encode text:
# {"query": <the engine's id of the query-side model>, "document": <id>, "server": <url>}.
ENGINE_ENCODING_KEY = "engine_encoding"
MODEL_SERVER_SIDES: tuple[str, ...] = ("query", "document")


@dataclass(frozen=True)
class ModelServer:
    """A running ``sparsebridge serve`` as an engine should call it (``sparsebridge register``).

    ``url`` is the server's base URL as the *engine* reaches it (not necessarily as this machine
    does); ``api_key`` the server's bearer key, if it has one (the engine keeps it as a secret);
    ``semantic_index`` asks Elasticsearch for a new index of that name whose field is
    ``semantic_text`` on the registered endpoints (other engines refuse it); ``info_url`` the
    server's base URL as *this* machine reaches it, when that differs from ``url`` (recorded with
    the ids, for checking the served model). Routes: see :meth:`route`.
    """

    url: str
    api_key: str | None = None
    semantic_index: str | None = None
    info_url: str | None = None

    def route(self, side: str, endpoint: str) -> str:
        """The URL of ``endpoint`` (``"elasticsearch/sparse_embedding"``,
        ``"opensearch/sparse_encoding"``) on the ``side`` (``"query"`` / ``"document"``) route."""
        if side not in MODEL_SERVER_SIDES:
            raise ValueError(f"side must be 'query' or 'document', got {side!r}")
        return f"{self.url.rstrip('/')}/{side}/{endpoint}"


FUSIONS: tuple[str, ...] = ("rrf", "dbsf", "linear")


@dataclass
class SearchOptions:
    """How to run a batch of queries.

    ``fusion`` applies when a query has both vectors; the meaning of each method is the same on
    every backend (see *Fusion* below). ``prefetch_limit`` is how many candidates each side (each
    *leg*) contributes before fusion (defaults to ``max(top_k, 100)``). ``weights`` are the
    (sparse, dense) weights of ``fusion="linear"``.

    Fusion, defined once for every connector (each translates it to its engine's parameters, or
    fuses on the client with :func:`fuse_legs` where the engine cannot):

    * A *leg* is one vector's own ranking: its best ``candidates`` hits (filter applied), best
      first; ``rank`` counts from 1 within the leg.
    * ``"rrf"``: ``score(d) = sum over the legs holding d of 1 / (rrf_k + rank)``. Elasticsearch's
      and OpenSearch's ``rank_constant`` mean exactly this; Qdrant counts positions from 0 and
      scores ``1 / (k + position)``, so its connector sends ``k = rrf_k + 1``.
    * ``"linear"``: each leg's scores are min-max normalised over the leg,
      ``(s - min) / (max - min)`` (1.0 when all of the leg's scores are equal), a hit absent from a
      leg counts 0 there, and ``score(d) = (w_sparse * n_sparse(d) + w_dense * n_dense(d)) /
      (w_sparse + w_dense)``. Elasticsearch's ``linear`` retriever with ``minmax`` and
      OpenSearch's ``normalization-processor`` (``min_max`` + ``arithmetic_mean``) compute this,
      except at the edges: OpenSearch floors a leg's lowest normalised score at 0.001 instead of 0
      (which only matters against a hit absent from that leg), and Elasticsearch keeps the raw
      scores of a leg whose scores are all equal instead of 1.0.
    * ``"dbsf"`` (distribution-based score fusion, Qdrant's definition): each leg's scores are
      mapped by ``(s - (mu - 3 sigma)) / (6 sigma)`` with ``mu`` the mean and ``sigma`` the sample
      standard deviation (n - 1) of the leg's scores, not clipped (0.5 for a leg of one hit or of
      equal scores); ``score(d)`` is the sum over the legs holding ``d``.

    Ties in the fused score are broken by id, so the client-side fusion is deterministic.
    """

    top_k: int = 10
    fusion: Literal["rrf", "dbsf", "linear"] = "rrf"
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)
    prefetch_limit: int | None = None
    with_payload: bool = True
    backend_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.top_k <= 0:
            raise ValueError(f"top_k must be positive, got {self.top_k}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(map(repr, FUSIONS))}, got {self.fusion!r}")
        if self.rrf_k <= 0:
            raise ValueError(f"rrf_k must be positive, got {self.rrf_k}")
        weights = tuple(self.weights)
        if len(weights) != 2 or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights
        ):
            raise ValueError(f"weights must be two finite numbers >= 0 (sparse, dense), got {self.weights!r}")
        if sum(weights) <= 0:
            raise ValueError(f"weights must not both be 0, got {self.weights!r}")
        self.weights = (float(weights[0]), float(weights[1]))

    @property
    def candidates(self) -> int:
        """How many hits each leg contributes before fusion (``prefetch_limit``, else ``max(top_k, 100)``)."""
        return self.prefetch_limit or max(self.top_k, 100)

    @property
    def normalized_weights(self) -> tuple[float, float]:
        """The linear weights scaled to sum to 1 (what OpenSearch requires; same ranking)."""
        total = self.weights[0] + self.weights[1]
        return self.weights[0] / total, self.weights[1] / total


@dataclass
class Hit:
    """One search result."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    """The hits of one query, best first, plus anything the backend wants the user to know
    (e.g. that a query was rescaled to fit the engine's weight range)."""

    hits: list[Hit]
    notes: list[str] = field(default_factory=list)


@dataclass
class WriteResult:
    """What became of a batch: ids written, ids that failed with their reasons, retries spent, and
    anything the backend wants the user to know (e.g. weights clipped by the engine's quantization)."""

    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    notes: list[str] = field(default_factory=list)

    def merge(self, other: WriteResult) -> WriteResult:
        """Add ``other``'s ids, failures, retries and new notes to this result; returns it."""
        self.written.extend(other.written)
        self.failed.update(other.failed)
        self.retries += other.retries
        self.notes.extend(n for n in other.notes if n not in self.notes)
        return self


def fuse_legs(legs: Sequence[Sequence[Hit]], options: SearchOptions) -> list[Hit]:
    """Fuse the (sparse, dense) legs of one hybrid query on the client, by the definitions of
    :class:`SearchOptions`; the best ``options.top_k`` hits, each with its fused score and the
    payload of the first leg that returned it.

    For connectors whose engine (or its version or licence) cannot fuse ``options.fusion`` itself;
    each leg must already be cut to ``options.candidates`` hits, best first.
    """
    if len(legs) != 2:
        raise ValueError(f"fuse_legs takes the (sparse, dense) legs, got {len(legs)} legs")
    fused: dict[str, float] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for leg_no, leg in enumerate(legs):
        scores = [float(h.score) for h in leg]
        for rank, (hit, norm) in enumerate(zip(leg, _normalized(scores, options.fusion)), start=1):
            if options.fusion == "rrf":
                part = 1.0 / (options.rrf_k + rank)
            elif options.fusion == "linear":
                part = options.normalized_weights[leg_no] * norm
            else:
                part = norm
            fused[hit.id] = fused.get(hit.id, 0.0) + part
            payloads.setdefault(hit.id, dict(hit.payload))
    ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[: options.top_k]
    return [Hit(id=i, score=s, payload=payloads[i]) for i, s in ranked]


def _normalized(scores: list[float], fusion: str) -> list[float]:
    if fusion == "rrf" or not scores:
        return scores
    if fusion == "linear":
        lo, hi = min(scores), max(scores)
        return [1.0 if hi == lo else (s - lo) / (hi - lo) for s in scores]
    if len(scores) < 2:
        return [0.5]
    mean = sum(scores) / len(scores)
    sigma = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
    if sigma == 0:
        return [0.5] * len(scores)
    return [(s - (mean - 3 * sigma)) / (6 * sigma) for s in scores]


class Connector(ABC):
    """Base class of every backend connector.

    Subclasses set ``name`` (the key users write in their config, e.g. ``"qdrant"``) and accept
    their connection options as keyword arguments. ``secret_options`` lists option names whose
    values must never be shown.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    secret_options: ClassVar[tuple[str, ...]] = ("api_key", "password", "token", "basic_auth")
    # True when one process owns the index (an embedded engine's folder): distributed ingests then
    # write through that one process instead of from every worker.
    single_writer: bool = False
    # How close (relative) the engine's scores are to the exact dot product of the weights as
    # written: documents whose exact scores differ by less are ties the engine cannot order (see
    # ``sparsebridge.exact_recall``). Engines that score in float32 default to float32 noise.
    score_rtol: ClassVar[float] = 1e-6
    # True when the engine can call a model server to encode text (see register_model_server).
    encodes_text: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    def __repr__(self) -> str:
        shown = {k: ("***" if k in self.secret_options else v) for k, v in self.options.items()}
        args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({args})"

    @abstractmethod
    def ensure_index(self, spec: IndexSpec) -> None:
        """Create the index if missing; if it exists, check it matches ``spec`` or raise
        :class:`IndexMismatchError` with the fix in the message."""

    @abstractmethod
    def write(self, records: Sequence[Record]) -> WriteResult:
        """Upsert a batch of records, keyed by id."""

    def write_columns(self, columns: RecordColumns) -> WriteResult:
        """Upsert a batch given as columns (see :class:`RecordColumns`), as ``write``
        would. The vector dataset's ingest calls it; a connector that can build its engine's points
        from the flat arrays overrides it, the default goes through ``write``."""
        return self.write(columns.records())

    @abstractmethod
    def search(self, queries: Sequence[Query], options: SearchOptions | None = None) -> list[SearchResult]:
        """Run a batch of queries in as few requests as the backend allows; one result per query."""

    @abstractmethod
    def count(self) -> int:
        """Number of records in the index."""

    def delete(self, ids: Sequence[str]) -> None:
        """Delete records by id; unknown ids are ignored. Optional: the core never calls it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement delete()")

    @abstractmethod
    def drop(self) -> None:
        """Delete the whole index; a missing index is not an error."""

    @abstractmethod
    def index_metadata(self) -> dict[str, Any] | None:
        """The ``IndexSpec.metadata`` stored at creation, or None if the index does not exist."""

    def check(self) -> None:  # noqa: B027 - optional hook: embedded backends have nothing to reach
        """Make sure the backend answers, within a couple of seconds, or raise :class:`ConnectorError`.

        The pipeline calls it before loading any model, so that an unreachable server is reported
        at once rather than after the model load. A server connector makes one cheap request with a
        short timeout and no retries; the default does nothing.
        """

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored payloads by id, the text under ``"text"`` (ids not found are absent). ``eval`` and
        ``search --explain`` use it (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement get()")

    def close(self) -> None:  # noqa: B027 - optional hook, most clients need nothing
        """Release connections and file handles."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def export(self, vocabulary: Sequence[str], batch_size: int = 500) -> Iterator[list[Record]]:
        """Every record of the index, with its vectors, in batches of about ``batch_size``.

        ``vocabulary`` is the model's id-ordered token list (checked against the index's
        fingerprint by the caller): engines keyed by token give back ids through it, engines keyed
        by id give back tokens. Records come back as written: same id, text, payload, sparse
        indices and values (float32), dense vector. Where the engine keeps only a rounded weight,
        :meth:`export_quantisation` says so after the export. Optional; used by ``sparsebridge
        export`` and ``migrate``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement export()")

    def register_model_server(self, server: ModelServer) -> dict[str, str]:
        """Create in the engine what makes it call ``server`` to encode text, for both sides, and
        record the ids under :data:`ENGINE_ENCODING_KEY` in the selected index's metadata; returns
        what was created (name -> id) for the user. Optional: ``sparsebridge register`` calls it,
        and a connector that has it sets ``encodes_text = True``."""
        raise NotImplementedError(f"the {self.name} backend cannot call a model server to encode text")

    def export_quantisation(self) -> str:
        """How the weights of the last :meth:`export` relate to those written: ``"none"`` (bit for
        bit), or ``"lucene-9bit"`` (Lucene kept 9 significant bits of each weight)."""
        return "none"


# --------------------------------------------------------------------------- records as columns
# A batch of records as columns: the rows of a vector dataset's Arrow record batch, passed to a
# connector without one Record object per row. The sparse vectors stay as three flat numpy arrays
# (``offsets``, ``indices``, ``values``: row ``k`` holds ``indices[offsets[k]:offsets[k + 1]]``),
# so a connector can build its engine's points or bulk bodies straight from them. Whoever builds
# one has already checked every vector against SparseVector's rules (unique non-negative ids,
# finite weights > 0); ``records()`` gives the same batch as records, for connectors that only
# implement ``write``.


@dataclass
class RecordColumns:
    """``n`` records as columns.

    ``ids``, ``texts`` and ``payloads`` are lists of ``n`` (text ``""`` when there is none, payloads
    as dicts); ``offsets`` (``n + 1`` int64 from 0), ``indices`` and ``values`` (float32) are the
    flat sparse vectors; ``tokens`` maps a vocabulary id to its token (a numpy object array, indexed
    with ``indices``); ``dense`` is None or ``n`` vectors (None for a row without one).
    ``payload_constants``: some payload holds NaN or an infinity (JSON allows neither), so payloads
    need checking one by one.
    """

    ids: list[str]
    texts: list[str]
    payloads: list[dict[str, Any]]
    offsets: Any  # numpy arrays: the connector contract itself does not import numpy
    indices: Any
    values: Any
    tokens: Any
    dense: Sequence[Any] | None = None
    payload_constants: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def flat_lists(self) -> tuple[list[int], list[int], list[float]]:
        """Offsets, indices and values as Python lists (one conversion per batch; a row's vector is
        then a slice of each)."""
        return self.offsets.tolist(), self.indices.tolist(), self.values.tolist()

    def records(self) -> list[Record]:
        """The batch as :class:`Record` objects (token strings from ``tokens``)."""
        offsets, indices, values = self.flat_lists()
        names = self.tokens[self.indices].tolist() if len(self.indices) else []
        out = []
        for k, rid in enumerate(self.ids):
            a, b = offsets[k], offsets[k + 1]
            sparse = SparseVector(tuple(indices[a:b]), tuple(values[a:b]), tuple(names[a:b]))
            dense = self.dense[k] if self.dense is not None else None
            out.append(Record(id=rid, text=self.texts[k], sparse=sparse, payload=self.payloads[k], dense=dense))
        return out

    def take(self, rows: Sequence[int]) -> RecordColumns:
        """The rows ``rows`` (ascending positions) as a new batch."""
        import numpy as np

        rows = list(rows)
        starts, ends = self.offsets[rows], self.offsets[[r + 1 for r in rows]]
        lengths = ends - starts
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if rows else np.zeros(0, np.int64)
        return RecordColumns(
            ids=[self.ids[r] for r in rows],
            texts=[self.texts[r] for r in rows],
            payloads=[self.payloads[r] for r in rows],
            offsets=offsets,
            indices=self.indices[flat.astype(np.int64)],
            values=self.values[flat.astype(np.int64)],
            tokens=self.tokens,
            dense=[self.dense[r] for r in rows] if self.dense is not None else None,
            payload_constants=self.payload_constants,
        )


def check_vocabulary(stored: Mapping[str, Any] | None, expected: Mapping[str, Any], index: str) -> None:
    """Refuse to query or extend an index built with another vocabulary.

    Compares the ``vocab_fingerprint`` (and ``vocab_size``) recorded when the index was created
    with the current model's. Indexes created without metadata are accepted.
    """
    if not stored:
        return
    for key in ("vocab_size", "vocab_fingerprint"):
        have, want = stored.get(key), expected.get(key)
        if have is not None and want is not None and have != want:
            raise IndexMismatchError(
                f"index {index!r} was built with another vocabulary ({key} {have!r}, model "
                f"{stored.get('model', '?')!r}) than the current model ({key} {want!r}, model "
                f"{expected.get('model', '?')!r}); query it with the model it was built with, "
                f"or re-ingest into a new index"
            )


def check_vector_kinds(
    stored: Mapping[str, Any] | None, expected: Mapping[str, Any], index: str, dense_field: str = "dense"
) -> None:
    """Refuse to write into an index that holds a kind of vector the writer does not produce.

    A write is an upsert of whole records: records without a dense vector replace ones that had it,
    on every backend. So an index whose metadata names a ``dense_model`` (it was ingested with
    hybrid search on) only takes records from a writer that has one too. ``dense_field`` names the
    field in the message when the index did not record it.
    """
    if not stored or not stored.get("dense_model") or expected.get("dense_model"):
        return
    field_name = stored.get("dense_field") or dense_field
    raise IndexMismatchError(
        f"index {index!r} holds dense vectors (field {field_name!r}, model {stored['dense_model']!r}) next to "
        f"its sparse ones, and this ingest has no dense model: its upserts would strip them; set [search] "
        f"hybrid = true (dense_model = {stored['dense_model']!r}) to re-ingest it, or ingest into a new index "
        f"(--index NAME or --recreate)"
    )
