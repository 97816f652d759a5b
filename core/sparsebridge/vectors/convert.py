"""Encoder output -> the connector's vectors: sparse rows as ``SparseVector``, dense rows as lists.

torch is imported where a tensor is converted: whoever has one has torch loaded already, and the
index side that imports this module (without encoding) does not pay for it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from ..connector import SparseVector
from .vocabulary import Vocabulary

if TYPE_CHECKING:
    import torch


def to_sparse_vectors(embeddings: torch.Tensor, vocab: Vocabulary) -> list[SparseVector]:
    """Rows of a (sparse COO or dense) ``[n, vocab]`` tensor as :class:`SparseVector`.

    Works on the coalesced COO arrays at once: one filter, one bincount and one id -> token
    lookup for the whole batch; Python only slices the results per row.
    """
    import torch

    if embeddings.dim() == 1:
        embeddings = embeddings.unsqueeze(0)
    n_rows = embeddings.shape[0]
    emb = embeddings.detach().to("cpu")
    if emb.layout == torch.sparse_coo:
        emb = emb.coalesce()
        idx, values = emb.indices(), emb.values()
    elif emb.layout == torch.strided:
        idx = emb.nonzero().t()
        values = emb[idx[0], idx[1]]
    else:
        emb = emb.to_sparse_coo().coalesce()
        idx, values = emb.indices(), emb.values()
    values = values.float()
    keep = (values > 0) & torch.isfinite(values)
    rows, cols, values = idx[0][keep], idx[1][keep], values[keep]
    counts = torch.bincount(rows, minlength=n_rows).tolist()
    cols_np = cols.numpy()
    tokens = vocab.token_array(int(embeddings.shape[1]))[cols_np].tolist()
    cols_list, values_list = cols_np.tolist(), values.tolist()
    out, start = [], 0
    for count in counts:
        end = start + count
        out.append(SparseVector(tuple(cols_list[start:end]), tuple(values_list[start:end]), tuple(tokens[start:end])))
        start = end
    return out


def dense_rows(vectors: Any) -> list[list[float]]:
    """Dense embeddings (tensor, array or lists) as one list of floats per row."""
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu").float().numpy()
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    return arr.tolist()
