"""Vectors as data, without a model: the vocabulary, encoder output -> ``SparseVector`` rows, what
produced them (``producer``, ``provenance``), the vector dataset (Parquet) and the encode cache.

Below the encoders and above the connector contract; nothing here imports torch at import time.
"""

from .convert import dense_rows, to_sparse_vectors  # the old sparsebridge.vectors module's names

__all__ = ["dense_rows", "to_sparse_vectors"]
