"""Ranking metrics over a run and qrels: nDCG@k, MRR@k, Recall@k (trec_eval's definitions)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


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
