"""Evaluators for sparse encoders (sentence-transformers' API) and the IR metrics they share with ``sparsebridge eval``.

``ir_metrics`` is plain Python; the evaluators need torch and load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from .ir_metrics import evaluate_run, mean_ranking_metrics

_LAZY = {
    "SparseEvaluator": ".evaluator",
    "SparseInformationRetrievalEvaluator": ".sparse_information_retrieval",
}

if TYPE_CHECKING:
    from .evaluator import SparseEvaluator
    from .sparse_information_retrieval import SparseInformationRetrievalEvaluator


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = ["SparseEvaluator", "SparseInformationRetrievalEvaluator", "evaluate_run", "mean_ranking_metrics"]
