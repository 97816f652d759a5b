"""Evaluators for sparse encoders (sentence-transformers' API) and the IR metrics they share with ``sparsebridge eval``.

``ir_metrics`` is plain Python; the evaluators need torch and load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .ir_metrics import evaluate_run, mean_ranking_metrics

_LAZY = {
    "SparseEvaluator": ".evaluator",
    "SparseInformationRetrievalEvaluator": ".sparse_information_retrieval",
}

if TYPE_CHECKING:
    from .evaluator import SparseEvaluator
    from .sparse_information_retrieval import SparseInformationRetrievalEvaluator


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SparseEvaluator", "SparseInformationRetrievalEvaluator", "evaluate_run", "mean_ranking_metrics"]
