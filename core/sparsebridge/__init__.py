"""sparsebridge: learned sparse vectors in and out of the search engines you already run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _moved
from ._lazy import lazy_names
from ._version import __version__

_moved.install()  # the flat layout's module names (sparsebridge.pipeline ...) still import

# The encoders pull in torch and transformers (seconds to import); the CLI, the config loader and
# the connectors don't need them, so they load on first use.
_LAZY = {
    "DenseEncoder": ".encoders.dense_encoder",
    "SparseEncoder": ".encoders.encoder",
    "SimilarityFunction": ".encoders.similarity",
    "SentenceTransformerModelCardData": ".encoders.model_card_data",
    "SparseEncoderModelCardData": ".encoders.model_card_data",
}

if TYPE_CHECKING:
    from .encoders.dense_encoder import DenseEncoder
    from .encoders.encoder import SparseEncoder
    from .encoders.model_card_data import SentenceTransformerModelCardData, SparseEncoderModelCardData
    from .encoders.similarity import SimilarityFunction


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "DenseEncoder",
    "SentenceTransformerModelCardData",
    "SimilarityFunction",
    "SparseEncoder",
    "SparseEncoderModelCardData",
    "__version__",
]
