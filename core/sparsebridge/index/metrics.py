"""Ranking metrics for ``sparsebridge eval`` and ``Pipeline.evaluate``.

One implementation serves both this and the sentence-transformers-style evaluators:
``sparsebridge.evaluation.ir_metrics`` (trec_eval's definitions, checked against ir_measures in the
tests). The names here keep the defaults the pipeline has always used (nDCG@10, MRR@10, Recall@100).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..evaluation.ir_metrics import evaluate_run  # noqa: F401  (the pipeline's entry point)
from ..evaluation.ir_metrics import ndcg_at_k as _ndcg
from ..evaluation.ir_metrics import recall_at_k as _recall
from ..evaluation.ir_metrics import reciprocal_rank_at_k as _rr


def ndcg_at_k(ranking: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (as trec_eval and BEIR compute it); 0 if nothing is relevant."""
    return _ndcg(ranking, relevant, k)


def mrr_at_k(ranking: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top k (0 if none)."""
    return _rr(ranking, relevant, k)


def recall_at_k(ranking: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    """Share of the relevant documents found in the top k (0 if nothing is relevant)."""
    return _recall(ranking, relevant, k)
