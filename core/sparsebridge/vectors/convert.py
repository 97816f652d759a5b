"""Encoder output -> the connector's vectors: sparse rows as ``SparseVector``, dense rows as lists.

torch is imported where a tensor is converted: whoever has one has torch loaded already, and the
index side that imports this module (without encoding) does not pay for it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..connector import SparseVector
from .vocabulary import Vocabulary

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SparseRows:
    """Sparse ``[n_rows, dimension]`` rows as numpy COO arrays (row, column and value per entry):
    what an encoder that runs without torch returns (see ``encoders.static_query``)."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]


def to_sparse_vectors(embeddings: torch.Tensor | SparseRows, vocab: Vocabulary) -> list[SparseVector]:
    """Rows of a (sparse COO or dense) ``[n, vocab]`` tensor, or of :class:`SparseRows`, as
    :class:`SparseVector`.

    Works on the coalesced COO arrays at once: one filter, one bincount and one id -> token
    lookup for the whole batch; Python only slices the results per row.
    """
    if isinstance(embeddings, SparseRows):
        n_rows, dimension = embeddings.shape
        rows, cols, values = embeddings.rows, embeddings.cols, embeddings.values.astype(np.float32)
    else:
        (n_rows, dimension), rows, cols, values = _tensor_entries(embeddings)
    keep = (values > 0) & np.isfinite(values)
    rows, cols, values = rows[keep], cols[keep], values[keep]
    counts = np.bincount(rows, minlength=n_rows).tolist()
    tokens = vocab.token_array(int(dimension))[cols].tolist()
    cols_list, values_list = cols.tolist(), values.tolist()
    out, start = [], 0
    for count in counts:
        end = start + count
        out.append(SparseVector(tuple(cols_list[start:end]), tuple(values_list[start:end]), tuple(tokens[start:end])))
        start = end
    return out


def _tensor_entries(embeddings: torch.Tensor) -> tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray]:
    """The shape (a 1-D tensor is one row) and the row, column and value of each entry of a tensor
    in any layout, coalesced, as numpy arrays."""
    import torch

    emb = embeddings.detach().to("cpu")
    if emb.dim() == 1:
        emb = emb.unsqueeze(0)
    if emb.layout == torch.sparse_coo:
        emb = emb.coalesce()
        idx, values = emb.indices(), emb.values()
    elif emb.layout == torch.strided:
        idx = emb.nonzero().t()
        values = emb[idx[0], idx[1]]
    else:
        emb = emb.to_sparse_coo().coalesce()
        idx, values = emb.indices(), emb.values()
    return (int(emb.shape[0]), int(emb.shape[1])), idx[0].numpy(), idx[1].numpy(), values.float().numpy()


def dense_rows(vectors: Any) -> list[list[float]]:
    """Dense embeddings (tensor, array or lists) as one list of floats per row."""
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu").float().numpy()
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    return arr.tolist()
