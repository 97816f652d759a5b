"""encode() refuses arguments it cannot honour, with a message naming the argument (real model)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("value", [0, -1, 2.5, "8", True])
def test_max_active_dims_is_validated(encoder, value):
    with pytest.raises(ValueError, match=r"max_active_dims must be an integer >= 1 or None, got"):
        encoder.encode(["a short text"], max_active_dims=value)


def test_valid_max_active_dims_still_works(encoder):
    out = encoder.encode(["the lift of a wing in a slipstream"], max_active_dims=3, convert_to_sparse_tensor=False)
    assert int((out > 0).sum()) == 3


@pytest.mark.parametrize("pool", ["bogus", ["cpu"], {"devices": ["cpu"]}])
def test_a_pool_that_is_not_a_pool_is_refused(encoder, pool):
    with pytest.raises(TypeError, match=r"pool must be the dict returned by start_multi_process_pool\(\)"):
        encoder.encode(["text"], pool=pool)
