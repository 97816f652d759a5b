"""Float32 tolerances of the tests, from a documented bound rather than from one machine's run.

PyTorch documents the defaults of ``torch.testing.assert_close`` for float32 as
``|a - b| <= atol + rtol * |b|`` with rtol 1.3e-6 and atol 1e-5: the noise of the same float32
arithmetic summed in another order (other batch shapes, other kernels). Lucene's 9 significant bits
are documented where they are used (``lucene_testkit.py``).
"""

from __future__ import annotations

import torch

FLOAT32_RTOL = 1.3e-6  # torch.testing.assert_close, documented default for float32
FLOAT32_ATOL = 1e-5  # torch.testing.assert_close, documented default for float32


def float32_close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Same shape and equal up to float32 summation order: element-wise within PyTorch's documented
    float32 tolerances (sparse tensors compared densely: an entry active on one side only must be
    below atol)."""
    actual = actual.to_dense() if actual.is_sparse else actual
    expected = expected.to_dense() if expected.is_sparse else expected
    return actual.shape == expected.shape and torch.allclose(actual, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
