"""Ranking metrics over a run (ranked document ids per query) and qrels (relevance grades per query).

One implementation serves both the ``SparseInformationRetrievalEvaluator`` (sentence-transformers'
definitions: relevance from a set of document ids) and ``sparsebridge eval`` (BEIR qrels with
graded relevance): a set of ids is read as grade 1 for each, and a document counts as relevant when
its grade is above 0, as trec_eval counts it.

Definitions, per query, with ``R`` the relevant documents and ``hits@k`` those among the first k:

* accuracy@k (trec_eval ``success``): 1 if ``hits@k`` is not empty;
* precision@k: ``|hits@k| / k`` (k, not the number of results, as trec_eval ``P``);
* recall@k: ``|hits@k| / |R|``;
* MRR@k: 1 / rank of the first relevant document within k, else 0;
* nDCG@k: linear gains (the grade) discounted by ``log2(rank + 1)``, divided by the same sum over
  the best possible order of the judged grades;
* MAP@k: the sum of the precisions at the ranks of the relevant hits within k, divided by
  ``min(k, |R|)`` (sentence-transformers' definition; trec_eval's ``map_cut`` divides by ``|R|``, so
  the two agree whenever ``|R| <= k``).

Everything here is plain Python (no torch), so the CLI can use it without loading a model.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "METRIC_NAMES",
    "accuracy_at_k",
    "average_precision_at_k",
    "evaluate_run",
    "mean_ranking_metrics",
    "ndcg_at_k",
    "precision_at_k",
    "query_metrics",
    "recall_at_k",
    "relevance_grades",
    "reciprocal_rank_at_k",
]

# The metric families, in the order sentence-transformers reports them.
METRIC_NAMES = ("accuracy", "precision", "recall", "ndcg", "mrr", "map")

Grades = Mapping[str, float]


def relevance_grades(relevant: Mapping[str, Any] | Collection[str]) -> dict[str, float]:
    """Relevance grades of one query: a mapping is taken as ``{doc_id: grade}``, a set of ids as grade 1 each."""
    if isinstance(relevant, Mapping):
        return {str(doc): float(grade) for doc, grade in relevant.items()}
    if isinstance(relevant, (str, bytes)):
        raise TypeError(f"relevant documents must be a set of ids or a mapping of id -> grade, got {relevant!r}")
    return {str(doc): 1.0 for doc in relevant}


def _relevant(grades: Grades) -> set[str]:
    return {doc for doc, grade in grades.items() if grade > 0}


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def accuracy_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """1.0 if a relevant document is among the first k results, else 0.0."""
    _check_k(k)
    return 1.0 if any(grades.get(doc, 0) > 0 for doc in ranking[:k]) else 0.0


def precision_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """Relevant documents among the first k results, divided by k."""
    _check_k(k)
    return sum(1 for doc in ranking[:k] if grades.get(doc, 0) > 0) / k


def recall_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """Share of the relevant documents found among the first k results (0 if nothing is relevant)."""
    _check_k(k)
    relevant = _relevant(grades)
    if not relevant:
        return 0.0
    return sum(1 for doc in ranking[:k] if doc in relevant) / len(relevant)


def reciprocal_rank_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """1 / rank of the first relevant document within the first k results, else 0."""
    _check_k(k)
    for rank, doc in enumerate(ranking[:k], 1):
        if grades.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def _dcg(gains: Iterable[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))


def ndcg_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """nDCG@k with linear gains (the grade); 0 if nothing is relevant."""
    _check_k(k)
    ideal = _dcg(sorted((g for g in grades.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return _dcg(max(grades.get(doc, 0), 0) for doc in ranking[:k]) / ideal


def average_precision_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """Average precision within the first k results, normalised by ``min(k, |relevant|)``."""
    _check_k(k)
    relevant = _relevant(grades)
    if not relevant:
        return 0.0
    found, total = 0, 0.0
    for rank, doc in enumerate(ranking[:k], 1):
        if doc in relevant:
            found += 1
            total += found / rank
    return total / min(k, len(relevant))


_PER_QUERY = {
    "accuracy": accuracy_at_k,
    "precision": precision_at_k,
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "mrr": reciprocal_rank_at_k,
    "map": average_precision_at_k,
}


def query_metrics(ranking: Sequence[str], grades: Grades, at_k: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """Metrics of one query: ``at_k`` maps metric names (``METRIC_NAMES``) to cut-offs; keys are ``"ndcg@10"``..."""
    out: dict[str, float] = {}
    for name, ks in at_k.items():
        if name not in _PER_QUERY:
            raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}")
        for k in ks:
            out[f"{name}@{k}"] = _PER_QUERY[name](ranking, grades, k)
    return out


def mean_ranking_metrics(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, Any] | Collection[str]],
    at_k: Mapping[str, Iterable[int]],
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean metrics over the queries of ``qrels`` that have a relevant document, and the per-query values.

    A query missing from ``rankings`` counts with an empty ranking (every metric 0).
    """
    at_k = {name: list(ks) for name, ks in at_k.items()}
    per_query: dict[str, dict[str, float]] = {}
    for qid, relevant in qrels.items():
        grades = relevance_grades(relevant)
        if not _relevant(grades):
            continue
        per_query[qid] = query_metrics(list(rankings.get(qid, ())), grades, at_k)
    keys = [f"{name}@{k}" for name, ks in at_k.items() for k in ks]
    n = len(per_query)
    means = {key: (sum(q[key] for q in per_query.values()) / n if n else 0.0) for key in keys}
    return means, per_query


def evaluate_run(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, Any] | Collection[str]],
    *,
    ndcg_k: int = 10,
    mrr_k: int = 10,
    recall_k: int = 100,
) -> dict[str, Any]:
    """Mean nDCG@10, MRR@10 and Recall@100 of a run over the queries of ``qrels`` with a relevant document.

    ``run`` maps query ids to ranked document ids (best first); ``qrels`` maps query ids to
    ``{doc_id: grade}`` (BEIR qrels) or to a set of relevant ids. Returns ``{"queries": n,
    "ndcg@10": ..., "mrr@10": ..., "recall@100": ..., "per_query": {qid: {...}}}``, computed by the
    same code as the ``SparseInformationRetrievalEvaluator``.
    """
    means, per_query = mean_ranking_metrics(run, qrels, {"ndcg": [ndcg_k], "mrr": [mrr_k], "recall": [recall_k]})
    return {"queries": len(per_query), **means, "per_query": per_query}
