"""Request bodies, as TEI's OpenAPI document defines them, plus the engines' connector bodies.

Parsed with pydantic in strict mode: a number where a string belongs, ``"true"`` for a boolean or an
unknown key is refused (422) rather than coerced or ignored, so nothing a client sent is silently
dropped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidInput


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmbedSparseRequest(_Body):
    """TEI's ``EmbedSparseRequest``. ``truncate`` unset means the server's ``auto_truncate``."""

    inputs: str | list[str]
    truncate: bool | None = None
    # TEI's OpenAPI spells the values "Left" / "Right"; its server also takes them in lower case.
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    prompt_name: str | None = None


class EmbedRequest(EmbedSparseRequest):
    """TEI's ``EmbedRequest``: the sparse request plus ``normalize`` and ``dimensions``."""

    normalize: bool = True
    dimensions: int | None = Field(default=None, ge=1)


class ElasticsearchSparseRequest(_Body):
    """What an Elasticsearch ``custom`` inference endpoint sends with the request template in the
    README: ``${input}`` (the texts) and ``${input_type}`` (``ingest`` or ``search``)."""

    input: str | list[str]
    input_type: Literal["ingest", "search", "document", "query"] | None = None


class OpenSearchSparseRequest(_Body):
    """What an OpenSearch ML connector sends with the ``request_body`` in the README."""

    texts: str | list[str]


def parse(model: type[_Body], raw: bytes) -> _Body:
    """``raw`` JSON as ``model``, or :class:`InvalidInput` with one line naming the first bad field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from None


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    # A union reports one error per branch; the deepest location is the one that names the item.
    error = max(errors, key=lambda e: sum(isinstance(p, int) for p in e["loc"]))
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON: {error['msg']}"
    parts = [str(p) for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "bool")))]
    where = ".".join(parts) or "body"
    if error["type"] == "extra_forbidden":
        return f"unknown field {where!r}"
    return f"{where}: {error['msg']}"
