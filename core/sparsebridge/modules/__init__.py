"""Model modules. A model is a sequence of these; each saves and loads its own config.

``MODULE_CLASSES`` maps the class names found in ``modules.json`` (sentence-transformers' or ours,
current and legacy) to the classes implementing them.
"""

from __future__ import annotations

from .base import Module
from .dense import Dense
from .normalize import Normalize
from .pooling import Pooling
from .splade_pooling import SpladePooling
from .transformer import MLMTransformer, Transformer

MODULE_CLASSES: dict[str, type[Module]] = {
    "Transformer": Transformer,
    "MLMTransformer": MLMTransformer,
    "SpladePooling": SpladePooling,
    "Pooling": Pooling,
    "Normalize": Normalize,
    "Dense": Dense,
}

__all__ = [
    "MODULE_CLASSES",
    "Dense",
    "MLMTransformer",
    "Module",
    "Normalize",
    "Pooling",
    "SpladePooling",
    "Transformer",
]
