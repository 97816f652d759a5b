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

# The index metadata keys that list the payload fields an ingest stored, and the declared types
# of those that have one (see check_filter_fields).
PAYLOAD_FIELDS_KEY = "payload_fields"
PAYLOAD_TYPES_KEY = "payload_types"
# What a field of each declared type can equal (bool is an int in Python, never a number here).
_HOLDS = {
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "boolean": ("true or false", lambda v: isinstance(v, bool)),
    "keyword": ("a string", lambda v: isinstance(v, str)),
    "text": ("a string", lambda v: isinstance(v, str)),
}


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
    ``payload_fields``, and the declared types under ``payload_types``. ``also`` adds fields the
    current config names (with their types when it is a mapping). An index whose metadata does not
    list its payload fields (built by an older version) is not checked for names. A value that a
    field of a declared type can never hold (``year=abc`` on an integer field) is refused too: it
    would silently match nothing.
    """
    conditions = parse_filter(flt)
    types = {**dict((stored or {}).get(PAYLOAD_TYPES_KEY) or {}), **(dict(also) if isinstance(also, Mapping) else {})}
    for c in conditions:
        _check_type(c, types.get(c.key), index)
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


def _check_type(condition: Condition, kind: str | None, index: str) -> None:
    if kind not in _HOLDS:
        return  # no declared type: the values stored decide, as the engine compares them
    what, holds = _HOLDS[kind]
    for value in [condition.value] if condition.kind == "eq" else condition.values:
        if not holds(value):
            raise FilterError(
                f"filter value {value!r} for {condition.key!r} cannot match: the field is of type {kind!r} in "
                f"index {index!r}, which holds {what}"
            )
