"""Search filters, parsed and checked once for every backend.

A filter is a mapping ``{field: value}``; every key must match (AND). A scalar value (string,
integer, float, boolean) means equality; a list, tuple or set means "any of these values". An empty
list means any of nothing, so the filter matches no record (on every backend alike). Anything
else (None, nested tables, NaN, an empty or non-string key) is a :class:`FilterError`.

Connectors call :func:`parse_filter` and translate the :class:`Condition` list into their engine's
query language; the pipeline calls :func:`check_filter_fields` so that a filter on a field the
index does not hold is refused instead of silently matching nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import FilterError

__all__ = ["Condition", "FilterError", "check_filter_fields", "parse_filter"]

# The index metadata key that lists the payload fields an ingest stored (see check_filter_fields).
PAYLOAD_FIELDS_KEY = "payload_fields"


@dataclass
class Condition:
    """One condition: ``key`` equals ``value`` (``kind == "eq"``) or is one of ``values`` (``"any"``;
    an empty ``values`` matches nothing)."""

    key: str
    kind: str  # "eq" | "any"
    value: Any = None
    values: list[Any] = field(default_factory=list)

    @property
    def matches_nothing(self) -> bool:
        """Whether the condition can match no record (``any`` of an empty list)."""
        return self.kind == "any" and not self.values


def parse_filter(flt: Mapping[str, Any] | None) -> list[Condition]:
    """The conditions of a filter (see the module docstring), or a :class:`FilterError` naming the key."""
    if not flt:
        return []
    if not isinstance(flt, Mapping):
        raise FilterError(f"a filter is a mapping {{field: value}}, got {type(flt).__name__}")
    out = []
    for key, value in flt.items():
        if not isinstance(key, str) or not key:
            raise FilterError(f"filter keys must be non-empty strings, got {key!r}")
        if isinstance(value, (list, tuple, set, frozenset)):
            values = list(value)
            for v in values:
                _check_scalar(key, v)
            out.append(Condition(key, "any", values=values))
        else:
            _check_scalar(key, value)
            out.append(Condition(key, "eq", value=value))
    return out


def _check_scalar(key: str, value: Any) -> None:
    if not isinstance(value, (str, int, float, bool)):
        raise FilterError(
            f"filter value for {key!r} must be a string, number or boolean (or a list of them), "
            f"got {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"filter value for {key!r} must be finite, got {value!r}")


def check_filter_fields(
    flt: Mapping[str, Any] | None, stored: Mapping[str, Any] | None, index: str, also: Iterable[str] = ()
) -> None:
    """Refuse a filter on a field that is not a payload field of the index.

    ``stored`` is the index metadata; ingests record the payload fields they store there under
    ``payload_fields``. ``also`` adds fields the current config names. An index whose metadata
    does not list its payload fields (built by an older version) is not checked.
    """
    conditions = parse_filter(flt)
    if not conditions or not stored or PAYLOAD_FIELDS_KEY not in stored:
        return
    known = {str(f) for f in stored.get(PAYLOAD_FIELDS_KEY) or ()} | set(also)
    for c in conditions:
        if c.key not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise FilterError(
                f"filter field {c.key!r} is not a payload field of index {index!r} (payload fields: {listed}); "
                f"name the field in [ingest] payload_fields and ingest again to filter on it"
            )
