"""The base of every evaluator that ``SparseEncoder.evaluate`` runs, with sentence-transformers' contract.

An evaluator is called as ``evaluator(model, output_path=None, epoch=-1, steps=-1)`` and returns a
dict of metrics; ``primary_metric`` names the one to select models by, and ``greater_is_better``
says which way it points.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SparseEvaluator"]


class SparseEvaluator:
    """Base class: subclasses implement ``__call__`` and set ``primary_metric``."""

    def __init__(self) -> None:
        self.greater_is_better = True
        self.primary_metric: str | None = None

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> float | dict[str, float]:
        """Evaluate ``model``; ``epoch``/``steps`` of -1 mean "not during training"."""
        raise NotImplementedError

    def prefix_name_to_metrics(self, metrics: dict[str, Any], name: str) -> dict[str, Any]:
        """Prefix every key (and the primary metric) with ``name + "_"``; numbers become Python floats."""

        def as_float(value: Any) -> Any:
            try:
                return float(value)
            except (TypeError, ValueError):
                return value

        if not name:
            return {key: as_float(value) for key, value in metrics.items()}
        prefixed = {f"{name}_{key}": as_float(value) for key, value in metrics.items()}
        if self.primary_metric is not None and not self.primary_metric.startswith(name + "_"):
            self.primary_metric = f"{name}_{self.primary_metric}"
        return prefixed

    def store_metrics_in_model_card_data(
        self, model: Any, metrics: dict[str, Any], epoch: int = 0, step: int = 0
    ) -> None:
        """Hand the metrics to the model's card data, where the model keeps one (sentence-transformers does)."""
        card_data = getattr(model, "model_card_data", None)
        setter = getattr(card_data, "set_evaluation_metrics", None)
        if callable(setter):
            setter(self, metrics, epoch=epoch, step=step)

    @property
    def description(self) -> str:
        """A readable name from the class name: ``SparseTripletEvaluator`` -> ``Sparse Triplet``."""
        name = type(self).__name__
        name = name.split("Evaluator", 1)[0] if "Evaluator" in name else name
        return re.sub(r"([a-z])([A-Z])", r"\1 \2", name)

    def get_config_dict(self) -> dict[str, Any]:
        """The settings worth recording next to the metrics (e.g. in a model card)."""
        return {}
