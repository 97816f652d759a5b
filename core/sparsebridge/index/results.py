"""What an ingest or a search gives back: reports, hits, explanations (all JSON-able via ``to_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..connector import ConnectorError, SparseVector


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
    # Documents left out because a resumed ``encode`` already holds them; encode cache use.
    skipped: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_corrupt: int = 0
    # Documents longer than the model's max_seq_length, cut there by the encoder (not with passages).
    truncated: int = 0
    max_seq_length: int | None = None
    # What the user should know about the index (e.g. it records no model fingerprint).
    notes: list[str] = field(default_factory=list)

    @property
    def docs_per_second(self) -> float:
        """Documents per second over the whole run."""
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Whether no document failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--json``)."""
        out = asdict(self)
        out["docs_per_second"] = round(self.docs_per_second, 2)
        for key in ("seconds", "encode_seconds", "write_seconds"):
            out[key] = round(out[key], 3)
        return out


@dataclass
class TokenMatch:
    """One token query and hit share, with its weight on each side."""

    token: str
    query_weight: float
    document_weight: float

    @property
    def product(self) -> float:
        """What the token adds to the score."""
        return self.query_weight * self.document_weight

    def to_dict(self) -> dict[str, Any]:
        """The match as JSON-ready data."""
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
        """The dot product the matches add up to."""
        return float(sum(m.product for m in self.matches))

    def to_dict(self) -> dict[str, Any]:
        """The explanation as JSON-ready data."""
        out: dict[str, Any] = {"score": self.score, "matches": [m.to_dict() for m in self.matches]}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class SearchHit:
    """One hit of a query: id, score, payload, and the explanation when asked for."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    explanation: Explanation | None = None

    def to_dict(self) -> dict[str, Any]:
        """The hit as JSON-ready data."""
        out: dict[str, Any] = {"id": self.id, "score": self.score, "payload": self.payload}
        if self.explanation is not None:
            out["explanation"] = self.explanation.to_dict()
        return out


@dataclass
class QueryResult:
    """A query's hits, best first, and the notes the backend or the pipeline add."""

    query: str
    hits: list[SearchHit]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {"query": self.query, "hits": [h.to_dict() for h in self.hits], "notes": self.notes}


def explain_match(query: SparseVector, document: SparseVector) -> Explanation:
    """The shared tokens of two sparse vectors with both weights, largest product first."""
    doc = document.as_index_dict()
    matches = [
        TokenMatch(token, qw, doc[i]) for i, token, qw in zip(query.indices, query.tokens, query.values) if i in doc
    ]
    matches.sort(key=lambda m: (-m.product, m.token))
    return Explanation(matches)


class IngestError(ConnectorError):
    """The backend failed as a whole during an ingest; ``report`` holds what was done before."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report
