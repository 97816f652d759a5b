"""The base connector of Elasticsearch and OpenSearch: both engines speak the same REST dialect
(index create with ``mappings``/``_meta``, ``_bulk``, ``_msearch``, ``bool`` filters), so one base
class does the bookkeeping and each connector fills in its client, its sparse field type and its
sparse query. See :mod:`.dialect` for the document layout and :mod:`.retry` for the retry policy.

Nothing here imports a search-engine client: loading the plugins never needs either client.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sparsebridge.connector import (
    ENGINE_ENCODING_KEY,
    Connector,
    ConnectorError,
    Hit,
    IndexMismatchError,
    IndexSpec,
    ModelServer,
    Query,
    Record,
    RecordColumns,
    SearchOptions,
    SearchResult,
    SparseVector,
    WriteResult,
    check_vocabulary,
    fuse_legs,
)

from .dialect import (
    META_FORMAT,
    META_KEY,
    PAYLOAD_FIELD,
    RESERVED_FIELDS,
    TEXT_FIELD,
    Layout,
    filter_clauses,
    hit_payload,
)
from .errors import OptionError, connection_cause, error_reason, one_line
from .redaction import redact, split_credentials
from .retry import RETRY_STATUSES, backoff_delay

MODEL_SERVER_REFUSED = (
    " (the model server refused the engine's call: check [serve] api_key, then run `sparsebridge register` again)"
)


def _model_server_refused(error: Any, status: int | None) -> bool:
    """Whether an engine error is a remote model's 401 / 403 passed on: the engines' own refusals
    are security exceptions, a remote model's failures come back as a ``status_exception``."""
    return status in (401, 403) and isinstance(error, Mapping) and error.get("type") == "status_exception"


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
    # Lucene's FeatureField keeps 9 significant bits of a weight, truncated (up to 2**-8 low), and
    # scores in float32: 2**-7 bounds how far a score lies below the exact dot product.
    score_rtol: ClassVar[float] = 2.0**-7

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
        # Why the engine refused to fuse in the engine (e.g. its licence), once seen: later hybrid
        # queries go straight to the client-side fusion.
        self._fusion_refused: str | None = None

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
        return redact(text, self._secrets())

    @property
    def url(self) -> str:
        return self.urls[0] if len(self.urls) == 1 else ",".join(self.urls)

    # --- engine hooks -----------------------------------------------------------------------------

    @abstractmethod
    def _lib(self) -> Any:
        """The connector's own client module (imported on first use; ConnectorError naming the
        package to install if the client library is missing). It provides ``make_client(conn)``,
        ``probe(client)``, ``classify(exc)`` and the client's ``helpers``."""

    def _new_client(self) -> Any:
        """Build the client."""
        return self._lib().make_client(self)

    def _probe(self, client: Any) -> dict[str, Any]:
        """``GET /`` without retries; returns the body."""
        return self._lib().probe(client)

    @abstractmethod
    def _check_server(self, client: Any, info: Mapping[str, Any]) -> None:
        """Refuse a server this connector cannot work with (version, product)."""

    def _classify(self, exc: BaseException) -> tuple[str, int | None, Any] | None:
        """('connection'|'api'|'product', HTTP status or None, error body or None) for a client
        exception ('product': the server is not this engine), None for anything else."""
        return self._lib().classify(exc)

    def _helpers(self) -> Any:
        """The client's ``helpers`` module."""
        return self._lib().helpers

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

    # --- the engine encodes text (sparsebridge register, query_encoding = "engine") ---------------

    encodes_text: ClassVar[bool] = True

    def _text_query(
        self, layout: Layout, query: Query, filters: list[dict[str, Any]], options: SearchOptions
    ) -> tuple[dict[str, Any], float, list[str]]:
        """(query clause incl. filters, score scale, notes) for ``query.text``, encoded by the engine
        with the query model that ``register_model_server`` recorded in the index metadata."""
        raise ConnectorError(f"the {self.name} connector cannot send query text")

    def _engine_model(self, layout: Layout, side: str) -> str:
        """The engine's id of the ``side`` model recorded by :meth:`register_model_server`."""
        found = (layout.metadata.get(ENGINE_ENCODING_KEY) or {}).get(side)
        if not found:
            raise ConnectorError(
                f"index {layout.index!r} records no {side}-side model of the {self.engine} engine; run "
                f"`sparsebridge register` (with `sparsebridge serve` running) first"
            )
        return str(found)

    @abstractmethod
    def _register(self, server: ModelServer, layout: Layout) -> dict[str, str]:
        """Create the engine's objects that call ``server``; returns name -> id, with the ids of
        the two sides under ``"query"`` and ``"document"``."""

    def register_model_server(self, server: ModelServer) -> dict[str, str]:
        """Make the engine call ``server`` for the selected index (see the connector contract);
        the ids are recorded in the index's ``_meta`` under ``engine_encoding``."""
        layout = self._current()
        created = self._register(server, layout)
        mapping = self._mapping_of(layout.index) or {}
        meta = dict(mapping.get("_meta") or {})
        record = {"query": created["query"], "document": created["document"], "server": server.url}
        if server.info_url and server.info_url != server.url:
            record["info_url"] = server.info_url
        meta[ENGINE_ENCODING_KEY] = record
        with self._api(f"record the engine's models in index {layout.index!r}"):
            self._call_put_meta(layout.index, meta)
        layout.metadata[ENGINE_ENCODING_KEY] = record
        return created

    # Client calls whose signatures differ between the two clients.
    @abstractmethod
    def _call_put_meta(self, index: str, meta: dict[str, Any]) -> None:
        """Replace the index mapping's ``_meta`` (the engines replace it whole)."""

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
    def _bulk_client(self) -> Any:
        """The client object handed to the bulk helpers."""
        return self.client

    # --- errors -----------------------------------------------------------------------------------

    def _describe(self, exc: BaseException, action: str) -> str | None:
        kind = self._classify(exc)
        if kind is None:
            return None
        what, status, body = kind
        where = f"{self.engine} at {self.url}"
        error = body.get("error") if isinstance(body, Mapping) else None
        if what == "connection":
            msg = f"{where}: cannot {action}: {connection_cause(exc)}"
        elif what == "product":
            msg = f"{where}: the server does not identify itself as {self.engine}; check the URL"
        elif _model_server_refused(error, status):
            msg = f"{where}: {action} failed (HTTP {status}): {error_reason(error)}{MODEL_SERVER_REFUSED}"
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
            sparse_mapping=dict(sparse_prop),
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
            sparse_mapping=dict(sparse),
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
            sparse_mapping=dict(sparse),
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

    def bulk_actions_columns(self, columns: RecordColumns) -> list[dict[str, Any]]:
        """:meth:`bulk_actions` of a columnar batch: each ``_source`` built from the batch's flat
        lists (see :meth:`_encode_sparse_columns`), without a Record per row. A batch with dense
        vectors or an id given twice goes through :meth:`bulk_actions`."""
        if columns.dense is not None or len(set(columns.ids)) != len(columns):
            return self.bulk_actions(columns.records())
        layout = self._current()
        field_name, index = layout.sparse_field, layout.index
        return [
            {
                "_op_type": "index",
                "_index": index,
                "_id": rid,
                "_source": {TEXT_FIELD: text, field_name: vector, PAYLOAD_FIELD: dict(payload)},
            }
            for rid, text, vector, payload in zip(
                columns.ids, columns.texts, self._encode_sparse_columns(layout, columns), columns.payloads
            )
        ]

    def _encode_sparse_columns(self, layout: Layout, columns: RecordColumns) -> list[dict[str, float]]:
        """The sparse field's value for every row of ``columns``, as :meth:`_encode_sparse` gives it
        for one record. This default goes through the records; connectors override it."""
        return [self._encode_sparse(layout, rec) for rec in columns.records()]

    def write_columns(self, columns: RecordColumns) -> WriteResult:
        """:meth:`write` of a columnar batch (the bulk actions from :meth:`bulk_actions_columns`)."""
        if not len(columns):
            return WriteResult()
        layout = self._current()
        result = self._run_bulk(self.bulk_actions_columns(columns), f"write to index {layout.index!r}")
        self._after_change(layout.index)
        return result

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

    def _dense_clause(
        self, layout: Layout, dense: list[float], filters: list[dict[str, Any]], k: int
    ) -> dict[str, Any]:
        """The engine's k-nearest-neighbour search of ``dense`` with the filter clauses applied
        inside it (so they hold before the top-k cut). Engines without dense search refuse."""
        raise ConnectorError(f"the {self.name} connector has no dense vector search")

    def _dense_body(self, layout: Layout, clause: dict[str, Any], size: int) -> dict[str, Any]:
        """A search body that runs the dense clause alone and returns ``size`` hits."""
        raise ConnectorError(f"the {self.name} connector has no dense vector search")

    def _hybrid_plan(
        self,
        layout: Layout,
        sparse: dict[str, Any],
        dense: dict[str, Any],
        options: SearchOptions,
    ) -> SearchPlan | None:
        """One request that fuses the two legs inside the engine, or None when this engine (its
        version) cannot fuse ``options.fusion``: the legs are then fused on the client."""
        return None

    def _fallback_reason(self, error: Any, status: int | None) -> str | None:
        """Why a server-side fusion request was refused in a way the client-side fusion avoids
        (e.g. a licence that lacks the retriever), or None for a real error."""
        return None

    @staticmethod
    def _fallback_note(why: str) -> str:
        return f"{why}: the legs were fused on the client, by the same definition"

    def _body(self, query: dict[str, Any], size: int, options: SearchOptions) -> dict[str, Any]:
        return {"size": size, "query": query, "track_total_hits": False, "_source": self._source_filter(options)}

    def _source_filter(self, options: SearchOptions) -> dict[str, Any] | bool:
        return {"includes": [TEXT_FIELD, PAYLOAD_FIELD]} if options.with_payload else False

    def _check_dense(self, layout: Layout, n: int, dense: Sequence[float]) -> list[float]:
        values = [float(x) for x in dense]
        if len(values) != layout.dense_size:
            raise ConnectorError(
                f"query {n}: dense vector has {len(values)} dimensions, index {layout.index!r} stores "
                f"{layout.dense_size}"
            )
        if not all(math.isfinite(x) for x in values):
            raise ConnectorError(f"query {n}: dense vector has NaN or infinite values")
        return values

    def search_plans(self, queries: Sequence[Query], options: SearchOptions) -> list[SearchPlan]:
        """Per query: the request(s) to send and how to read them back (see :class:`SearchPlan`)."""
        layout = self._current()
        unknown = sorted(set(options.backend_options) - self.search_backend_options)
        if unknown:
            raise OptionError(
                f"unknown {self.name} search option(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(self.search_backend_options)) or 'none'}"
            )
        plans = []
        for n, q in enumerate(queries):
            notes: list[str] = []
            filters = filter_clauses(q.filter)
            dense = q.dense
            if dense is not None and layout.dense_field is None:
                if q.sparse is None and q.text is None:
                    raise ConnectorError(
                        f"query {n} has only a dense vector but index {layout.index!r} has no dense field"
                    )
                notes.append(f"index {layout.index!r} has no dense vector: searched with the sparse vector only")
                dense = None
            dense_clause = None
            if dense is not None:
                values = self._check_dense(layout, n, dense)
                dense_clause = self._dense_clause(layout, values, filters, options.candidates)
            if q.sparse is not None and len(q.sparse) == 0:
                notes.append("empty sparse query vector: it matches nothing")
                if dense_clause is None:
                    plans.append(SearchPlan(bodies=[], notes=notes))
                    continue
                # Only the dense leg can match: a hybrid of one leg is that leg's ranking.
                sparse_clause = None
            elif q.sparse is not None or q.text is not None:
                # A leg of a hybrid query contributes `candidates` hits, not top_k.
                leg = dataclasses.replace(options, top_k=options.candidates) if dense_clause is not None else options
                make = self._sparse_query if q.sparse is not None else self._text_query
                sparse_clause, scale, extra = make(layout, q, filters, leg)
                notes += extra
            else:
                sparse_clause, scale = None, 1.0
            if dense_clause is None:
                plans.append(SearchPlan([self._body(sparse_clause, options.top_k, options)], notes, scale=scale))
                continue
            if sparse_clause is None:
                body = self._dense_body(layout, dense_clause, options.top_k)
                body["_source"] = self._source_filter(options)
                plans.append(SearchPlan([body], notes))
                continue
            plan = None
            if self._fusion_refused is None:
                plan = self._hybrid_plan(layout, sparse_clause, dense_clause, options)
            client = self._client_side_plan(layout, sparse_clause, scale, dense_clause, options, notes)
            if plan is None:
                if self._fusion_refused is not None and options.fusion != "dbsf":
                    client.notes.append(self._fallback_note(self._fusion_refused))
                plans.append(client)
            else:
                plan.notes = notes + plan.notes
                plan.fallback = client
                plans.append(plan)
        return plans

    def _client_side_plan(
        self,
        layout: Layout,
        sparse: dict[str, Any],
        scale: float,
        dense: dict[str, Any],
        options: SearchOptions,
        notes: list[str],
    ) -> SearchPlan:
        dense_body = self._dense_body(layout, dense, options.candidates)
        dense_body["_source"] = self._source_filter(options)
        return SearchPlan(
            bodies=[self._body(sparse, options.candidates, options), dense_body],
            notes=list(notes),
            scale=scale,
            fuse=True,
        )

    def search(self, queries: Sequence[Query], options: SearchOptions | None = None) -> list[SearchResult]:
        options = options or SearchOptions()
        if not queries:
            return []
        layout = self._current()
        plans = self.search_plans(queries, options)
        answers = self._run_plans(layout, plans)
        retry = {}
        for i, plan in enumerate(plans):
            why = answers[i] if isinstance(answers[i], str) else None
            if why is not None:
                assert plan.fallback is not None
                self._fusion_refused = why
                plan.fallback.notes.append(self._fallback_note(why))
                retry[i] = plan.fallback
        if retry:
            again = self._run_plans(layout, list(retry.values()))
            for i, answer in zip(retry, again):
                plans[i], answers[i] = retry[i], answer
        results = []
        for plan, answer in zip(plans, answers):
            assert not isinstance(answer, str)
            legs = [self._hits(resp, plan.scale if k == 0 else 1.0, options) for k, resp in enumerate(answer)]
            hits = fuse_legs(legs, options) if plan.fuse else (legs[0][: options.top_k] if legs else [])
            results.append(SearchResult(hits=hits, notes=list(plan.notes)))
        return results

    def _hits(self, resp: Mapping[str, Any], scale: float, options: SearchOptions) -> list[Hit]:
        hits = []
        for h in (resp.get("hits") or {}).get("hits", []):
            score = float(h.get("_score") or 0.0) / scale
            payload = hit_payload(h.get("_source") or {}) if options.with_payload else {}
            hits.append(Hit(id=str(h["_id"]), score=score, payload=payload))
        return hits

    def _run_plans(self, layout: Layout, plans: Sequence[SearchPlan]) -> list[list[dict[str, Any]] | str]:
        """Send every plan's bodies (those without a search pipeline in one ``_msearch``); per plan,
        its responses in order, or the reason its server-side fusion was refused (see
        :meth:`_fallback_reason`)."""
        action = f"search index {layout.index!r}"
        batch = [(p, b) for p, plan in enumerate(plans) if plan.pipeline is None for b in plan.bodies]
        responses = self._msearch(layout, [b for _, b in batch], action)
        out: list[list[dict[str, Any]] | str] = [[] for _ in plans]
        for (p, _), (sub, status) in zip(batch, responses):
            if isinstance(out[p], str):
                continue
            if "error" in sub:
                why = self._fallback_reason(sub["error"], status) if plans[p].fallback is not None else None
                if why is not None:
                    out[p] = why
                    continue
                hint = MODEL_SERVER_REFUSED if _model_server_refused(sub["error"], status) else ""
                raise ConnectorError(
                    self._scrub(
                        f"{self.engine} at {self.url}: {action}: query {p} failed (HTTP {status}): "
                        f"{error_reason(sub['error'])}{hint}"
                    )
                )
            out[p].append(sub)  # type: ignore[union-attr]
        for p, plan in enumerate(plans):
            if plan.pipeline is not None:
                out[p] = [self._search_through(layout, body, plan.pipeline, action) for body in plan.bodies]
        return out

    def _search_through(self, layout: Layout, body: dict[str, Any], pipeline: str, action: str) -> dict[str, Any]:
        """One ``_search`` through a search pipeline, retried on 429/5xx like ``_msearch``."""
        action = f"{action} through search pipeline {pipeline!r}"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(backoff_delay(attempt, self.initial_backoff, self.max_backoff))
            try:
                return self._call_search(layout.index, body, pipeline)
            except Exception as exc:
                if self._status_of(exc) in RETRY_STATUSES and attempt < self.max_retries:
                    continue
                msg = self._describe(exc, action)
                if msg is None:
                    raise
                raise ConnectorError(msg) from None
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt returns or raises

    def _call_search(self, index: str, body: dict[str, Any], pipeline: str) -> dict[str, Any]:
        raise ConnectorError(f"the {self.name} connector has no search pipelines")

    def _msearch(self, layout: Layout, bodies: list[dict[str, Any]], action: str) -> list[tuple[dict[str, Any], int]]:
        """One ``_msearch`` for ``bodies``, retrying 429/5xx (whole request or per search) with
        backoff; per body, (its response or error object, HTTP status)."""
        results: dict[int, tuple[dict[str, Any], int]] = {}
        pending = list(range(len(bodies)))
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            if attempt:
                time.sleep(backoff_delay(attempt, self.initial_backoff, self.max_backoff))
            lines: list[dict[str, Any]] = []
            for i in pending:
                lines += [{"index": layout.index}, bodies[i]]
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
                status = int(sub.get("status", 200))
                if "error" in sub and status in RETRY_STATUSES and attempt < self.max_retries:
                    retry.append(i)
                else:
                    results[i] = (sub, status)
            pending = retry
        return [results.get(i, ({}, 200)) for i in range(len(bodies))]

    # --- export -----------------------------------------------------------------------------------

    def _export_source(self) -> Any:
        """The ``_source`` part of the export request (engines that leave vectors out of
        ``_source`` by default are asked for them here)."""
        return True

    def _decode_sparse(self, layout: Layout, stored: Mapping[str, Any], index_of: Mapping[str, int]) -> list[str]:
        """The stored sparse object's keys as vocabulary tokens (engine-specific key schemes)."""
        return [str(k) for k in stored]

    def export(self, vocabulary: Sequence[str], batch_size: int = 500) -> Iterator[list[Record]]:
        """Every document back as a Record, through the client's ``helpers.scan`` (scroll API).

        Keys become vocabulary ids again through ``vocabulary``; a key the vocabulary lacks fails
        the export naming the document. Lucene quantises the indexed weight, but ``_source`` keeps
        the one written; where the engine rebuilds ``_source`` vectors from the index, the weights
        are Lucene's 9-bit ones and :meth:`export_quantisation` says so.
        """
        layout = self._current()
        tokens = list(vocabulary)
        index_of: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            index_of.setdefault(tok, i)
        body = {"query": {"match_all": {}}, "_source": self._export_source()}
        self._export_9bit = True
        seen_values = False
        batch: list[Record] = []
        with self._api(f"export index {layout.index!r}"):
            hits = self._helpers().scan(self.client, query=body, index=layout.index, size=batch_size, scroll="5m")
            for hit in hits:
                source = hit.get("_source") or {}
                rid = str(hit["_id"])
                stored = source.get(layout.sparse_field)
                if not isinstance(stored, Mapping):
                    raise ConnectorError(
                        f"{self.engine} at {self.url}: document {rid!r} of index {layout.index!r} has no "
                        f"{layout.sparse_field!r} object in _source; cannot export its vector"
                    )
                triples = []
                for key, tok in zip(stored, self._decode_sparse(layout, stored, index_of)):
                    by_id = layout.sparse_keys == "index"  # keyed by token id (OpenSearch SEISMIC)
                    i = (int(tok) if tok.isdigit() else None) if by_id else index_of.get(tok)
                    if i is None or i >= len(tokens):
                        raise ConnectorError(
                            f"document {rid!r} of index {layout.index!r}: sparse key {key!r} is not in the "
                            f"model's vocabulary; export it with the model the index was built with"
                        )
                    w = float(stored[key])
                    seen_values = True
                    if self._export_9bit and not _fits_9_bits(w):
                        self._export_9bit = False
                    triples.append((i, tokens[i], w))
                dense = source.get(layout.dense_field) if layout.dense_field else None
                batch.append(
                    Record(
                        id=rid,
                        text=str(source.get(TEXT_FIELD) or ""),
                        sparse=SparseVector.from_pairs(triples),
                        payload=dict(source.get(PAYLOAD_FIELD) or {}),
                        dense=[float(x) for x in dense] if dense is not None else None,
                    )
                )
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch
        self._export_9bit = self._export_9bit and seen_values

    def export_quantisation(self) -> str:
        # Weights whose float32 low 15 mantissa bits are all zero are what Lucene's FeatureField
        # keeps (the upper 17 bits of the float); real model weights almost never look like that.
        return "lucene-9bit" if getattr(self, "_export_9bit", False) else "none"


@dataclass
class SearchPlan:
    """How one query runs.

    ``bodies``: the search bodies to send (none: nothing can match; one: the whole answer; two,
    with ``fuse``: the sparse and the dense leg, fused on the client by :func:`fuse_legs`).
    ``scale``: the factor the engine applied to the sparse scores (scores are divided by it).
    ``pipeline``: an OpenSearch search pipeline; such bodies go through ``_search`` one by one,
    because ``_msearch`` has no per-search pipeline. ``fallback``: the client-side plan to use
    when the engine refuses the server-side fusion for a reason :meth:`LuceneConnector._fallback_reason`
    names.
    """

    bodies: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    scale: float = 1.0
    fuse: bool = False
    pipeline: str | None = None
    fallback: SearchPlan | None = None


def keyed_rows(offsets: Sequence[int], keys: Sequence[str], weights: Sequence[float]) -> list[dict[str, float]]:
    """One ``{key: weight}`` per row of flat lists (row ``k`` is ``offsets[k]:offsets[k + 1]``); a key
    that two ids of a row share keeps the larger weight, as the engine would."""
    out = []
    for a, b in zip(offsets, offsets[1:]):
        row = dict(zip(keys[a:b], weights[a:b]))
        if len(row) != b - a:
            row = {}
            for key, w in zip(keys[a:b], weights[a:b]):
                row[key] = max(w, row.get(key, 0.0))
        out.append(row)
    return out


def _fits_9_bits(weight: float) -> bool:
    """Whether ``weight`` (as float32) has only 9 significant bits, as Lucene stores features."""
    import struct

    (bits,) = struct.unpack("<I", struct.pack("<f", weight))
    return bits & 0x7FFF == 0
