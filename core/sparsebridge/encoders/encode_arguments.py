"""Checks of ``encode`` arguments that would otherwise fail late and obscurely (or not at all)."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any

from ..errors import EncodeArgumentError, EncodeInputTypeError


def check_encode_arguments(max_active_dims: Any = None, pool: Any = None) -> None:
    """Raise an ``EncodeArgumentError`` (a ValueError) or ``EncodeInputTypeError`` (a TypeError) naming
    the argument when it cannot be right.

    ``max_active_dims`` must be None or an integer >= 1 (0 and negative values used to be ignored
    silently, a float failed inside torch; all are a ValueError now); ``pool`` must be None or the dict that
    ``start_multi_process_pool`` returned (a string failed with "string indices must be integers").
    """
    bad_dims = isinstance(max_active_dims, bool) or not isinstance(max_active_dims, Integral) or max_active_dims < 1
    if max_active_dims is not None and bad_dims:
        raise EncodeArgumentError(
            f"max_active_dims must be an integer >= 1 or None, got {type(max_active_dims).__name__} {max_active_dims!r}"
        )
    if pool is not None and not (isinstance(pool, Mapping) and "processes" in pool):
        raise EncodeInputTypeError(
            f"pool must be the dict returned by start_multi_process_pool(), got {type(pool).__name__} {pool!r:.60}"
        )
