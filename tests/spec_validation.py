"""Validate request bodies against the engines' official API specifications (offline copies in
``shared/specs``, see its README and PROVENANCE files).

* Elasticsearch: ``elasticsearch/elasticsearch-serverless-openapi.json`` (OpenAPI 3.0.3). Stack-only
  fields the serverless subset lacks are taken from the TypeScript source of the spec
  (``elasticsearch/ts/output/typescript/types.ts``) — see :data:`ES_STACK_OVERLAYS`.
* OpenSearch: the multi-file OpenAPI 3.1 YAML under ``opensearch/spec/``; cross-file refs
  (``_common.yaml#/components/schemas/Field``) resolve against each file's own location. The SEISMIC
  ``sparse_vector`` field and the ``neural_sparse`` ``method_parameters`` (OpenSearch 3.3+) are not in
  that spec; :data:`OS_DOC_OVERLAYS` adds them as transcribed from the OpenSearch documentation
  ("Sparse vector" field type, "Neural sparse query") — and only them.

Schemas are checked with ``jsonschema`` (Draft 2020-12, the dialect of OpenAPI 3.1; OpenAPI 3.0's
schema objects are read the same way after two rewrites):

* OpenAPI 3.0 ``nullable: true`` becomes a ``"null"`` alternative of the type.
* The Elasticsearch spec writes "exactly one of ``query_vector`` / ``inference_id``" as a member of
  an ``allOf`` with ``properties`` plus ``minProperties``/``maxProperties`` (see the specs README). In
  JSON Schema those counts would apply to the whole object, so such members get the counts
  rewritten to range over their own listed properties only.

Strict closure (:class:`ObjectClosure`): none of the Elasticsearch OpenAPI's object schemas says
``additionalProperties: false``, so read literally every object takes any key and a misspelt
``sparse_vectr`` passes. Every object schema is therefore closed unless the specification marks
it open (an ``additionalProperties`` schema: mapping ``properties``, ``_meta``, ``query_vector``,
``query_tokens``, field-name keyed queries): ``unevaluatedProperties: false`` at every value
position, composition members left open so that ``allOf`` members pool their keys and a
``oneOf``/``anyOf`` branch is held to its own. Where the OpenAPI file cannot say, the TypeScript
source decides (:func:`ts_free_form_decisions`: empty interfaces are closed, ``any`` and
``Keys & { [property: string]: V }`` types are open; :func:`ts_shortcut_overlays`: the shortcut
forms such as ``{"term": {"field": "value"}}``; :data:`ES_KEY_ENUMS`;
:data:`ES_DISCRIMINATOR_DEFAULTS`; :func:`inclusive_unions`: a TypeScript union is "any of").
:func:`single_ref_allof` only makes the strict check fast.

Responses: ``validate_response(method, path, status, payload)`` checks an answer against the
schema the specification gives that API's answer (error statuses against the error body).

Bulk and msearch bodies are NDJSON on the wire while the specs model them as one JSON array; they are
checked line by line: each bulk action line against ``OperationContainer`` (its source line, for
``index``/``create``, must be a JSON object, as the spec's array member says), each msearch header
against ``MultisearchHeader`` and each search body against the search request body schema.

Use :func:`elasticsearch_validator` / :func:`opensearch_validator` (cached), then
``validate(instance, name)`` with a schema name (``"_types.query_dsl.SparseVectorQuery"`` for
Elasticsearch, ``"_common.query_dsl:NeuralSparseQuery"`` — file stem, colon, schema — for
OpenSearch), or ``validate_request(method, path, raw_body)`` to route a captured HTTP request to the
schema of its API.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DEFAULT_SPECS = (
    Path(os.environ["SPARSEBRIDGE_SHARED"]) / "specs"
    if os.environ.get("SPARSEBRIDGE_SHARED")
    else Path(__file__).resolve().parent.parent.parent / "shared" / "specs"
)


class SpecViolation(AssertionError):
    """A body does not match the engine's specification."""


# --- generic schema rewrites ---------------------------------------------------------------------


def _walk(node: Any) -> Iterable[dict[str, Any]]:
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            yield cur
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


def openapi30_nullable(doc: Any) -> int:
    """Rewrite OpenAPI 3.0 ``nullable: true`` into JSON Schema; returns how many were rewritten.

    The Elasticsearch generator writes a ``null`` alternative of a ``oneOf`` as
    ``{"nullable": true, "type": "string"}`` next to a plain ``{"type": "string"}`` branch (e.g.
    ``_types.FieldValue``); read literally, every string would then match two branches and fail the
    ``oneOf``, so such a branch becomes ``{"type": "null"}``, which is what it stands for.
    """
    count = 0
    for node in list(_walk(doc)):
        branches = node.get("oneOf")
        if isinstance(branches, list):
            plain = {b.get("type") for b in branches if isinstance(b, dict) and not b.get("nullable")}
            for i, b in enumerate(branches):
                if isinstance(b, dict) and b.get("nullable") is True and b.get("type") in plain:
                    branches[i] = {"type": "null"}
                    count += 1
    for node in list(_walk(doc)):
        if node.get("nullable") is True:
            count += 1
            del node["nullable"]
            if isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
                if isinstance(node.get("enum"), list) and None not in node["enum"]:
                    node["enum"].append(None)
            else:
                inner = {k: node.pop(k) for k in list(node) if not k.startswith("x-") and k != "description"}
                node["anyOf"] = [inner, {"type": "null"}]
    return count


def inclusive_unions(doc: Any) -> int:
    """Rewrite ``oneOf`` into ``anyOf``: the Elasticsearch generator renders every TypeScript union
    as ``oneOf``, but a TypeScript union is inclusive, and its members overlap (``{"gte": 1}`` is
    both a ``NumberRangeQuery`` and a ``LongNumberRangeQuery``), so exclusive matching would refuse
    valid bodies. Strictness is kept: under the closure each branch is held to its own keys.
    (Discriminated unions are rewritten before this; OpenSearch's hand-written ``oneOf`` stays.)"""
    count = 0
    for node in list(_walk(doc)):
        if isinstance(node.get("oneOf"), list) and "anyOf" not in node:
            node["anyOf"] = node.pop("oneOf")
            count += 1
    return count


def single_ref_allof(doc: Any) -> int:
    """Rewrite ``{"allOf": [{"$ref": X}], ...}`` (how the Elasticsearch generator attaches a
    description to a reference) into ``{"$ref": X, ...}``: the same schema in JSON Schema 2020-12,
    where ``$ref`` may have siblings. It matters for speed under the strict closure: to find the
    keys an ``allOf`` member evaluated, ``jsonschema`` validates the member again, which doubles
    the work at every nesting level; a ``$ref`` is followed without that. Returns how many."""
    count = 0
    for node in list(_walk(doc)):
        members = node.get("allOf")
        if (
            isinstance(members, list)
            and len(members) == 1
            and isinstance(members[0], dict)
            and set(members[0]) == {"$ref"}
            and "$ref" not in node
        ):
            node["$ref"] = members[0]["$ref"]
            del node["allOf"]
            count += 1
    return count


def scoped_property_counts(doc: Any) -> int:
    """Rewrite min/maxProperties of ``allOf`` members so they count only the member's own properties."""
    count = 0
    for node in list(_walk(doc)):
        for member in node.get("allOf", []) if isinstance(node.get("allOf"), list) else []:
            if not (isinstance(member, dict) and isinstance(member.get("properties"), dict)):
                continue
            lo, hi = member.pop("minProperties", None), member.pop("maxProperties", None)
            if lo is None and hi is None:
                continue
            count += 1
            names = list(member["properties"])
            rules = []
            if lo:
                rules.append({"anyOf": [{"required": [n]} for n in names]} if lo == 1 else _at_least(names, lo))
            if hi is not None:
                rules.append({"not": _at_least(names, hi + 1)})
            member.setdefault("allOf", []).extend(rules)
    return count


def discriminated_oneof(doc: Any, local: dict[str, Any]) -> int:
    """Give ``oneOf`` + ``discriminator`` its OpenAPI meaning: the branch is chosen by the value of
    the discriminator property, not by trying every branch (``jsonschema`` ignores ``discriminator``,
    and trying the ~60 mapping property types for every field is both slow and, where branches
    overlap, wrong). The value -> branch mapping is the discriminator's own ``mapping``, or else the
    single ``enum`` value each branch gives the property; a value no branch names is refused, and
    ``x-default`` names the branch used when the property is absent. ``local`` holds the document's
    ``components/schemas`` for reading branches. Returns how many were rewritten."""
    count = 0
    for node in list(_walk(doc)):
        disc, branches = node.get("discriminator"), node.get("oneOf")
        if not (isinstance(disc, dict) and isinstance(branches, list)):
            continue
        prop = disc.get("propertyName")
        mapping: dict[str, str] = dict(disc.get("mapping") or {})
        if not mapping:
            for branch in branches:
                ref = branch.get("$ref", "") if isinstance(branch, dict) else ""
                values = _enum_of(local.get(ref.rsplit("/", 1)[-1], {}), prop, local) if ref.startswith("#/") else None
                if not values:
                    mapping = {}
                    break
                mapping.update({v: ref for v in values})
        if not mapping:
            continue
        rules: list[dict[str, Any]] = [
            {"if": {"properties": {prop: {"const": v}}, "required": [prop]}, "then": {"$ref": ref}}
            for v, ref in mapping.items()
        ]
        rules.append({"properties": {prop: {"enum": sorted(mapping)}}})
        default = disc.get("x-default")
        if default in mapping:
            rules.append({"if": {"not": {"required": [prop]}}, "then": {"$ref": mapping[default]}})
        del node["oneOf"]
        node.setdefault("allOf", []).extend(rules)
        count += 1
    return count


def _enum_of(schema: Any, prop: str, local: dict[str, Any], depth: int = 0) -> list[str] | None:
    """The enum a schema (through its ``allOf`` members and local refs) gives ``prop``."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    enum = ((schema.get("properties") or {}).get(prop) or {}).get("enum")
    if enum:
        return list(enum)
    for member in schema.get("allOf", []):
        if isinstance(member, dict) and str(member.get("$ref", "")).startswith("#/"):
            member = local.get(member["$ref"].rsplit("/", 1)[-1])
        found = _enum_of(member, prop, local, depth + 1)
        if found:
            return found
    return None


def _at_least(names: list[str], k: int) -> dict[str, Any]:
    if k > len(names):
        return {"not": {}}
    return {"anyOf": [{"required": list(c)} for c in itertools.combinations(names, k)]}


# --- strict closure: no key the specification does not name ------------------------------------

_SHAPE_CLOSED, _SHAPE_OPEN, _SHAPE_NONE = "closed", "open", "none"
_MEMBER_LISTS = ("allOf", "oneOf", "anyOf")
_VALUE_MAPS = ("properties", "patternProperties")
_VALUE_SINGLES = ("items", "additionalProperties", "unevaluatedProperties", "contains")

Resolver = Any  # (doc key, "$ref" string) -> (doc key, schema node)


class ObjectClosure:
    """Close every object schema of a set of OpenAPI documents that does not say it is open.

    None of the Elasticsearch OpenAPI's object schemas sets ``additionalProperties: false``, so read
    as JSON Schema every object takes any extra key and a misspelt ``sparse_vectr`` passes. The
    specifications mean the opposite: an object lists its fields, and an open map says so with an
    ``additionalProperties`` schema (``properties`` of a mapping, ``_meta``, ``query_vector``,
    ``query_tokens``) or is a free-form ``{"type": "object"}``.

    Closing must respect composition: a schema built as ``allOf: [Base, Own]`` allows the keys of
    both, so the members must stay open and the *use* of the schema is closed instead. That is
    what JSON Schema 2020-12's ``unevaluatedProperties: false`` does (it sees the keys evaluated by
    ``$ref``, every ``allOf`` member, the ``oneOf``/``anyOf`` branches that matched and the ``then``
    taken), so it is added at every value position (a request or response body, a property's
    value, an array's items, an open map's values, a named schema validated on its own) whose
    schema declares properties, and nowhere inside composition. A ``oneOf`` branch is thereby held
    to its own keys plus those of its ``allOf`` siblings: a key must be allowed by the branch that
    matched.
    """

    def __init__(self, docs: dict[Any, Any], resolve: Resolver) -> None:
        self.docs = docs
        self.resolve = resolve
        self._shapes: dict[tuple[Any, int], str] = {}
        self.closed = 0

    def shape(self, key: Any, node: Any) -> str:
        """``closed`` when the schema names the keys an object may have (so closing it means
        something), ``open`` when it takes any key (an ``additionalProperties`` schema, a free-form
        object, an already open ``unevaluatedProperties``), ``none`` when it says nothing about an
        object's keys (scalars, arrays, pure constraints such as ``required``)."""
        if not isinstance(node, dict):
            return _SHAPE_NONE
        memo = (key, id(node))
        if memo in self._shapes:
            return self._shapes[memo]
        self._shapes[memo] = _SHAPE_NONE  # a cycle adds nothing
        self._shapes[memo] = found = self._shape(key, node)
        return found

    def _shape(self, key: Any, node: dict[str, Any]) -> str:
        for kw in ("additionalProperties", "unevaluatedProperties"):
            if kw in node and node[kw] is not False:
                return _SHAPE_OPEN
        children = []
        if isinstance(node.get("$ref"), str):
            children.append(self.resolve(key, node["$ref"]))
        # An ``allOf`` member that is a bare ``{"type": "object"}`` is how the generators render an
        # interface that adds no field to its base (``IndexOperation extends WriteOperation {}``):
        # it names no key, and does not open its base.
        children += [(key, sub) for sub in node.get("allOf") or () if not _bare_object(sub)]
        for kw in ("oneOf", "anyOf"):
            children += [(key, sub) for sub in node.get(kw) or ()]
        children += [(key, node[kw]) for kw in ("then", "else") if kw in node]
        shapes = {self.shape(k, sub) for k, sub in children}
        if _SHAPE_OPEN in shapes:
            return _SHAPE_OPEN
        own = any(kw in node for kw in _VALUE_MAPS) or node.get("additionalProperties") is False
        if own or node.get("unevaluatedProperties") is False or _SHAPE_CLOSED in shapes:
            return _SHAPE_CLOSED
        kinds = node.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not children and "object" in kinds:
            return _SHAPE_OPEN  # a free-form object
        return _SHAPE_NONE

    def close_value(self, key: Any, node: Any) -> None:
        """Close the schema at a value position (and walk into it)."""
        if not isinstance(node, dict):
            return
        if (
            "additionalProperties" not in node
            and "unevaluatedProperties" not in node
            and self.shape(key, node) == _SHAPE_CLOSED
        ):
            node["unevaluatedProperties"] = False
            self.closed += 1
        self.walk(key, node, alone=True)

    def walk(self, key: Any, node: Any, refining: bool = False, alone: bool = False) -> None:
        """Walk a schema whose own closure is decided by its user: close the values it holds,
        leave its composition members open.

        ``refining``: the schema restates a property that another ``allOf`` member already
        declares, to narrow it (OpenSearch's ``hits: allOf: [HitsMetadata, {hits: {items:
        {_source: TDocument}}}]``); the declaring member closes that value, so nothing inside the
        restatement is closed, else each would refuse the other's keys."""
        if not isinstance(node, dict):
            return
        value = (lambda sub: self.walk(key, sub, True)) if refining else (lambda sub: self.close_value(key, sub))
        members = node.get("allOf") or []
        declared = [self.declared(key, m) for m in members]
        for kw in _VALUE_MAPS:
            for sub in (node.get(kw) or {}).values():
                value(sub)
        for kw in _VALUE_SINGLES:
            if isinstance(node.get(kw), dict):
                value(node[kw])
        for sub in node.get("prefixItems") or ():
            value(sub)
        for i, sub in enumerate(members):
            elsewhere = set().union(*(d for j, d in enumerate(declared) if j != i))
            if (
                refining
                or not isinstance(sub, dict)
                or "$ref" in sub
                or not elsewhere & set(sub.get("properties") or ())
            ):
                self.walk(key, sub, refining)
                continue
            for name, prop in (sub.get("properties") or {}).items():
                (self.walk(key, prop, True) if name in elsewhere else self.close_value(key, prop))
            self.walk(key, {k: v for k, v in sub.items() if k != "properties"}, refining)
        # The branches of a ``oneOf``/``anyOf`` that stands alone (no sibling keywords or ``allOf``
        # members can add keys to it) are closed one by one: a key must be allowed by the branch
        # that matched, not by any branch.
        own_keys = any(kw in node for kw in (*_VALUE_MAPS, "allOf")) or any(
            node.get(kw, False) is not False for kw in ("additionalProperties", "unevaluatedProperties")
        )
        for kw in ("oneOf", "anyOf"):
            for sub in node.get(kw) or ():
                if alone and not refining and not own_keys:
                    self.close_value(key, sub)
                else:
                    self.walk(key, sub, refining)
        for kw in ("then", "else"):
            self.walk(key, node.get(kw), refining)
        for sub in (node.get("dependentSchemas") or {}).values():
            self.walk(key, sub, refining)
        # ``not``, ``if`` and ``propertyNames`` are conditions: closing them would change what they test.

    def _extended(self) -> set[tuple[Any, int]]:
        """The schemas that some ``allOf`` combines with siblings (or that a ``then``/``else``
        applies beside other rules): keys may come to them from elsewhere."""
        out: set[tuple[Any, int]] = set()
        for key, doc in self.docs.items():
            for node in _walk(doc):
                members = (
                    [m for m in node.get("allOf") or () if isinstance(m, dict)]
                    if len(node.get("allOf") or ()) > 1
                    else []
                )
                members += [node[kw] for kw in ("then", "else") if isinstance(node.get(kw), dict)]
                for member in members:
                    if isinstance(member.get("$ref"), str):
                        target_key, target = self.resolve(key, member["$ref"])
                        out.add((target_key, id(target)))
                    out.add((key, id(member)))
        return out

    def declared(self, key: Any, node: Any, depth: int = 0) -> set[str]:
        """The property names a schema declares itself or through ``$ref`` and ``allOf``."""
        if not isinstance(node, dict) or depth > 20:
            return set()
        names = set(node.get("properties") or ())
        if isinstance(node.get("$ref"), str):
            names |= self.declared(*self.resolve(key, node["$ref"]), depth + 1)
        for sub in node.get("allOf") or ():
            names |= self.declared(key, sub, depth + 1)
        return names

    def close_documents(self) -> int:
        """Close every document: named schemas are walked (their users close them), the request
        and response bodies are value positions. Returns how many schemas were closed."""
        extended = self._extended()
        for key, doc in self.docs.items():
            components = doc.get("components") or {}
            for schema in (components.get("schemas") or {}).values():
                self.walk(key, schema, alone=(key, id(schema)) not in extended)
            for media in _body_media(doc):
                self.close_value(key, media.get("schema"))
        return self.closed


def _bare_object(node: Any) -> bool:
    """A schema that says only "an object" (plus annotations)."""
    return (
        isinstance(node, dict)
        and node.get("type") == "object"
        and not any(
            kw in node for kw in (*_VALUE_MAPS, *_MEMBER_LISTS, "$ref", "additionalProperties", "unevaluatedProperties")
        )
    )


def _body_media(doc: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """The media type objects (``content/<type>``) of every request body and response of a document."""
    components = doc.get("components") or {}
    holders = list((components.get("requestBodies") or {}).values())
    holders += list((components.get("responses") or {}).values())
    for item in (doc.get("paths") or {}).values():
        for op in item.values() if isinstance(item, dict) else ():
            if isinstance(op, dict):
                holders.append(op.get("requestBody") or {})
                holders += list((op.get("responses") or {}).values())
    for holder in holders:
        for media in ((holder or {}).get("content") or {}).values():
            if isinstance(media, dict):
                yield media


def json_pointer(doc: Any, fragment: str) -> Any:
    """The node a JSON pointer fragment (``/components/schemas/X``) names in ``doc``."""
    node = doc
    for part in fragment.lstrip("/").split("/") if fragment.strip("/") else ():
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# --- TypeScript (Elasticsearch stack) overlays ---------------------------------------------------

_TS_PRIMITIVES = {
    "integer": {"type": "integer"},
    "long": {"type": "integer"},
    "short": {"type": "integer"},
    "byte": {"type": "integer"},
    "uint": {"type": "integer"},
    "ulong": {"type": "integer"},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "number": {"type": "number"},
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
}


def _ts_aliases(source: str) -> dict[str, str]:
    return dict(re.findall(r"^export type (\w+) = ([^\n{}]+)$", source, flags=re.M))


def ts_type_schema(ts_type: str, aliases: dict[str, str], depth: int = 0) -> dict[str, Any]:
    """JSON schema of a simple TypeScript type: primitives, literals, unions, simple aliases."""
    ts_type = ts_type.strip()
    parts = [p.strip() for p in ts_type.split("|")]
    if len(parts) > 1:
        return {"anyOf": [ts_type_schema(p, aliases, depth + 1) for p in parts]}
    if ts_type in ("any", "unknown"):
        return {}
    if re.fullmatch(r"Record<string, (any|unknown)>", ts_type):
        return {"type": "object"}
    if ts_type in _TS_PRIMITIVES:
        return dict(_TS_PRIMITIVES[ts_type])
    if re.fullmatch(r"-?\d+(\.\d+)?", ts_type):
        return {"const": json.loads(ts_type)}
    if re.fullmatch(r"'[^']*'", ts_type):
        return {"const": ts_type[1:-1]}
    if ts_type in aliases and depth < 10:
        return ts_type_schema(aliases[ts_type], aliases, depth + 1)
    raise ValueError(f"TypeScript type {ts_type!r} is not simple enough for an overlay")


def ts_interface_fields(source: str, interface: str, fields: Iterable[str]) -> dict[str, dict[str, Any]]:
    match = re.search(rf"^export interface {re.escape(interface)}\b[^{{]*\{{(.*?)^\}}", source, flags=re.M | re.S)
    if not match:
        raise ValueError(f"interface {interface} not found in types.ts")
    aliases = _ts_aliases(source)
    found = dict(re.findall(r"^\s+(\w+)\??: ([^\n]+)$", match.group(1), flags=re.M))
    out = {}
    for name in fields:
        if name not in found:
            raise ValueError(f"{interface} has no field {name}")
        out[name] = ts_type_schema(found[name], aliases)
    return out


def ts_name(schema_name: str) -> str:
    """The TypeScript name of an OpenAPI schema name: ``_types.query_dsl.RankFeatureFunction`` ->
    ``QueryDslRankFeatureFunction``, ``_global.search._types.FieldCollapse`` -> ``SearchFieldCollapse``."""
    *spaces, last = schema_name.split(".")
    prefix = "".join(
        part.capitalize()
        for space in spaces
        if space not in ("_types", "_global")
        for part in space.strip("_").split("_")
    )
    return prefix + last


def ts_free_form_decisions(schemas: dict[str, Any], source: str) -> dict[str, str]:
    """Decide from the TypeScript source what each free-form ``{"type": "object"}`` schema of the
    OpenAPI means: an interface with no fields (or only ``[key: string]: never``) is an object that
    takes *no* key, and gets ``properties: {}`` so that the strict closure closes it; ``any``,
    ``Record<string, any>`` or ``UserDefinedValue`` stays open. Returns name -> ``closed``/``open``."""
    decisions = {}
    # ``type X = XKeys & { [property: string]: V }``: the known keys plus any other (a field name,
    # a sub-aggregation, error details). The OpenAPI renders the open part as a bare
    # ``{"type": "object"}`` ``allOf`` member, or drops it (``ErrorCause``).
    open_keyed = set(re.findall(r"^export type (\w+) = \1Keys\s*& \{ \[property: string\]", source, flags=re.M))
    for name, schema in schemas.items():
        if ts_name(name) in open_keyed:
            bare = [m for m in schema.get("allOf") or () if _bare_object(m)]
            for m in bare or [schema]:
                m["additionalProperties"] = {}
            decisions[name] = "open"
            continue
        if any(_bare_object(m) for m in schema.get("allOf") or ()):
            continue  # an interface that adds no field to its base
        if schema.get("type") != "object" or set(schema) & {
            "properties",
            "additionalProperties",
            "allOf",
            "oneOf",
            "anyOf",
            "$ref",
        }:
            continue
        ts = ts_name(name)
        interface = re.search(rf"^export interface {re.escape(ts)} \{{(.*?)^\}}", source, flags=re.M | re.S)
        if interface and re.fullmatch(r"\s*(\[key: string\]: never\s*)?", interface.group(1)):
            schema["properties"] = {}
            decisions[name] = "closed"
        else:
            decisions[name] = "open"
    return decisions


# (schema in the serverless OpenAPI, TypeScript interface of the stack spec, fields to take from it)
ES_STACK_OVERLAYS = [
    (
        "indices._types.IndexSettings",
        "IndicesIndexSettingsKeys",
        ("number_of_shards", "number_of_replicas", "refresh_interval"),
    ),
]

# (schema in the serverless OpenAPI, TypeScript type alias of the stack spec that replaces it).
# ``Metadata`` is ``Record<string, any>`` in the TypeScript source; the serverless OpenAPI renders
# its values as ``{"type": "object"}``, which would refuse ``_meta: {"model": "name"}``.
# ``FieldValue`` is ``long | double | string | boolean | null``; the OpenAPI renders both ``long``
# and ``double`` as ``{"type": "number"}`` inside a ``oneOf``, so no number could ever match once.
ES_STACK_TYPE_OVERLAYS = [("_types.Metadata", "Metadata"), ("_types.FieldValue", "FieldValue")]

# (JSON pointer into the OpenAPI file, TypeScript alias of the keys). ``BulkResponse.items`` is
# ``Partial<Record<BulkOperationType, BulkResponseItem>>[]`` in TypeScript: keyed by the operation,
# which the OpenAPI renders as an open map of any key.
ES_KEY_ENUMS = [
    ("/components/responses/bulk-200/content/application~1json/schema/properties/items/items", "BulkOperationType"),
]


def ts_shortcut_overlays(schemas: dict[str, Any], source: str) -> int:
    """Give back the shortcut forms the OpenAPI file drops and the TypeScript source keeps.

    * ``QueryContainer`` fields keyed by a field name: TypeScript writes ``term?: Partial<Record<
      Field, QueryDslTermQuery | FieldValue>>`` (``{"term": {"lang": "en"}}`` is a term query), the
      OpenAPI file only the object form.
    * ``SourceConfig``: ``boolean | SearchSourceFilter | Fields`` in TypeScript (``_source:
      ["a", "b"]``), ``boolean | SourceFilter`` in the OpenAPI file.

    Returns how many schemas were widened."""
    count = 0
    body = re.search(r"^export interface QueryDslQueryContainer \{(.*?)^\}", source, flags=re.M | re.S)
    fields = (
        dict(re.findall(r"^  (\w+)\?: Partial<Record<Field, ([^>]+)>>$", body.group(1), flags=re.M)) if body else {}
    )
    container = schemas["_types.query_dsl.QueryContainer"]["properties"]
    for name, union in fields.items():
        _, *shortcuts = [t.strip() for t in union.split("|")]
        prop = container.get(name) or {}
        if not shortcuts or not isinstance(prop.get("additionalProperties"), dict):
            continue
        alternatives = []
        for t in shortcuts:
            if t == "FieldValue":
                alternatives.append({"$ref": "#/components/schemas/_types.FieldValue"})
            elif t in _TS_PRIMITIVES:
                alternatives.append(dict(_TS_PRIMITIVES[t]))
            else:
                alternatives = []
                break
        if alternatives:
            prop["additionalProperties"] = {"anyOf": [prop["additionalProperties"], *alternatives]}
            count += 1
    if re.search(r"^export type SearchSourceConfig = boolean \| SearchSourceFilter \| Fields$", source, flags=re.M):
        schemas["_global.search._types.SourceConfig"]["oneOf"].append({"$ref": "#/components/schemas/_types.Fields"})
        count += 1
    return count


# (discriminated schema, the variant used when the tag is absent). The OpenAPI file does not say
# which variant a mapping property without ``type`` is; the TypeScript source does: of the variants
# of ``Property`` only ``ObjectProperty`` declares its tag optional (``type?: 'object'``), i.e. a
# property with ``properties`` and no ``type`` is an object field. Checked against types.ts at load.
ES_DISCRIMINATOR_DEFAULTS = [("_types.mapping.Property", "object", "MappingObjectProperty")]


def ts_discriminator_defaults(schemas: dict[str, Any], source: str) -> int:
    """Set ``x-default`` on the discriminators of :data:`ES_DISCRIMINATOR_DEFAULTS` after checking
    that the TypeScript interface of the default variant declares its tag optional."""
    for name, value, interface in ES_DISCRIMINATOR_DEFAULTS:
        disc = schemas[name]["discriminator"]
        body = re.search(rf"^export interface {interface}\b[^{{]*\{{(.*?)^\}}", source, flags=re.M | re.S)
        tag = disc["propertyName"]
        if not body or not re.search(rf"^\s+{tag}\?: '{value}'$", body.group(1), flags=re.M):
            raise ValueError(f"types.ts: {interface} does not declare an optional {tag} {value!r}")
        disc["x-default"] = value
    return len(ES_DISCRIMINATOR_DEFAULTS)


# --- OpenSearch overlays from the documentation --------------------------------------------------

# "Sparse vector" field type (OpenSearch 3.3+): https://docs.opensearch.org/latest/mappings/supported-field-types/sparse-vector/
OS_SPARSE_VECTOR_PROPERTY = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["sparse_vector"]},
        "method": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": ["seismic"]},
                "engine": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "n_postings": {"type": "integer", "exclusiveMinimum": 0},
                        "cluster_ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                        "summary_prune_ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                        "approximate_threshold": {"type": "integer", "minimum": 0},
                        "quantization_ceiling_search": {"type": "number", "exclusiveMinimum": 0},
                        "quantization_ceiling_ingest": {"type": "number", "exclusiveMinimum": 0},
                    },
                    "additionalProperties": False,
                },
            },
            "required": ["name"],
            "additionalProperties": False,
        },
    },
    "required": ["type", "method"],
}

# "Neural sparse query", fields for sparse_vector only: method_parameters.top_n / heap_factor / k / filter.
OS_NEURAL_SPARSE_METHOD_PARAMETERS = {
    "type": "object",
    "properties": {
        "top_n": {"type": "integer", "minimum": 1},
        "heap_factor": {"type": "number", "exclusiveMinimum": 0},
        "k": {"type": "integer", "minimum": 1},
        "filter": {"$ref": "#/components/schemas/QueryContainer"},
    },
    "additionalProperties": False,
}


# --- the validator -------------------------------------------------------------------------------


class SpecValidator:
    """Validates JSON bodies against named schemas of one engine's spec."""

    def __init__(self, engine: str, registry: Registry, schema_uri: Any, routes: list[tuple[str, str, Any]]):
        self.engine = engine
        self.registry = registry
        self._schema_uri = schema_uri
        self._routes = routes  # (METHOD regex, path regex, schema name | "bulk" | "msearch" | None)
        self.rewrites: dict[str, Any] = {}
        self.named_shape: Any = lambda name: None

    def schema_ref(self, name: str) -> str:
        return self._schema_uri(name)

    def errors(self, instance: Any, name: str) -> list[str]:
        schema: dict[str, Any] = {"$ref": self.schema_ref(name)}
        if self.named_shape(name) == _SHAPE_CLOSED:
            schema["unevaluatedProperties"] = False  # a named schema validated on its own is a value
        validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
        out = []
        for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            where = "/".join(map(str, err.absolute_path)) or "(root)"
            out.append(f"{where}: {err.message[:300]}")
        return out

    def validate(self, instance: Any, name: str) -> None:
        errs = self.errors(instance, name)
        if errs:
            raise SpecViolation(f"{self.engine} {name}: " + " | ".join(errs[:5]))

    # --- NDJSON bodies ---

    def validate_bulk(self, lines: list[Any]) -> int:
        ops = 0
        i = 0
        while i < len(lines):
            action = lines[i]
            self.validate(action, self.names["bulk_action"])
            op = next(iter(action))
            i += 1
            if op in ("index", "create", "update"):
                if i >= len(lines) or not isinstance(lines[i], dict):
                    raise SpecViolation(f"{self.engine} bulk: {op} action without a JSON object source line")
                i += 1
            ops += 1
        return ops

    def validate_msearch(self, lines: list[Any]) -> int:
        if len(lines) % 2:
            raise SpecViolation(f"{self.engine} msearch: odd number of lines (header/body pairs expected)")
        for header, body in zip(lines[::2], lines[1::2]):
            self.validate(header, self.names["msearch_header"])
            self.validate(body, self.names["search_body"])
        return len(lines) // 2

    def validate_request(self, method: str, path: str, body: bytes | None) -> str:
        """Validate one captured request by its API; returns the API name it was checked as."""
        path = path.split("?", 1)[0]
        targets = [t for m, p, t in self._routes if re.fullmatch(m, method) and re.fullmatch(p, path)]
        if not targets:
            raise SpecViolation(f"{self.engine}: no spec route for {method} {path}")
        target = targets[0]
        raw = (body or b"").strip()
        if target is None:
            if raw:
                raise SpecViolation(f"{self.engine}: {method} {path} takes no body, got {raw[:80]!r}")
            return "no body"
        if target in ("bulk", "msearch"):
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
            (self.validate_bulk if target == "bulk" else self.validate_msearch)(lines)
            return target
        self.validate(json.loads(raw) if raw else {}, target)
        return target

    def validate_response(self, method: str, path: str, status: int, payload: Any) -> str:
        """Validate one response (status, decoded JSON body) against the schema the specification
        gives that API's answer; an error status is checked against the engine's error body.
        Returns the schema name it was checked as."""
        path = path.split("?", 1)[0]
        if status >= 400:
            if method == "HEAD":
                return "no body"
            self.validate(payload, self.names["error"])
            return self.names["error"]
        targets = [t for m, p, t in self.response_routes if re.fullmatch(m, method) and re.fullmatch(p, path)]
        if not targets:
            raise SpecViolation(f"{self.engine}: no spec response for {method} {path}")
        if targets[0] is None:
            if payload not in (None, b"", ""):
                raise SpecViolation(f"{self.engine}: {method} {path} answers without a body, got {payload!r:.80}")
            return "no body"
        self.validate(payload, targets[0])
        return targets[0]

    names: dict[str, str] = {}
    response_routes: list[tuple[str, str, str | None]] = []


_INDEX = r"/[^/_][^/]*"


@functools.cache
def elasticsearch_validator(specs_dir: str | Path = DEFAULT_SPECS) -> SpecValidator:
    base = Path(specs_dir) / "elasticsearch"
    doc = json.loads((base / "elasticsearch-serverless-openapi.json").read_text(encoding="utf-8"))
    source = (base / "ts" / "output" / "typescript" / "types.ts").read_text(encoding="utf-8")
    rewrites: dict[str, Any] = {
        "nullable": openapi30_nullable(doc),
        "scoped_property_counts": scoped_property_counts(doc),
        "discriminator_defaults": ts_discriminator_defaults(doc["components"]["schemas"], source),
        "discriminated_oneof": discriminated_oneof(doc, doc["components"]["schemas"]),
        "single_ref_allof": single_ref_allof(doc),
    }
    schemas = doc["components"]["schemas"]
    uri = uri_key = "urn:sparsebridge:elasticsearch-serverless-openapi"
    for schema_name, interface, fields in ES_STACK_OVERLAYS:
        props = schemas[schema_name].setdefault("properties", {})
        for field_name, sub in ts_interface_fields(source, interface, fields).items():
            props.setdefault(field_name, sub)  # the serverless definition wins where it exists
    aliases = _ts_aliases(source)
    for schema_name, alias in ES_STACK_TYPE_OVERLAYS:
        schemas[schema_name] = ts_type_schema(aliases[alias], aliases)
    # Request bodies that are defined inline on a path, under a stable name.
    bodies = doc["components"].setdefault("requestBodies", {})
    bodies["indices.create"] = doc["paths"]["/{index}"]["put"]["requestBody"]
    custom = doc["paths"]["/_inference/{task_type}/{custom_inference_id}"]["put"]
    bodies["inference.put_custom"] = custom["requestBody"]
    # Answers defined inline on a path, likewise.
    answers = doc["components"].setdefault("responses", {})
    answers["info-200"] = doc["paths"]["/"]["get"]["responses"]["200"]
    answers["indices.create-200"] = doc["paths"]["/{index}"]["put"]["responses"]["200"]
    answers["indices.delete-200"] = doc["paths"]["/{index}"]["delete"]["responses"]["200"]
    answers["inference.put_custom-200"] = custom["responses"]["200"]
    rewrites["ts_free_form"] = ts_free_form_decisions(schemas, source)
    rewrites["ts_shortcuts"] = ts_shortcut_overlays(schemas, source)
    for pointer, alias in ES_KEY_ENUMS:
        json_pointer(doc, pointer)["propertyNames"] = ts_type_schema(aliases[alias], aliases)
    rewrites["inclusive_unions"] = inclusive_unions(doc)
    closure = ObjectClosure({uri_key: doc}, lambda key, ref: (key, json_pointer(doc, ref.partition("#")[2])))
    rewrites["closed"] = closure.close_documents()
    registry = Registry().with_resource(uri, Resource.from_contents(doc, default_specification=DRAFT202012))

    def schema_uri(name: str) -> str:
        if name.startswith("request:"):
            key = name.split(":", 1)[1]
            return f"{uri}#/components/requestBodies/{key}/content/application~1json/schema"
        if name.startswith("response:"):
            key = name.split(":", 1)[1]
            return f"{uri}#/components/responses/{key}/content/application~1json/schema"
        if name not in schemas:
            raise KeyError(f"no schema {name!r} in the Elasticsearch spec")
        return f"{uri}#/components/schemas/{name}"

    routes = [
        ("GET", r"/", None),
        ("HEAD|DELETE", _INDEX, None),
        ("PUT", _INDEX, "request:indices.create"),
        ("GET", _INDEX + r"/_mapping", None),
        ("PUT|POST", _INDEX + r"/_mapping", "request:indices.put_mapping"),
        ("POST|PUT", r"(" + _INDEX + r")?/_bulk", "bulk"),
        ("POST|GET", r"(" + _INDEX + r")?/_msearch", "msearch"),
        ("POST|GET", r"/_search/scroll", "request:scroll"),
        ("DELETE", r"/_search/scroll", "request:clear_scroll"),
        ("POST|GET", r"(" + _INDEX + r")?/_search", "request:search"),
        ("POST|GET", r"(" + _INDEX + r")?/_mget", "request:mget"),
        ("POST|GET", _INDEX + r"/_count", None),
        ("POST|GET", _INDEX + r"/_refresh", None),
        ("PUT", r"/_inference/sparse_embedding/[^/]+", "request:inference.put_custom"),
        ("GET|DELETE", r"/_inference/[^/]+/[^/]+", None),
    ]
    v = SpecValidator("Elasticsearch", registry, schema_uri, routes)
    v.named_shape = lambda name: closure.shape(uri_key, schemas[name]) if name in schemas else None
    v.names = {
        "bulk_action": "_global.bulk.OperationContainer",
        "msearch_header": "_global.msearch.MultisearchHeader",
        "search_body": "_global.search._types.SearchRequestBody",
        "error": "_types.ErrorResponseBase",
    }
    v.response_routes = [
        ("GET", r"/", "response:info-200"),
        ("HEAD", _INDEX, None),
        ("PUT", _INDEX, "response:indices.create-200"),
        ("DELETE", _INDEX, "response:indices.delete-200"),
        ("GET", _INDEX + r"/_mapping", "response:indices.get_mapping-200"),
        ("PUT|POST", _INDEX + r"/_mapping", "response:indices.put_mapping-200"),
        ("POST|PUT", r"(" + _INDEX + r")?/_bulk", "response:bulk-200"),
        ("POST|GET", r"(" + _INDEX + r")?/_msearch", "response:msearch-200"),
        ("POST|GET", r"/_search/scroll", "response:scroll-200"),
        ("DELETE", r"/_search/scroll", "response:clear_scroll-200"),
        ("POST|GET", r"(" + _INDEX + r")?/_search", "response:search-200"),
        ("POST|GET", r"(" + _INDEX + r")?/_mget", "response:mget-200"),
        ("POST|GET", _INDEX + r"/_count", "response:count-200"),
        ("POST|GET", _INDEX + r"/_refresh", "response:indices.refresh-200"),
        ("PUT", r"/_inference/sparse_embedding/[^/]+", "response:inference.put_custom-200"),
        ("GET", r"/_inference/[^/]+/[^/]+", "response:inference.get-200"),
        ("DELETE", r"/_inference/[^/]+/[^/]+", "response:inference.delete-200"),
    ]
    v.rewrites = rewrites
    return v


def _load_yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader


@functools.cache
def opensearch_validator(specs_dir: str | Path = DEFAULT_SPECS) -> SpecValidator:
    root = (Path(specs_dir) / "opensearch" / "spec").resolve()
    docs: dict[Path, Any] = {p: _load_yaml(p) for p in sorted(root.rglob("*.yaml"))}
    mapping = docs[root / "schemas" / "_common.mapping.yaml"]["components"]["schemas"]
    mapping["SparseVectorProperty"] = copy.deepcopy(OS_SPARSE_VECTOR_PROPERTY)
    mapping["Property"]["oneOf"].append({"$ref": "#/components/schemas/SparseVectorProperty"})
    query_dsl = docs[root / "schemas" / "_common.query_dsl.yaml"]["components"]["schemas"]
    ns_members = query_dsl["NeuralSparseQuery"]["allOf"]
    ns_members[1]["properties"]["method_parameters"] = copy.deepcopy(OS_NEURAL_SPARSE_METHOD_PARAMETERS)
    settings = docs[root / "schemas" / "indices._common.yaml"]["components"]["schemas"]["IndexSettings"]
    settings["properties"].setdefault("sparse", {"type": "boolean"})  # index.sparse, for SEISMIC fields
    rewrites = {
        "scoped_property_counts": sum(scoped_property_counts(d) for d in docs.values()),
        "discriminated_oneof": sum(
            discriminated_oneof(d, (d.get("components") or {}).get("schemas") or {}) for d in docs.values()
        ),
    }

    def resolve(key: Path, ref: str) -> tuple[Path, Any]:
        file, _, fragment = ref.partition("#")
        target = (key.parent / file).resolve() if file else key
        return target, json_pointer(docs[target], fragment)

    closure = ObjectClosure(docs, resolve)
    rewrites["closed"] = closure.close_documents()
    registry = Registry().with_resources(
        (p.as_uri(), Resource.from_contents(d, default_specification=DRAFT202012)) for p, d in docs.items()
    )

    def schema_uri(name: str) -> str:
        kind, _, rest = name.partition(":")
        if kind in ("request", "response"):
            group, key = rest.split("/", 1) if "/" in rest else ("", "")
            ns = (root / "namespaces" / f"{group}.yaml").as_uri()
            section = "requestBodies" if kind == "request" else "responses"
            body = docs[root / "namespaces" / f"{group}.yaml"]["components"][section][key]
            ctype = "application/json" if "application/json" in body["content"] else next(iter(body["content"]))
            return f"{ns}#/components/{section}/{key}/content/{ctype.replace('/', '~1')}/schema"
        stem, _, schema = name.partition(":")
        path = root / "schemas" / f"{stem}.yaml"
        if path not in docs or schema not in docs[path]["components"]["schemas"]:
            raise KeyError(f"no schema {name!r} in the OpenSearch spec")
        return f"{path.as_uri()}#/components/schemas/{schema}"

    routes = [
        ("GET", r"/", None),
        ("GET", r"/_cat/plugins", None),
        ("HEAD|DELETE", _INDEX, None),
        ("PUT", _INDEX, "request:indices/indices.create"),
        ("GET", _INDEX + r"/_mapping", None),
        ("PUT|POST", _INDEX + r"/_mapping", "request:indices/indices.put_mapping"),
        ("POST|PUT", r"(" + _INDEX + r")?/_bulk", "bulk"),
        ("POST|GET", r"(" + _INDEX + r")?/_msearch", "msearch"),
        ("POST|GET", r"/_search/scroll", "request:_core/scroll"),
        ("DELETE", r"/_search/scroll", "request:_core/clear_scroll"),
        ("POST|GET", r"(" + _INDEX + r")?/_search", "request:_core/search"),
        ("POST|GET", r"(" + _INDEX + r")?/_mget", "request:_core/mget"),
        ("POST|GET", _INDEX + r"/_count", None),
        ("POST|GET", _INDEX + r"/_refresh", None),
        ("PUT", r"/_search/pipeline/[^/]+", "request:search_pipeline/search_pipeline.put"),
        ("GET|DELETE", r"/_search/pipeline(/[^/]+)?", None),
        ("PUT", _INDEX + r"/_settings", "request:indices/indices.put_settings"),
        ("PUT", r"/_ingest/pipeline/[^/]+", "request:ingest/ingest.put_pipeline"),
        ("POST", r"/_plugins/_ml/connectors/_create", "request:ml/ml.create_connector"),
        ("POST", r"/_plugins/_ml/models/_register", "request:ml/ml.register_model"),
        ("POST", r"/_plugins/_ml/models/[^/]+/_deploy", None),
        ("GET", r"/_plugins/_ml/tasks/[^/]+", None),
    ]
    v = SpecValidator("OpenSearch", registry, schema_uri, routes)

    def named_shape(name: str) -> str | None:
        stem, _, schema = name.partition(":")
        path = root / "schemas" / f"{stem}.yaml"
        found = docs.get(path, {}).get("components", {}).get("schemas", {}).get(schema)
        return None if found is None else closure.shape(path, found)

    v.named_shape = named_shape
    v.names = {
        "bulk_action": "_core.bulk:OperationContainer",
        "msearch_header": "_core.msearch:MultisearchHeader",
        "search_body": "_core.msearch:MultisearchBody",
        "error": "_common:ErrorResponseBase",
    }
    v.response_routes = [
        ("GET", r"/", "response:_core/info@200"),
        ("GET", r"/_cat/plugins", "response:cat/cat.plugins@200"),
        ("HEAD", _INDEX, None),
        ("PUT", _INDEX, "response:indices/indices.create@200"),
        ("DELETE", _INDEX, "response:indices/indices.delete@200"),
        ("GET", _INDEX + r"/_mapping", "response:indices/indices.get_mapping@200"),
        ("PUT|POST", _INDEX + r"/_mapping", "response:indices/indices.put_mapping@200"),
        ("POST|PUT", r"(" + _INDEX + r")?/_bulk", "response:_core/bulk@200"),
        ("POST|GET", r"(" + _INDEX + r")?/_msearch", "response:_core/msearch@200"),
        ("POST|GET", r"/_search/scroll", "response:_core/scroll@200"),
        ("DELETE", r"/_search/scroll", "response:_core/clear_scroll@200"),
        ("POST|GET", r"(" + _INDEX + r")?/_search", "response:_core/search@200"),
        ("POST|GET", r"(" + _INDEX + r")?/_mget", "response:_core/mget@200"),
        ("POST|GET", _INDEX + r"/_count", "response:_core/count@200"),
        ("POST|GET", _INDEX + r"/_refresh", "response:indices/indices.refresh@200"),
        ("PUT", r"/_search/pipeline/[^/]+", "response:search_pipeline/search_pipeline.put@200"),
        ("GET", r"/_search/pipeline(/[^/]+)?", "response:search_pipeline/search_pipeline.get@200"),
        ("PUT", _INDEX + r"/_settings", "response:indices/indices.put_settings@200"),
        ("PUT", r"/_ingest/pipeline/[^/]+", "response:ingest/ingest.put_pipeline@200"),
        ("POST", r"/_plugins/_ml/connectors/_create", "response:ml/ml.create_connector@200"),
        ("POST", r"/_plugins/_ml/models/_register", "response:ml/ml.register_model@200"),
        ("POST", r"/_plugins/_ml/models/[^/]+/_deploy", "response:ml/ml.deploy_model@200"),
        ("GET", r"/_plugins/_ml/tasks/[^/]+", "response:ml/ml.get_task@200"),
    ]
    v.rewrites = rewrites
    return v
