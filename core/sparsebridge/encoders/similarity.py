"""Similarity functions over sparse or dense embeddings.

Scores follow the usual convention "higher is more similar": euclidean and manhattan return the
negated distance. Sparse inputs stay sparse for the dot product; the distance functions expand
``|a - b|`` through norms so no [n, m, vocab] tensor is ever built.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import numpy as np
import torch

from ..errors import EmbeddingShapeError


class SimilarityFunction(str, Enum):
    """The similarity functions a model may name (sentence-transformers' enum and values)."""

    COSINE = "cosine"
    DOT_PRODUCT = "dot"
    DOT = "dot"  # alias of DOT_PRODUCT
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"

    @staticmethod
    def possible_values() -> list[str]:
        """Every accepted name once: ``DOT`` is an alias of ``DOT_PRODUCT`` (one member, ``"dot"``)."""
        return [m.value for m in SimilarityFunction]

    @staticmethod
    def to_similarity_fn(
        name: str | SimilarityFunction,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The [n1, n2] similarity function called ``name``."""
        return _SIMILARITY[SimilarityFunction(name)]

    @staticmethod
    def to_similarity_pairwise_fn(
        name: str | SimilarityFunction,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The row-by-row similarity function called ``name``."""
        return _PAIRWISE[SimilarityFunction(name)]


def _as_2d(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif isinstance(x, list):
        x = torch.stack(x) if x and isinstance(x[0], torch.Tensor) else torch.tensor(x)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    return x


def _both(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """Two embedding matrices whose rows are all compared: one dimension (vocabulary) for both."""
    a, b = _as_2d(a), _as_2d(b)
    if a.shape[-1] != b.shape[-1]:
        raise EmbeddingShapeError(
            f"embeddings of {a.shape[-1]} and {b.shape[-1]} dimensions cannot be compared "
            f"(shapes {tuple(a.shape)} and {tuple(b.shape)}); encode both with the same model"
        )
    return a, b


def _pairs(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """Two embedding matrices compared row by row: the same number of rows and dimensions."""
    a, b = _both(a, b)
    if a.shape[0] != b.shape[0]:
        raise EmbeddingShapeError(
            f"pairwise similarity compares row i with row i: got {a.shape[0]} and {b.shape[0]} rows "
            f"(shapes {tuple(a.shape)} and {tuple(b.shape)}); use similarity() for every pair"
        )
    return a, b


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_sparse or b.is_sparse:
        a = a if a.is_sparse else a.to_sparse()
        b = b if b.is_sparse else b.to_sparse()
        return torch.sparse.mm(a.coalesce(), b.coalesce().t()).to_dense()
    return a @ b.t()


def _row_norms(x: torch.Tensor, p: int = 2) -> torch.Tensor:
    if x.is_sparse:
        x = x.coalesce()
        vals = x.values().abs() ** p
        norms = torch.zeros(x.shape[0], dtype=vals.dtype, device=x.device).index_add_(0, x.indices()[0], vals)
        return norms if p == 1 else norms.sqrt()
    return x.abs().pow(p).sum(-1) if p == 1 else x.norm(dim=-1)


def _rowwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise product of matching rows, summed per row."""
    if a.is_sparse or b.is_sparse:
        prod = (a.to_sparse() if not a.is_sparse else a) * (b.to_sparse() if not b.is_sparse else b)
        prod = prod.coalesce()
        out = torch.zeros(a.shape[0], dtype=prod.dtype, device=prod.device)
        return out.index_add_(0, prod.indices()[0], prod.values())
    return (a * b).sum(-1)


def dot_score(a, b) -> torch.Tensor:
    """Dot products of every row of ``a`` with every row of ``b`` (dense or sparse)."""
    return _matmul(*_both(a, b))


def cos_sim(a, b) -> torch.Tensor:
    """Cosine similarity of every row of ``a`` with every row of ``b``."""
    a, b = _both(a, b)
    na = _row_norms(a).clamp_min(1e-12)
    nb = _row_norms(b).clamp_min(1e-12)
    return _matmul(a, b) / na[:, None] / nb[None, :]


def euclidean_sim(a, b) -> torch.Tensor:
    """Negative euclidean distance of every row of ``a`` to every row of ``b``."""
    return -_distances(*_both(a, b), p=2)


def manhattan_sim(a, b) -> torch.Tensor:
    """Negative manhattan distance of every row of ``a`` to every row of ``b``."""
    return -_distances(*_both(a, b), p=1)


def _distances(a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    """Minkowski distances between all rows of a and b.

    The norm expansion |a|^2 + |b|^2 - 2ab cancels badly for near-identical rows, so sparse inputs
    are compared over the union of active dimensions: entries active in b_j contribute
    |b_jv - a_iv|^p, entries active only in a_i contribute |a_iv|^p; every term is non-negative.
    """
    if not (a.is_sparse or b.is_sparse):
        return torch.cdist(a, b, p=p, compute_mode="donot_use_mm_for_euclid_dist")
    a = (a if a.is_sparse else a.to_sparse()).coalesce()
    b = (b if b.is_sparse else b.to_sparse()).coalesce()
    b_rows, b_cols = b.indices()
    b_vals = b.values()
    out = torch.empty(a.shape[0], b.shape[0], dtype=b_vals.dtype, device=b_vals.device)
    a_idx, a_vals = a.indices(), a.values()
    # Which of a's active columns each row of b has, over a's column union only (not the vocab).
    union, a_pos = torch.unique(a_idx[1], return_inverse=True)
    lookup = torch.full((a.shape[1],), -1, dtype=torch.long, device=b_vals.device)
    lookup[union] = torch.arange(len(union), device=b_vals.device)
    b_has = torch.zeros(b.shape[0], len(union), dtype=torch.bool, device=b_vals.device)
    hit = lookup[b_cols] >= 0
    b_has[b_rows[hit], lookup[b_cols[hit]]] = True
    for i in range(a.shape[0]):
        sel = a_idx[0] == i
        cols, vals, pos = a_idx[1][sel], a_vals[sel], a_pos[sel]
        row = torch.zeros(a.shape[1], dtype=b_vals.dtype, device=b_vals.device)
        row[cols] = vals
        total = torch.zeros(b.shape[0], dtype=b_vals.dtype, device=b_vals.device)
        total.index_add_(0, b_rows, (b_vals - row[b_cols]).abs() ** p)
        total += ((~b_has[:, pos]) * (vals.abs() ** p)).sum(dim=1)
        out[i] = total.sqrt() if p == 2 else total
    return out


def pairwise_dot_score(a, b) -> torch.Tensor:
    """Dot product of ``a[i]`` and ``b[i]`` for each row."""
    return _rowwise(*_pairs(a, b))


def pairwise_cos_sim(a, b) -> torch.Tensor:
    """Cosine similarity of ``a[i]`` and ``b[i]`` for each row."""
    a, b = _pairs(a, b)
    return _rowwise(a, b) / _row_norms(a).clamp_min(1e-12) / _row_norms(b).clamp_min(1e-12)


def pairwise_euclidean_sim(a, b) -> torch.Tensor:
    """Negative euclidean distance of ``a[i]`` and ``b[i]`` for each row."""
    return -_pairwise_distances(*_pairs(a, b), p=2)


def pairwise_manhattan_sim(a, b) -> torch.Tensor:
    """Negative manhattan distance of ``a[i]`` and ``b[i]`` for each row."""
    return -_pairwise_distances(*_pairs(a, b), p=1)


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    if a.is_sparse or b.is_sparse:
        diff = ((a if a.is_sparse else a.to_sparse()) - (b if b.is_sparse else b.to_sparse())).coalesce()
        total = torch.zeros(a.shape[0], dtype=diff.dtype, device=diff.device)
        total.index_add_(0, diff.indices()[0], diff.values().abs() ** p)
    else:
        total = ((a - b).abs() ** p).sum(-1)
    return total.sqrt() if p == 2 else total


_SIMILARITY = {
    SimilarityFunction.COSINE: cos_sim,
    SimilarityFunction.DOT_PRODUCT: dot_score,
    SimilarityFunction.EUCLIDEAN: euclidean_sim,
    SimilarityFunction.MANHATTAN: manhattan_sim,
}
_PAIRWISE = {
    SimilarityFunction.COSINE: pairwise_cos_sim,
    SimilarityFunction.DOT_PRODUCT: pairwise_dot_score,
    SimilarityFunction.EUCLIDEAN: pairwise_euclidean_sim,
    SimilarityFunction.MANHATTAN: pairwise_manhattan_sim,
}
