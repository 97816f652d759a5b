"""What the Elasticsearch and OpenSearch connectors share: both engines speak the same REST dialect
(index create with ``mappings``/``_meta``, ``_bulk``, ``_msearch``, ``bool`` filters), so one base
class does the bookkeeping and each connector fills in its client, its sparse field type and its
sparse query.

Nothing here imports a search-engine client: ``sparsebridge_opensearch`` imports this module without
needing the ``elasticsearch`` package, and loading the plugins never needs either client.

Document layout in the index (field names other than the sparse and dense ones are fixed)::

    {"text": "...", "<sparse_field>": {key: weight, ...}, "payload": {...}, "<dense_field>": [...]}

``payload`` is an object mapped with ``dynamic: "false"``: the keys named in
``IndexSpec.payload_fields`` are indexed with their type (so filters on them work), other keys are
kept in ``_source`` only. The mapping ``_meta`` holds ``IndexSpec.metadata`` plus, under the key
``"sparsebridge"``, what the connector needs to read the index back (sparse field name and how its
keys are written), so a connector opened with only ``index=...`` finds its way.

Retries: the connectors send bulk writes through the client's bulk helpers (``streaming_bulk``, or
``parallel_bulk`` with ``thread_count > 1``) with ``raise_on_error=False`` and
``raise_on_exception=False``, and do the retrying themselves around the helper: items that come
back 429 or 5xx (per item, or because the whole request did) are sent again after an exponential
backoff (``initial_backoff * 2**(n-1)``, capped at ``max_backoff``), at most ``max_retries`` times.
Doing it here rather than with the helper's own ``max_retries`` gives the same behaviour on both
clients (opensearch-py's helper retries only 429), backs off on 5xx too (the transports retry
statuses without any delay, so their status retries are turned off), and counts the retries for
:attr:`WriteResult.retries`. ``_msearch`` is retried the same way.
"""

from __future__ import annotations

import re
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from sparsebridge.connector import (
    Connector,
    ConnectorError,
    Filter,
    Hit,
    IndexMismatchError,
    IndexSpec,
    Query,
    Record,
    SearchOptions,
    SearchResult,
    WriteResult,
    check_vocabulary,
)
from sparsebridge.filters import parse_filter

META_KEY = "sparsebridge"
META_FORMAT = 1
TEXT_FIELD = "text"
PAYLOAD_FIELD = "payload"
RESERVED_FIELDS = (TEXT_FIELD, PAYLOAD_FIELD)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class OptionError(ConnectorError, ValueError):
    """A connector option is unknown, misspelt or out of range."""


# --- small pure helpers --------------------------------------------------------------------------


def one_line(text: Any, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``https://user:pw@host:9200`` -> (``https://host:9200``, (user, pw)); a URL without
    credentials comes back unchanged with None."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, (parts.username or "", parts.password or "")


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): initial * 2**(attempt-1), capped."""
    return min(cap, initial * 2 ** (attempt - 1))


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^)'\"\]\n]+)")


def connection_cause(exc: BaseException) -> str:
    """A short human cause for a connection failure ("Connection refused", "timed out"...)."""
    text = str(exc)
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # look through the chained causes too
        seen.add(id(cur))
        text += "\n" + str(cur)
        cur = cur.__cause__ or cur.__context__
    match = _ERRNO_RE.search(text)
    if match:
        return match.group(1).strip().rstrip(".")
    lowered = text.lower()
    for needle, cause in (
        ("certificate verify failed", "TLS certificate verify failed (set ca_certs, or verify_certs=False)"),
        ("wrong version number", "TLS handshake failed (is the server plain http?)"),
        ("ssl", "TLS error"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("connection refused", "Connection refused"),
        ("remote end closed", "connection closed by the server"),
        ("connection reset", "connection reset by the server"),
    ):
        if needle in lowered:
            return cause
    return one_line(str(exc), 200)


def error_reason(error: Any) -> str:
    """``type: reason`` (plus the first ``caused_by``) of an engine error object or string."""
    if isinstance(error, Mapping):
        parts = [f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")]
        caused = error.get("caused_by")
        if isinstance(caused, Mapping):
            parts.append(f"caused by {caused.get('type', 'error')}: {caused.get('reason', '')}".rstrip(": "))
        return one_line("; ".join(parts))
    return one_line(error if error is not None else "unknown error")


def filter_clauses(flt: Filter | None) -> list[dict[str, Any]]:
    """Query.filter (parsed by ``sparsebridge.filters``) -> bool filter clauses on ``payload.<key>``:
    equality is a ``term``, any-of a ``terms`` (an empty list matches nothing, as on every backend)."""
    clauses: list[dict[str, Any]] = []
    for c in parse_filter(flt):
        path = f"{PAYLOAD_FIELD}.{c.key}"
        if c.kind == "any":
            clauses.append({"terms": {path: list(c.values)}})
        else:
            clauses.append({"term": {path: {"value": c.value}}})
    return clauses


def combine(clause: dict[str, Any], filters: list[dict[str, Any]]) -> dict[str, Any]:
    """A scoring clause alone, or inside a bool with the (non-scoring) filter clauses."""
    if not filters:
        return clause
    return {"bool": {"must": [clause], "filter": filters}}


@dataclass
class Layout:
    """How an existing index stores things, as far as reading and writing it is concerned."""

    index: str
    sparse_field: str
    sparse_type: str
    sparse_keys: str  # engine-specific key scheme, recorded in _meta
    dense_field: str | None = None
    dense_size: int | None = None
    payload_fields: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


# --- the base connector --------------------------------------------------------------------------


class LuceneConnector(Connector):
    """Base of the Elasticsearch and OpenSearch connectors (see the module docstring).

    Options common to both: ``url`` or ``hosts`` (one URL or a list; credentials in a URL are
    taken out of it and used as basic auth), ``index`` (the index used before ``ensure_index``
    names one), ``username``/``password`` or ``basic_auth`` (``(user, password)`` or
    ``"user:password"``), ``ca_certs``, ``verify_certs`` (default True), ``request_timeout``
    (seconds, default 30), ``refresh`` (True: refresh the index once at the end of each
    ``write``/``delete`` so the change is searchable when it returns; ``"wait_for"``: each bulk
    request waits for the next refresh; False: leave it to the index's refresh interval),
    ``chunk_size`` (documents per bulk request, default 500), ``thread_count`` (bulk requests in
    flight; 1 = ``streaming_bulk``, more = ``parallel_bulk``), ``max_retries`` (default 3),
    ``initial_backoff`` (seconds, default 0.5), ``max_backoff`` (seconds, default 30).
    """

    engine: ClassVar[str] = "search engine"
    default_url: ClassVar[str] = "http://localhost:9200"
    secret_options: ClassVar[tuple[str, ...]] = ("api_key", "password", "token", "basic_auth", "http_auth")
    common_options: ClassVar[frozenset[str]] = frozenset(
        {
            "url",
            "hosts",
            "index",
            "username",
            "password",
            "basic_auth",
            "ca_certs",
            "verify_certs",
            "request_timeout",
            "refresh",
            "chunk_size",
            "thread_count",
            "max_retries",
            "initial_backoff",
            "max_backoff",
        }
    )
    extra_options: ClassVar[frozenset[str]] = frozenset()
    # Options of SearchOptions.backend_options this engine understands.
    search_backend_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - self.common_options - self.extra_options)
        if unknown:
            known = ", ".join(sorted(self.common_options | self.extra_options))
            raise OptionError(f"unknown {self.name} connector option(s) {', '.join(unknown)}; known: {known}")
        if options.get("url") is not None and options.get("hosts") is not None:
            raise OptionError("give the server once: url=... or hosts=..., not both")
        raw = options.get("hosts") if options.get("hosts") is not None else options.get("url")
        urls = [raw] if isinstance(raw, str) else list(raw or [self.default_url])
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise OptionError(f"url/hosts must be a URL or a list of URLs, got {raw!r}")
        auth_from_url = None
        self.urls: list[str] = []
        for u in urls:
            clean, creds = split_credentials(u if "://" in u else f"http://{u}")
            self.urls.append(clean)
            auth_from_url = auth_from_url or creds
        self.basic_auth = self._resolve_basic_auth(options, auth_from_url)
        self.request_timeout = float(options.get("request_timeout", 30))
        self.verify_certs = bool(options.get("verify_certs", True))
        self.ca_certs = options.get("ca_certs")
        refresh = options.get("refresh", True)
        if refresh not in (True, False, "wait_for"):
            raise OptionError(f"refresh must be True, False or 'wait_for', got {refresh!r}")
        self.refresh = refresh
        self.chunk_size = self._positive_int(options, "chunk_size", 500)
        self.thread_count = self._positive_int(options, "thread_count", 1)
        self.max_retries = int(options.get("max_retries", 3))
        self.initial_backoff = float(options.get("initial_backoff", 0.5))
        self.max_backoff = float(options.get("max_backoff", 30.0))
        if self.max_retries < 0 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise OptionError("max_retries, initial_backoff and max_backoff must not be negative")
        # What the repr shows: the options as given, with any URL credentials taken out.
        shown = dict(options)
        if "url" in shown and isinstance(shown["url"], str):
            shown["url"] = self.urls[0]
        if "hosts" in shown and shown["hosts"] is not None:
            shown["hosts"] = list(self.urls) if not isinstance(shown["hosts"], str) else self.urls[0]
        super().__init__(**shown)
        self._index: str | None = options.get("index")
        self._spec: IndexSpec | None = None
        self._layout: Layout | None = None
        self._client: Any = None
        self._server_version: tuple[int, ...] | None = None
        self._server_info: dict[str, Any] = {}

    # --- option helpers ---------------------------------------------------------------------------

    @staticmethod
    def _positive_int(options: Mapping[str, Any], key: str, default: int) -> int:
        value = int(options.get(key, default))
        if value <= 0:
            raise OptionError(f"{key} must be a positive integer, got {value}")
        return value

    @staticmethod
    def _resolve_basic_auth(options: Mapping[str, Any], from_url: tuple[str, str] | None) -> tuple[str, str] | None:
        given = options.get("basic_auth")
        if given is not None and (options.get("username") or options.get("password")):
            raise OptionError("give credentials once: basic_auth=... or username=/password=, not both")
        if given is not None:
            if isinstance(given, str):
                user, sep, pw = given.partition(":")
                if not sep:
                    raise OptionError("basic_auth as a string must be 'user:password'")
                return user, pw
            try:
                user, pw = given
            except (TypeError, ValueError):
                raise OptionError("basic_auth must be (user, password) or 'user:password'") from None
            return str(user), str(pw)
        if options.get("password") is not None:
            return str(options.get("username") or "elastic"), str(options["password"])
        return from_url

    def _secrets(self) -> list[str]:
        found: list[str] = []
        for key in self.secret_options:
            value = self.options.get(key)
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, (tuple, list)):
                found.extend(str(v) for v in value)
        if self.basic_auth:
            found.append(self.basic_auth[1])
        return [s for s in found if s and len(s) >= 3]

    def _scrub(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    @property
    def url(self) -> str:
        return self.urls[0] if len(self.urls) == 1 else ",".join(self.urls)

    # --- engine hooks -----------------------------------------------------------------------------

    @abstractmethod
    def _new_client(self) -> Any:
        """Build the client (imports the client library; raises ConnectorError if missing)."""

    @abstractmethod
    def _probe(self, client: Any) -> dict[str, Any]:
        """``GET /`` without retries; returns the body."""

    @abstractmethod
    def _check_server(self, client: Any, info: Mapping[str, Any]) -> None:
        """Refuse a server this connector cannot work with (version, product)."""

    @abstractmethod
    def _classify(self, exc: BaseException) -> tuple[str, int | None, Any] | None:
        """('connection'|'api'|'product', HTTP status or None, error body or None) for a client
        exception ('product': the server is not this engine), None for anything else."""

    @abstractmethod
    def _helpers(self) -> Any:
        """The client's ``helpers`` module."""

    @abstractmethod
    def _sparse_property(self, spec: IndexSpec) -> tuple[dict[str, Any], str]:
        """The mapping of the sparse field for a new index, and the key scheme it uses."""

    @abstractmethod
    def _accepted_sparse_types(self) -> tuple[str, ...]:
        """Mapping types of the sparse field this connector can work with as configured."""

    @abstractmethod
    def _dense_property(self, spec: IndexSpec) -> dict[str, Any]: ...

    @abstractmethod
    def _dense_dims(self, prop: Mapping[str, Any]) -> int | None: ...

    def _index_settings(self, spec: IndexSpec) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        for key in ("number_of_shards", "number_of_replicas", "refresh_interval"):
            if key in spec.options:
                settings[key] = spec.options[key]
        return settings

    @abstractmethod
    def _encode_sparse(self, layout: Layout, record: Record) -> dict[str, float]: ...

    @abstractmethod
    def _sparse_query(
        self, layout: Layout, query: Query, filters: list[dict[str, Any]], options: SearchOptions
    ) -> tuple[dict[str, Any], float, list[str]]:
        """(query clause incl. filters, score scale applied by the engine, notes)."""

    # Client calls whose signatures differ between the two clients.
    @abstractmethod
    def _call_exists(self, index: str) -> bool: ...
    @abstractmethod
    def _call_create(self, index: str, body: dict[str, Any]) -> None: ...
    @abstractmethod
    def _call_get_mapping(self, index: str) -> dict[str, Any]: ...
    @abstractmethod
    def _call_put_mapping(self, index: str, properties: dict[str, Any]) -> None: ...
    @abstractmethod
    def _call_msearch(self, index: str, lines: list[dict[str, Any]]) -> dict[str, Any]: ...
    @abstractmethod
    def _call_mget(self, index: str, ids: list[str]) -> dict[str, Any]: ...
    @abstractmethod
    def _call_count(self, index: str) -> int: ...
    @abstractmethod
    def _call_refresh(self, index: str) -> None: ...
    @abstractmethod
    def _call_delete_index(self, index: str) -> None: ...
    @abstractmethod
    def _bulk_client(self) -> Any:
        """The client object handed to the bulk helpers."""

    # --- errors -----------------------------------------------------------------------------------

    def _describe(self, exc: BaseException, action: str) -> str | None:
        kind = self._classify(exc)
        if kind is None:
            return None
        what, status, body = kind
        where = f"{self.engine} at {self.url}"
        if what == "connection":
            msg = f"{where}: cannot {action}: {connection_cause(exc)}"
        elif what == "product":
            msg = f"{where}: the server does not identify itself as {self.engine}; check the URL"
        elif status == 401:
            msg = f"{where}: {action}: authentication failed (HTTP 401); check api_key or username/password"
        elif status == 403:
            reason = error_reason(body.get("error") if isinstance(body, Mapping) else body)
            msg = f"{where}: {action}: permission denied (HTTP 403): {reason}"
        else:
            reason = error_reason(body.get("error", body) if isinstance(body, Mapping) else body or exc)
            msg = f"{where}: {action} failed (HTTP {status}): {reason}"
        return self._scrub(one_line(msg, 600))

    @contextmanager
    def _api(self, action: str) -> Iterator[None]:
        """Turn client exceptions into one-line ConnectorErrors naming the URL and the cause."""
        try:
            yield
        except ConnectorError:
            raise
        except Exception as exc:
            msg = self._describe(exc, action)
            if msg is None:
                raise
            raise ConnectorError(msg) from None

    def _status_of(self, exc: BaseException) -> int | None:
        kind = self._classify(exc)
        return kind[1] if kind else None

    # --- connection -------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The connected client; the first use checks the server (one request, no retries) and
        fails fast with one line naming the URL and the cause."""
        if self._client is None:
            client = self._new_client()
            with self._api("connect"):
                info = self._probe(client)
            self._server_info = dict(info)
            number = str((info.get("version") or {}).get("number", "0"))
            self._server_version = tuple(int(p) for p in re.findall(r"\d+", number)[:3]) or (0,)
            self._check_server(client, info)
            self._client = client
        return self._client

    def check(self) -> None:
        """Connect now (``GET /``, no retries): an unreachable server is reported before a model loads."""
        self.client  # noqa: B018 - connects

    @property
    def server_version(self) -> tuple[int, ...]:
        self.client  # noqa: B018 - connects
        assert self._server_version is not None
        return self._server_version

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    # --- index ------------------------------------------------------------------------------------

    def _check_spec_names(self, spec: IndexSpec) -> None:
        names = [spec.sparse_field] + ([spec.dense_field] if spec.dense_field else [])
        for name in names:
            if name in RESERVED_FIELDS or "." in name or not name:
                raise OptionError(
                    f"field name {name!r} is not allowed here: it must not contain '.' nor be one of "
                    f"{', '.join(RESERVED_FIELDS)}"
                )
        if spec.dense_field == spec.sparse_field:
            raise OptionError("sparse_field and dense_field must differ")
        if META_KEY in spec.metadata:
            raise OptionError(f"IndexSpec.metadata must not use the key {META_KEY!r} (reserved)")

    def create_body(self, spec: IndexSpec) -> tuple[dict[str, Any], Layout]:
        """The index-create request body for ``spec`` and the layout it gives."""
        self._check_spec_names(spec)
        sparse_prop, sparse_keys = self._sparse_property(spec)
        properties: dict[str, Any] = {
            TEXT_FIELD: {"type": "text"},
            spec.sparse_field: sparse_prop,
            PAYLOAD_FIELD: {
                "type": "object",
                "dynamic": "false",
                "properties": {k: {"type": t} for k, t in spec.payload_fields.items()},
            },
        }
        if spec.dense_field:
            properties[spec.dense_field] = self._dense_property(spec)
        meta = dict(spec.metadata)
        meta[META_KEY] = {
            "format": META_FORMAT,
            "sparse_field": spec.sparse_field,
            "sparse_keys": sparse_keys,
            "dense_field": spec.dense_field,
        }
        body: dict[str, Any] = {"mappings": {"dynamic": "false", "_meta": meta, "properties": properties}}
        settings = self._index_settings(spec)
        if settings:
            body["settings"] = settings
        layout = Layout(
            index=spec.name,
            sparse_field=spec.sparse_field,
            sparse_type=sparse_prop["type"],
            sparse_keys=sparse_keys,
            dense_field=spec.dense_field,
            dense_size=spec.dense_size,
            payload_fields=dict(spec.payload_fields),
            metadata=dict(spec.metadata),
        )
        return body, layout

    def ensure_index(self, spec: IndexSpec) -> None:
        self._check_spec_names(spec)
        self.client  # noqa: B018 - connect (and check the server version) first
        with self._api(f"check index {spec.name!r}"):
            exists = self._call_exists(spec.name)
        if not exists:
            body, layout = self.create_body(spec)
            try:
                with self._api(f"create index {spec.name!r}"):
                    self._call_create(spec.name, body)
            except ConnectorError as err:
                if "resource_already_exists_exception" not in str(err):
                    raise
                layout = self._check_existing(spec)  # created meanwhile by someone else
        else:
            layout = self._check_existing(spec)
        self._index, self._spec, self._layout = spec.name, spec, layout

    def _mapping_of(self, index: str) -> dict[str, Any] | None:
        """The index's mapping (``{"properties":..., "_meta":...}``), None if it does not exist."""
        try:
            with self._api(f"read the mapping of index {index!r}"):
                resp = self._call_get_mapping(index)
        except ConnectorError as err:
            if "(HTTP 404)" in str(err):
                return None
            raise
        if not resp:
            return None
        # The response is keyed by the concrete index name (which differs for an alias).
        return next(iter(resp.values())).get("mappings", {})

    def _check_existing(self, spec: IndexSpec) -> Layout:
        mapping = self._mapping_of(spec.name)
        if mapping is None:
            raise ConnectorError(f"{self.engine} at {self.url}: index {spec.name!r} vanished while checking it")
        props = mapping.get("properties", {})
        meta = dict(mapping.get("_meta") or {})
        own = meta.pop(META_KEY, {}) or {}
        fix = "drop the index (connector.drop()) and ingest again, or use another index name"
        sparse = props.get(spec.sparse_field)
        accepted = self._accepted_sparse_types()
        if sparse is None:
            raise IndexMismatchError(
                f"index {spec.name!r} exists but has no field {spec.sparse_field!r} (it has "
                f"{', '.join(sorted(props)) or 'no fields'}); {fix}"
            )
        if sparse.get("type") not in accepted:
            raise IndexMismatchError(
                f"index {spec.name!r}: field {spec.sparse_field!r} is of type {sparse.get('type')!r}, "
                f"this connector needs {' or '.join(map(repr, accepted))}; {fix}"
            )
        if spec.dense_field:
            dense = props.get(spec.dense_field)
            have = self._dense_dims(dense) if dense else None
            if dense is None or have != spec.dense_size:
                found = "is missing" if dense is None else f"has {have} dimensions ({dense.get('type')})"
                raise IndexMismatchError(
                    f"index {spec.name!r}: dense field {spec.dense_field!r} {found}, the spec needs "
                    f"{spec.dense_size} (the dense model changed?); {fix}"
                )
        payload_props = (props.get(PAYLOAD_FIELD) or {}).get("properties", {})
        missing: dict[str, Any] = {}
        for key, kind in spec.payload_fields.items():
            have_kind = (payload_props.get(key) or {}).get("type")
            if have_kind is None:
                missing[key] = {"type": kind}
            elif have_kind != kind:
                raise IndexMismatchError(
                    f"index {spec.name!r}: payload field {key!r} is mapped as {have_kind!r}, the spec "
                    f"says {kind!r}; change IndexSpec.payload_fields to match, or {fix}"
                )
        check_vocabulary(meta, spec.metadata, spec.name)
        if missing:  # adding fields to a mapping is allowed; existing documents are not re-indexed
            with self._api(f"add payload fields to index {spec.name!r}"):
                self._call_put_mapping(spec.name, {PAYLOAD_FIELD: {"type": "object", "properties": missing}})
            payload_props = {**payload_props, **missing}
        return Layout(
            index=spec.name,
            sparse_field=spec.sparse_field,
            sparse_type=sparse["type"],
            sparse_keys=own.get("sparse_keys") or self._default_keys(sparse["type"]),
            dense_field=spec.dense_field,
            dense_size=spec.dense_size,
            payload_fields={k: v.get("type") for k, v in payload_props.items()},
            metadata=meta,
        )

    @abstractmethod
    def _default_keys(self, sparse_type: str) -> str:
        """The key scheme of an index created without sparsebridge's _meta."""

    def _current(self) -> Layout:
        """The layout of the selected index, read from its mapping when ensure_index was not called."""
        if self._layout is not None:
            return self._layout
        if not self._index:
            raise ConnectorError(
                f"no {self.engine} index selected: pass index=... to the connector or call ensure_index(spec)"
            )
        mapping = self._mapping_of(self._index)
        if mapping is None:
            raise ConnectorError(f"{self.engine} at {self.url}: index {self._index!r} does not exist")
        meta = dict(mapping.get("_meta") or {})
        own = meta.pop(META_KEY, {}) or {}
        props = mapping.get("properties", {})
        sparse_field = own.get("sparse_field") or "sparse"
        sparse = props.get(sparse_field)
        if sparse is None or sparse.get("type") not in self._accepted_sparse_types():
            raise IndexMismatchError(
                f"index {self._index!r} has no sparse field this connector can search "
                f"(looked for {sparse_field!r} of type {' or '.join(self._accepted_sparse_types())})"
            )
        dense_field = own.get("dense_field")
        dense = props.get(dense_field) if dense_field else None
        self._layout = Layout(
            index=self._index,
            sparse_field=sparse_field,
            sparse_type=sparse["type"],
            sparse_keys=own.get("sparse_keys") or self._default_keys(sparse["type"]),
            dense_field=dense_field if dense else None,
            dense_size=self._dense_dims(dense) if dense else None,
            payload_fields={
                k: v.get("type") for k, v in (props.get(PAYLOAD_FIELD) or {}).get("properties", {}).items()
            },
            metadata=meta,
        )
        return self._layout

    def index_metadata(self) -> dict[str, Any] | None:
        if not self._index:
            return None
        mapping = self._mapping_of(self._index)
        if mapping is None:
            return None
        meta = dict(mapping.get("_meta") or {})
        meta.pop(META_KEY, None)
        return meta

    # --- writing ----------------------------------------------------------------------------------

    def bulk_actions(self, records: Sequence[Record]) -> list[dict[str, Any]]:
        """The bulk actions (helper format: ``_index``, ``_id``, ``_source``) for ``records``; a
        record id given twice keeps its last version."""
        layout = self._current()
        by_id: dict[str, Record] = {}
        for rec in records:
            by_id[str(rec.id)] = rec
        actions = []
        for rid, rec in by_id.items():
            source: dict[str, Any] = {
                TEXT_FIELD: rec.text,
                layout.sparse_field: self._encode_sparse(layout, rec),
                PAYLOAD_FIELD: dict(rec.payload or {}),
            }
            if layout.dense_field and rec.dense is not None:
                source[layout.dense_field] = [float(x) for x in rec.dense]
            actions.append({"_op_type": "index", "_index": layout.index, "_id": rid, "_source": source})
        return actions

    def _stream(self, actions: list[dict[str, Any]], **bulk_kwargs: Any) -> Iterable[tuple[bool, dict]]:
        helpers = self._helpers()
        common = dict(chunk_size=self.chunk_size, raise_on_error=False, raise_on_exception=False, **bulk_kwargs)
        if self.thread_count > 1:
            return helpers.parallel_bulk(self._bulk_client(), actions, thread_count=self.thread_count, **common)
        return helpers.streaming_bulk(self._bulk_client(), actions, max_retries=0, yield_ok=True, **common)

    def _run_bulk(self, actions: list[dict[str, Any]], action: str, ok_statuses: Sequence[int] = ()) -> WriteResult:
        """Send ``actions`` through the bulk helper, retrying 429/5xx items with backoff."""
        result = WriteResult()
        by_id = {str(a["_id"]): a for a in actions}
        pending = list(by_id)
        kwargs: dict[str, Any] = {}
        if self.refresh == "wait_for":
            kwargs["refresh"] = "wait_for"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(backoff_delay(attempt, self.initial_backoff, self.max_backoff))
                result.retries += 1
            retry: list[str] = []
            with self._api(action):
                for ok, item in self._stream([by_id[i] for i in pending], **kwargs):
                    _op, info = next(iter(item.items()))
                    rid = str(info.get("_id"))
                    status = info.get("status")
                    if ok or status in ok_statuses:
                        result.written.append(rid)
                        continue
                    exc = info.get("exception")
                    if exc is not None:
                        kind = self._classify(exc)
                        # A request that could not be made at all, or that auth refused, fails the
                        # whole write rather than every item one by one.
                        if kind is None or kind[0] == "connection" or status in (401, 403, 404, 413):
                            raise exc
                    if status in RETRY_STATUSES and attempt < self.max_retries:
                        retry.append(rid)
                        continue
                    reason = error_reason(info.get("error"))
                    if status in RETRY_STATUSES and self.max_retries:
                        reason += f" (HTTP {status}; gave up after {self.max_retries} retries)"
                    result.failed[rid] = self._scrub(reason)
            if not retry:
                break
            pending = retry
        return result

    def write(self, records: Sequence[Record]) -> WriteResult:
        if not records:
            return WriteResult()
        layout = self._current()
        actions = self.bulk_actions(records)
        result = self._run_bulk(actions, f"write to index {layout.index!r}")
        self._after_change(layout.index)
        return result

    def _after_change(self, index: str) -> None:
        if self.refresh is True:
            with self._api(f"refresh index {index!r}"):
                self._call_refresh(index)

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        layout = self._current()
        actions = [{"_op_type": "delete", "_index": layout.index, "_id": str(i)} for i in dict.fromkeys(ids)]
        result = self._run_bulk(actions, f"delete from index {layout.index!r}", ok_statuses=(404,))
        if result.failed:
            first = next(iter(result.failed.items()))
            raise ConnectorError(
                f"{self.engine} at {self.url}: {len(result.failed)} of {len(actions)} deletes failed "
                f"(e.g. {first[0]!r}: {first[1]})"
            )
        self._after_change(layout.index)

    def drop(self) -> None:
        if not self._index:
            return
        index = self._index
        try:
            with self._api(f"delete index {index!r}"):
                self._call_delete_index(index)
        except ConnectorError as err:
            if "(HTTP 404)" not in str(err):
                raise
        self._layout = None

    def count(self) -> int:
        if not self._index:
            return 0
        try:
            with self._api(f"count index {self._index!r}"):
                return int(self._call_count(self._index))
        except ConnectorError as err:
            if "(HTTP 404)" in str(err):
                return 0
            raise

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        layout = self._current()
        if not ids:
            return {}
        with self._api(f"get documents from index {layout.index!r}"):
            resp = self._call_mget(layout.index, [str(i) for i in ids])
        out: dict[str, dict[str, Any]] = {}
        for doc in resp.get("docs", []):
            if doc.get("found"):
                out[str(doc["_id"])] = hit_payload(doc.get("_source") or {})
        return out

    # --- searching --------------------------------------------------------------------------------

    def search_lines(
        self, queries: Sequence[Query], options: SearchOptions
    ) -> tuple[list[dict[str, Any] | None], list[float], list[list[str]]]:
        """Per query: the search body (None when there is nothing to send), the score scale the
        engine applies, and notes."""
        layout = self._current()
        unknown = sorted(set(options.backend_options) - self.search_backend_options)
        if unknown:
            raise OptionError(
                f"unknown {self.name} search option(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(self.search_backend_options)) or 'none'}"
            )
        bodies: list[dict[str, Any] | None] = []
        scales: list[float] = []
        notes: list[list[str]] = []
        for q in queries:
            these: list[str] = []
            if q.sparse is None:
                raise ConnectorError(
                    f"the {self.name} connector searches sparse vectors; this query has only a dense "
                    f"vector (dense-only search is not supported here)"
                )
            if q.dense is not None:
                these.append(
                    f"dense vector ignored: the {self.name} connector ranks by the sparse vector only "
                    f"(no hybrid fusion)"
                )
            if len(q.sparse) == 0:
                bodies.append(None)
                scales.append(1.0)
                notes.append([*these, "empty sparse query vector: no results"])
                continue
            clause, scale, extra = self._sparse_query(layout, q, filter_clauses(q.filter), options)
            body: dict[str, Any] = {"size": options.top_k, "query": clause, "track_total_hits": False}
            body["_source"] = {"includes": [TEXT_FIELD, PAYLOAD_FIELD]} if options.with_payload else False
            bodies.append(body)
            scales.append(scale)
            notes.append(these + extra)
        return bodies, scales, notes

    def search(self, queries: Sequence[Query], options: SearchOptions | None = None) -> list[SearchResult]:
        options = options or SearchOptions()
        if not queries:
            return []
        layout = self._current()
        bodies, scales, notes = self.search_lines(queries, options)
        responses: dict[int, dict[str, Any]] = {}
        pending = [i for i, b in enumerate(bodies) if b is not None]
        action = f"search index {layout.index!r}"
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            if attempt:
                time.sleep(backoff_delay(attempt, self.initial_backoff, self.max_backoff))
            lines: list[dict[str, Any]] = []
            for i in pending:
                lines += [{"index": layout.index}, bodies[i]]  # type: ignore[list-item]
            try:
                resp = self._call_msearch(layout.index, lines)
            except Exception as exc:
                if self._status_of(exc) in RETRY_STATUSES and attempt < self.max_retries:
                    continue  # the whole request was turned away: send it again
                msg = self._describe(exc, action)
                if msg is None:
                    raise
                raise ConnectorError(msg) from None
            retry = []
            for i, sub in zip(pending, resp.get("responses", [])):
                status = sub.get("status", 200)
                if "error" in sub and status in RETRY_STATUSES and attempt < self.max_retries:
                    retry.append(i)
                elif "error" in sub:
                    raise ConnectorError(
                        self._scrub(
                            f"{self.engine} at {self.url}: {action}: query {i} failed (HTTP {status}): "
                            f"{error_reason(sub['error'])}"
                        )
                    )
                else:
                    responses[i] = sub
            pending = retry
        results = []
        for i in range(len(queries)):
            sub = responses.get(i, {})
            hits = []
            for h in (sub.get("hits") or {}).get("hits", []):
                score = float(h.get("_score") or 0.0) / scales[i]
                payload = hit_payload(h.get("_source") or {}) if options.with_payload else {}
                hits.append(Hit(id=str(h["_id"]), score=score, payload=payload))
            results.append(SearchResult(hits=hits, notes=notes[i]))
        return results


def hit_payload(source: Mapping[str, Any]) -> dict[str, Any]:
    """What a Hit carries: the record's payload plus its text under ``"text"`` (a payload key
    ``"text"`` wins)."""
    payload = dict(source.get(PAYLOAD_FIELD) or {})
    if TEXT_FIELD in source:
        payload.setdefault(TEXT_FIELD, source[TEXT_FIELD])
    return payload
