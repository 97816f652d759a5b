"""Model modules. A model is a sequence of these; each saves and loads its own config.

``MODULE_CLASSES`` maps the class names found in ``modules.json`` (sentence-transformers' or ours,
current and legacy) to the classes implementing them.
"""

from __future__ import annotations

from .base import Module
from .dense import Dense
from .multi_vector_mask import MultiVectorMask
from .normalize import Normalize
from .pooling import Pooling
from .registry import MODULE_CLASSES
from .router import Router
from .sparse_auto_encoder import SparseAutoEncoder
from .sparse_static_embedding import SparseStaticEmbedding
from .splade_pooling import SpladePooling
from .transformer import MLMTransformer, Transformer

MODULE_CLASSES.update(
    {
        "Transformer": Transformer,
        "MLMTransformer": MLMTransformer,
        "SpladePooling": SpladePooling,
        "Pooling": Pooling,
        "Normalize": Normalize,
        "Dense": Dense,
        "Router": Router,
        "Asym": Router,  # the legacy name sentence-transformers still maps to Router
        "SparseStaticEmbedding": SparseStaticEmbedding,
        "SparseAutoEncoder": SparseAutoEncoder,
        "MultiVectorMask": MultiVectorMask,
    }
)

__all__ = [
    "MODULE_CLASSES",
    "Dense",
    "MLMTransformer",
    "Module",
    "MultiVectorMask",
    "Normalize",
    "Pooling",
    "Router",
    "SparseAutoEncoder",
    "SparseStaticEmbedding",
    "SpladePooling",
    "Transformer",
]
