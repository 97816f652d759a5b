"""sparsebridge: learned sparse vectors in and out of the search engines you already run."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The encoders pull in torch and transformers (seconds to import); the CLI, the config loader and
# the connectors don't need them, so they load on first use.
_LAZY = {
    "DenseEncoder": ".dense_encoder",
    "SparseEncoder": ".encoder",
    "SimilarityFunction": ".similarity",
    "SentenceTransformerModelCardData": ".model_card_data",
    "SparseEncoderModelCardData": ".model_card_data",
}

if TYPE_CHECKING:
    from .dense_encoder import DenseEncoder
    from .encoder import SparseEncoder
    from .model_card_data import SentenceTransformerModelCardData, SparseEncoderModelCardData
    from .similarity import SimilarityFunction


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DenseEncoder",
    "SentenceTransformerModelCardData",
    "SimilarityFunction",
    "SparseEncoder",
    "SparseEncoderModelCardData",
    "__version__",
]
