"""Model modules. A model is a sequence of these; each saves and loads its own config.

``MODULE_CLASSES`` maps the class names found in ``modules.json`` (sentence-transformers' or ours)
to the classes implementing them.
"""

from __future__ import annotations

from .base import Module
from .splade_pooling import SpladePooling
from .transformer import MLMTransformer, Transformer

MODULE_CLASSES: dict[str, type[Module]] = {
    "Transformer": Transformer,
    "MLMTransformer": MLMTransformer,
    "SpladePooling": SpladePooling,
}

__all__ = ["MODULE_CLASSES", "MLMTransformer", "Module", "SpladePooling", "Transformer"]
