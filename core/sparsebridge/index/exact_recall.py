"""What an approximate index costs: the recall of the exact top k in the engine's top k.

``sparsebridge eval --exact-recall`` runs every query twice over the same documents: once through
the engine (which may prune query tokens, truncate posting lists or quantise weights) and once by
brute force, the dot product of the query's sparse vector (the very vector sent to the engine) with
every document's sparse vector. The documents' vectors are read back from the index through
:meth:`Connector.export` rather than encoded again from the corpus: that is what was ingested (after
``max_active_dims``, passages, the encode cache and any failed documents), so the exact ranking is
exact with respect to the index itself and costs no second encoding.

Definition, per query, with ``n = min(k, number of documents sharing a token with the query)`` and
``t`` the ``n``-th best exact score: a document of the engine's top k is a *hit* when its exact score
is at least ``t * (1 - rtol)``; recall is ``min(hits, n) / n``. ``rtol`` is the engine's own score
precision (:attr:`Connector.score_rtol`: Lucene keeps weights with 9 significant bits), so documents
the engine cannot tell apart from the ``n``-th are ties, and an exact engine scores 1.0. Queries that
share no token with any document (``n = 0``) have nothing to find and are left out of the mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..connector import Record, SparseVector


@dataclass
class _QueryState:
    """What the scan keeps per query: the best exact scores so far and those of the engine's hits."""

    retrieved: set[str]
    best: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.float64))
    positives: int = 0
    found: dict[str, float] = field(default_factory=dict)


def exact_recall(
    queries: Sequence[SparseVector],
    rankings: Sequence[Sequence[str]],
    documents: Iterable[Sequence[Record]],
    *,
    k: int = 10,
    rtol: float = 0.0,
) -> dict[str, Any]:
    """The mean recall of each query's exact top ``k`` in the engine's top ``k`` (module docstring).

    ``rankings[q]`` is the engine's ranking of record ids for ``queries[q]`` (only its first ``k``
    count); ``documents`` yields batches of the index's records (``Connector.export``). Returns
    ``{"k", "recall", "queries", "queries_without_matches", "documents", "score_rtol",
    "per_query"}`` where ``per_query`` lists each query's recall (None for ``n = 0``), in order.
    """
    if len(queries) != len(rankings):
        raise ValueError(f"exact_recall needs one ranking per query: {len(queries)} queries, {len(rankings)} rankings")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    # Only the vocabulary ids some query holds can score: the brute force runs over those columns.
    columns: dict[int, int] = {}
    for vec in queries:
        for i in vec.indices:
            columns.setdefault(i, len(columns))
    # (query tokens) x (queries), sparse: many queries over a large vocabulary stay small.
    q_rows = [columns[i] for vec in queries for i in vec.indices]
    q_cols = [q for q, vec in enumerate(queries) for _ in vec.indices]
    query_matrix = torch.sparse_coo_tensor(
        torch.tensor([q_rows, q_cols], dtype=torch.long).reshape(2, -1),
        torch.tensor([float(w) for vec in queries for w in vec.values], dtype=torch.float64),
        (max(len(columns), 1), len(queries)),
        check_invariants=False,  # unique (token, query) pairs: SparseVector indices are unique
    ).coalesce()
    states = [_QueryState(retrieved=set(list(r)[:k])) for r in rankings]
    n_docs = 0
    for batch in documents:
        if not batch:
            continue
        n_docs += len(batch)
        rows, cols, vals = [], [], []
        for r, record in enumerate(batch):
            for i, w in zip(record.sparse.indices, record.sparse.values):
                c = columns.get(i)
                if c is not None:
                    rows.append(r)
                    cols.append(c)
                    vals.append(float(w))
        docs = torch.sparse_coo_tensor(
            torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
            torch.tensor(vals, dtype=torch.float64),
            (len(batch), query_matrix.shape[0]),
            check_invariants=False,  # built just above: unique (row, column) pairs within bounds
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch: "sparse CSR support is in beta"
            scores = torch.sparse.mm(docs, query_matrix).to_dense()  # (records of the batch) x (queries)
        row_of = {record.id: r for r, record in enumerate(batch)}
        for q, state in enumerate(states):
            column = scores[:, q]
            state.positives += int((column > 0).sum())
            merged = torch.cat([state.best, column[column > 0]])
            state.best = torch.topk(merged, min(k, merged.numel())).values if merged.numel() else merged
            for doc_id in state.retrieved:
                r = row_of.get(doc_id)
                if r is not None:
                    state.found[doc_id] = float(column[r])
    per_query: list[float | None] = []
    for state in states:
        n = min(k, state.positives)
        if n == 0:
            per_query.append(None)
            continue
        cut = float(state.best[n - 1]) * (1.0 - rtol)
        hits = sum(1 for s in state.found.values() if s > 0 and s >= cut)
        per_query.append(min(hits, n) / n)
    scored = [r for r in per_query if r is not None]
    return {
        "k": k,
        "recall": sum(scored) / len(scored) if scored else None,
        "queries": len(scored),
        "queries_without_matches": len(per_query) - len(scored),
        "documents": n_docs,
        "score_rtol": rtol,
        "per_query": per_query,
    }
