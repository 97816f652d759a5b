"""The TOML config: which model, which backend, how to ingest and search.

Example (every key is optional; with no file at all sparsebridge uses the packaged SPLADE model and
an embedded Qdrant Edge index in ``./sparsebridge-data``)::

    [model]
    name_or_path = "packaged:splade"   # or a local folder / Hugging Face model id
    device = "cpu"                     # default: the encoder's choice (cuda when available)
    batch_size = 32
    max_active_dims = 256              # keep only the strongest dimensions per vector
    query_side = "full"                # or "inference-free"
    precision = "fp32"                 # or "bf16", "int8" (fp32, with a warning, where the CPU lacks them)

    [backend]                          # swapping backends = changing this section only
    connector = "elasticsearch"        # a name from `sparsebridge connectors`
    index = "docs"
    url = "https://localhost:9200"     # every other key is a connection option of the connector
    password = "${ELASTIC_PASSWORD}"   # ${VAR} reads the environment; the value stays hidden

    [ingest]
    id_field = "_id"
    text_fields = ["title", "text"]
    payload_fields = { title = "text", lang = "keyword" }   # or a list of names
    split_passages = true

    [search]
    top_k = 10
    hybrid = false
    fusion = "rrf"                     # or "linear" (min-max, weighted) or "dbsf"
    rrf_k = 60
    weights = { sparse = 1.0, dense = 1.0 }   # fusion = "linear" only
    dense_model = "packaged:minilm"
    query_encoding = "client"          # or "engine": the engine encodes query text through
                                       # `sparsebridge serve` (after `sparsebridge register`)

    [serve]                            # sparsebridge serve (see sparsebridge.serve)
    host = "127.0.0.1"                 # loopback unless told otherwise
    port = 8080
    api_key = "${SPARSEBRIDGE_API_KEY}"   # optional: clients send "Authorization: Bearer <key>"
    batching = true                    # join concurrent requests into one model pass
    max_batch_tokens = 16384           # token budget of one pass
    max_batch_requests = 128           # texts in one pass
    max_client_batch_size = 32         # texts in one request (more: 413)
    max_queue = 512                    # texts waiting (more: 429)
    max_request_bytes = 2000000        # request body size (more: 413)
    auto_truncate = true               # truncate long texts when a request does not say

Values are data only: nothing in a config is run through a shell or evaluated. ``${VAR}`` is the
one substitution (``$${`` writes a literal ``${``); an unset variable is an error naming the file,
the key and the variable. Values read from the environment and values of secret keys
(``password``, ``api_key``...) are wrapped in :class:`Secret`, which never shows its value.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..connector import FUSIONS, PAYLOAD_TYPES, Connector
from ..connector.kit import redact_url  # noqa: F401  (the kit's, re-exported: sparsebridge.config.redact_url)
from ..defaults import (
    DEFAULT_BACKEND_OPTIONS,
    DEFAULT_CONNECTOR,
    DEFAULT_DENSE_MODEL,
    DEFAULT_INDEX,
    DEFAULT_MODEL,
)
from ..errors import ConfigError  # noqa: F401  (defined in errors.py; re-exported here)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib
    except ImportError:  # pragma: no cover
        tomllib = None  # type: ignore[assignment]

CONFIG_ENV = "SPARSEBRIDGE_CONFIG"
DEFAULT_CONFIG_FILE = "sparsebridge.toml"
QUERY_SIDES = ("full", "inference-free")
QUERY_ENCODINGS = ("client", "engine")
PRECISIONS = ("fp32", "bf16", "int8")  # as sparsebridge.precision.PRECISIONS (not imported: it loads torch)
SECRET_KEYS = frozenset(Connector.secret_options) | {"secret", "client_secret", "aws_secret_access_key"}
_ENV_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Secret:
    """A configuration value that must never be shown: ``repr``/``str`` print ``***``.

    Call :meth:`reveal` where the real value is needed (handing it to a client).
    """

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def reveal(self) -> Any:
        """The secret value itself: only for handing it to a client."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", repr(type(self._value))))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def reveal(value: Any) -> Any:
    """The plain value behind Secrets, recursively (lists and tables)."""
    if isinstance(value, Secret):
        return reveal(value.reveal())
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def redact(value: Any) -> Any:
    """A printable copy: Secrets become ``"***"``, and so do credentials inside URLs
    (``http://elastic:PASS@host:9200`` -> ``http://***@host:9200``). Every place that shows a
    config goes through here."""
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def check_device(config: Config) -> None:
    """Refuse ``[model] device`` when it is not a torch device or this torch build lacks it.

    Done before any model loads (torch would fail later with an ``AssertionError`` deep inside
    the first forward pass), and only when a device is configured, so that commands without a
    model never import torch.
    """
    device = config.model.device
    if device is None:
        return
    from ..encoders.runtime.placement import device_problem  # imports torch: only when a device is configured

    problem = device_problem(device)
    if problem is not None:
        raise ConfigError(f"{config.source}: [model] device = {device!r}: {problem}")


# --------------------------------------------------------------------------- settings


@dataclass
class ModelSettings:
    """``[model]``: which sparse model, on which device, in which precision, with which batch size."""

    name_or_path: str = DEFAULT_MODEL
    device: str | None = None
    batch_size: int = 32
    max_active_dims: int | None = None
    query_side: str = "full"
    precision: str = "fp32"


@dataclass
class BackendSettings:
    """``[backend]``: the connector, the index and its fields, and the connector's own options."""

    connector: str = DEFAULT_CONNECTOR
    index: str = DEFAULT_INDEX
    sparse_field: str = "sparse"
    dense_field: str = "dense"
    index_options: dict[str, Any] = field(default_factory=dict)
    # Connection options handed to the connector class; may hold Secrets.
    options: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BACKEND_OPTIONS))

    def connector_options(self) -> dict[str, Any]:
        """The options with secrets revealed: only for passing to the connector constructor."""
        return reveal(self.options)

    def __repr__(self) -> str:
        return (
            f"BackendSettings(connector={self.connector!r}, index={self.index!r}, "
            f"sparse_field={self.sparse_field!r}, dense_field={self.dense_field!r}, "
            f"index_options={redact(self.index_options)!r}, options={redact(self.options)!r})"
        )


@dataclass
class IngestSettings:
    """``[ingest]``: where documents keep id, text and payload, and whether long texts become passages."""

    # None: the document's "_id", else its "id", else a sha256 of its text.
    id_field: str | None = None
    # None: what the corpus reader says (title + text for BEIR, JSONL and stdlib docs).
    text_fields: tuple[str, ...] | None = None
    # None: the corpus reader's choice. Values are payload types (indexed for filters) or None.
    payload_fields: dict[str, str | None] | None = None
    split_passages: bool = False
    passage_tokens: int | None = None  # default: the model's max_seq_length minus special tokens
    passage_overlap: int = 0
    # Write into (and search) an index built by another model; see sparsebridge.provenance.
    allow_model_change: bool = False


@dataclass
class SearchSettings:
    """``[search]``: how many hits, and hybrid search (dense model, fusion method and its parameters)."""

    top_k: int = 10
    hybrid: bool = False
    fusion: str = "rrf"
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)  # (sparse, dense), for fusion = "linear"
    prefetch_limit: int | None = None
    dense_model: str = DEFAULT_DENSE_MODEL
    query_encoding: str = "client"  # or "engine": queries go to the engine as text (no model here)


@dataclass
class ServeSettings:
    """``[serve]``: where ``sparsebridge serve`` listens and the limits it enforces."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: Secret | None = None
    batching: bool = True
    max_batch_tokens: int = 16384
    max_batch_requests: int = 128
    max_client_batch_size: int = 32
    max_queue: int = 512
    max_request_bytes: int = 2_000_000
    auto_truncate: bool = True


@dataclass
class Config:
    """A whole config: one settings object per section, and the file it came from (``source``)."""

    model: ModelSettings = field(default_factory=ModelSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    source: str = "<defaults>"

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, check_connector: bool = True) -> Config:
        """The config at ``path`` (see :func:`load_config`)."""
        return load_config(path, check_connector=check_connector)

    def to_dict(self) -> dict[str, Any]:
        """A printable view (secrets redacted) shaped like the TOML file."""
        backend = {
            "connector": self.backend.connector,
            "index": self.backend.index,
            "sparse_field": self.backend.sparse_field,
            "dense_field": self.backend.dense_field,
            **redact(self.backend.options),
        }
        if self.backend.index_options:
            backend["index_options"] = redact(self.backend.index_options)
        ingest = {f.name: getattr(self.ingest, f.name) for f in fields(self.ingest)}
        if ingest["text_fields"] is not None:
            ingest["text_fields"] = list(ingest["text_fields"])
        return {
            "source": self.source,
            "model": {f.name: getattr(self.model, f.name) for f in fields(self.model)},
            "backend": backend,
            "ingest": ingest,
            "search": {f.name: getattr(self.search, f.name) for f in fields(self.search)},
            "serve": {f.name: redact(getattr(self.serve, f.name)) for f in fields(self.serve)},
        }


# --------------------------------------------------------------------------- loading


def find_config_file(path: str | os.PathLike | None = None) -> Path | None:
    """The config to use: ``path``, else ``$SPARSEBRIDGE_CONFIG``, else ``./sparsebridge.toml``
    when it exists, else None (defaults)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    env = os.environ.get(CONFIG_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p} (from ${CONFIG_ENV})")
        return p
    p = Path(DEFAULT_CONFIG_FILE)
    return p if p.is_file() else None


def load_config(path: str | os.PathLike | None = None, *, check_connector: bool = True) -> Config:
    """Read and validate a config (see :func:`find_config_file` for which one)."""
    file = find_config_file(path)
    if file is None:
        return config_from_dict({}, source="<defaults>", check_connector=check_connector)
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise ConfigError(f"{file}: reading TOML on Python 3.10 needs the 'tomli' package")
    try:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc
    return config_from_dict(data, source=str(file), check_connector=check_connector)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>", *, check_connector: bool = True) -> Config:
    """Validate parsed TOML (or an equivalent dict) into a :class:`Config`."""
    v = _Validator(source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a table at the top level")
    sections = ("model", "backend", "ingest", "search", "serve")
    for key in data:
        if key not in sections:
            raise ConfigError(f"{source}: unknown section [{key}]; allowed: {', '.join(f'[{s}]' for s in sections)}")
    for key in sections:
        if key in data and not isinstance(data[key], Mapping):
            raise ConfigError(f"{source}: {key} must be a table ([{key}]), got {type(data[key]).__name__}")

    model = v.section("model", data.get("model", {}))
    m = ModelSettings(
        name_or_path=model.string("name_or_path", DEFAULT_MODEL),
        device=model.string("device", None),
        batch_size=model.integer("batch_size", 32, minimum=1),
        max_active_dims=model.integer("max_active_dims", None, minimum=1),
        query_side=model.choice("query_side", "full", QUERY_SIDES),
        precision=model.choice("precision", "fp32", PRECISIONS),
    )
    model.finish()

    if "backend" in data:
        backend = v.section("backend", data["backend"], interpolate_secret=True)
        connector = backend.string("connector", required=True)
        b = BackendSettings(
            connector=connector,
            index=backend.string("index", DEFAULT_INDEX),
            sparse_field=backend.string("sparse_field", "sparse"),
            dense_field=backend.string("dense_field", "dense"),
            index_options=backend.table("index_options", {}),
            options={},
        )
        b.options = backend.rest()
    else:
        b = BackendSettings()
    if check_connector:
        _check_connector(b, source, "backend" in data)

    ingest = v.section("ingest", data.get("ingest", {}))
    i = IngestSettings(
        id_field=ingest.string("id_field", None),
        text_fields=ingest.string_list("text_fields", None),
        payload_fields=ingest.payload_fields("payload_fields"),
        split_passages=ingest.boolean("split_passages", False),
        passage_tokens=ingest.integer("passage_tokens", None, minimum=8),
        passage_overlap=ingest.integer("passage_overlap", 0, minimum=0),
        allow_model_change=ingest.boolean("allow_model_change", False),
    )
    if i.passage_tokens is not None and i.passage_overlap >= i.passage_tokens:
        raise ConfigError(
            f"{source}: [ingest] passage_overlap = {i.passage_overlap}: must be smaller than "
            f"passage_tokens ({i.passage_tokens})"
        )
    ingest.finish()

    search = v.section("search", data.get("search", {}))
    s = SearchSettings(
        top_k=search.integer("top_k", 10, minimum=1),
        hybrid=search.boolean("hybrid", False),
        fusion=search.choice("fusion", "rrf", FUSIONS),
        rrf_k=search.integer("rrf_k", 60, minimum=1),
        weights=_fusion_weights(search),
        prefetch_limit=search.integer("prefetch_limit", None, minimum=1),
        dense_model=search.string("dense_model", DEFAULT_DENSE_MODEL),
        query_encoding=search.choice("query_encoding", "client", QUERY_ENCODINGS),
    )
    search.finish()

    serve = v.section("serve", data.get("serve", {}), interpolate_secret=True)
    api_key = serve.string("api_key", None)
    sv = ServeSettings(
        host=serve.string("host", "127.0.0.1"),
        port=serve.integer("port", 8080, minimum=0),
        api_key=None if api_key is None else Secret(api_key),
        batching=serve.boolean("batching", True),
        max_batch_tokens=serve.integer("max_batch_tokens", 16384, minimum=1),
        max_batch_requests=serve.integer("max_batch_requests", 128, minimum=1),
        max_client_batch_size=serve.integer("max_client_batch_size", 32, minimum=1),
        max_queue=serve.integer("max_queue", 512, minimum=1),
        max_request_bytes=serve.integer("max_request_bytes", 2_000_000, minimum=1),
        auto_truncate=serve.boolean("auto_truncate", True),
    )
    if sv.max_client_batch_size > sv.max_queue:
        raise serve.error(
            "max_client_batch_size",
            sv.max_client_batch_size,
            f"must not exceed max_queue ({sv.max_queue}), or a full request could never be admitted",
        )
    serve.finish()
    return Config(model=m, backend=b, ingest=i, search=s, serve=sv, source=source)


def _fusion_weights(search: _Section) -> tuple[float, float]:
    """``[search] weights = { sparse = 0.3, dense = 0.7 }``: the legs' weights of linear fusion."""
    value = search.table("weights", {"sparse": 1.0, "dense": 1.0})
    out = []
    for leg in ("sparse", "dense"):
        w = value.get(leg, 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 or w == float("inf"):
            raise search.error(f"weights.{leg}", w, "expected a number >= 0")
        out.append(float(w))
    extra = sorted(set(value) - {"sparse", "dense"})
    if extra:
        raise search.error("weights", value, f"unknown leg {extra[0]!r}; the legs are 'sparse' and 'dense'")
    if sum(out) <= 0:
        raise search.error("weights", value, "the two weights must not both be 0")
    return out[0], out[1]


def connector_class(backend: BackendSettings, source: str, *, explicit: bool = True) -> type[Connector]:
    """The connector class ``[backend] connector`` names, from the plugin registry (the contract's
    public side: the config never imports a plugin's modules); a name no installed plugin has is one
    ConfigError naming the file and the key (``explicit``: the config file names the connector)."""
    from ..connector import plugins

    name = backend.connector
    where = f"{source}: [backend] connector = {name!r}" if explicit else f"default connector {name!r}"
    try:
        return plugins.get_connector_class(name)
    except plugins.UnknownConnectorError as exc:
        hint = "" if explicit else " (install it with: pip install 'sparsebridge[qdrant]')"
        raise ConfigError(f"{where}: {exc}{hint}") from exc


def _check_connector(b: BackendSettings, source: str, explicit: bool) -> None:
    cls = connector_class(b, source, explicit=explicit)
    # Keys the connector class declares secret (its public ``secret_options``) are hidden too.
    for key in cls.secret_options:
        if key in b.options and not isinstance(b.options[key], Secret):
            b.options[key] = Secret(b.options[key])


class _Validator:
    def __init__(self, source: str) -> None:
        self.source = source

    def section(self, name: str, data: Mapping[str, Any], interpolate_secret: bool = False) -> _Section:
        return _Section(self.source, name, dict(data), interpolate_secret)


_MISSING = object()


class _Section:
    """Reads typed keys out of one table, remembering which ones were used."""

    def __init__(self, source: str, name: str, data: dict[str, Any], secrets: bool) -> None:
        self.source, self.name, self.secrets = source, name, secrets
        self.raw = data
        self.used: set[str] = set()

    # -- helpers
    def _where(self, key: str) -> str:
        return f"{self.source}: [{self.name}] {key}"

    def _shown(self, key: str, value: Any) -> str:
        if isinstance(value, Secret) or key in SECRET_KEYS:
            return "***"
        return repr(redact(value))

    def error(self, key: str, value: Any, problem: str) -> ConfigError:
        return ConfigError(f"{self._where(key)} = {self._shown(key, value)}: {problem}")

    def _get(self, key: str, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.raw:
            if required:
                raise ConfigError(f"{self.source}: [{self.name}] missing key {key!r}")
            return _MISSING
        value, from_env = _interpolate(self.raw[key], self._where(key))
        if from_env and self.secrets:
            return _hide_env_strings(value, self.raw[key], self._where(key))
        return value

    # -- typed readers
    def string(self, key: str, default: Any = _MISSING, required: bool = False) -> Any:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, value, "expected a non-empty string")
        return value

    def integer(self, key: str, default: Any, minimum: int | None = None) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            value = int(value)  # from ${VAR}
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, value, f"expected an integer{_min_text(minimum)}")
        if minimum is not None and value < minimum:
            raise self.error(key, value, f"expected an integer{_min_text(minimum)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise self.error(key, value, "expected true or false")
        return value

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self._get(key)
        if value is _MISSING:
            return default
        if value not in allowed:
            raise self.error(key, value, f"allowed: {', '.join(repr(a) for a in allowed)}")
        return value

    def string_list(self, key: str, default: Any) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(x, str) and x for x in value):
            raise self.error(key, value, "expected a non-empty list of field names")
        return tuple(value)

    def table(self, key: str, default: dict) -> dict:
        value = self._get(key)
        if value is _MISSING:
            return dict(default)
        if not isinstance(value, dict):
            raise self.error(key, value, "expected a table")
        return value

    def payload_fields(self, key: str) -> dict[str, str | None] | None:
        value = self._get(key)
        if value is _MISSING:
            return None
        if isinstance(value, list) and all(isinstance(x, str) and x for x in value):
            return {x: None for x in value}
        if isinstance(value, dict):
            for name, kind in value.items():
                if kind not in PAYLOAD_TYPES:
                    raise ConfigError(
                        f"{self._where(key)}.{name} = {kind!r}: allowed payload types: {', '.join(PAYLOAD_TYPES)}"
                    )
            return dict(value)
        raise self.error(key, value, "expected a list of field names or a table {field = type}")

    def rest(self) -> dict[str, Any]:
        """Every key not read yet (connection options), interpolated, secrets wrapped."""
        out = {}
        for key in self.raw:
            if key in self.used:
                continue
            value = self._get(key)
            if key in SECRET_KEYS and not isinstance(value, Secret):
                value = Secret(value)
            out[key] = value
        return out

    def finish(self) -> None:
        unknown = [k for k in self.raw if k not in self.used]
        if unknown:
            raise ConfigError(
                f"{self.source}: [{self.name}] unknown key {unknown[0]!r}; allowed: {', '.join(sorted(self.used))}"
            )


def _min_text(minimum: int | None) -> str:
    if minimum is None:
        return ""
    return " >= 1" if minimum == 1 else f" >= {minimum}"


def _hide_env_strings(value: Any, raw: Any, where: str) -> Any:
    """Wrap in Secret each string that read the environment, keeping tables and lists as they are."""
    if isinstance(value, dict):
        return {k: _hide_env_strings(v, raw[k], f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_env_strings(v, r, where) for v, r in zip(value, raw)]
    return Secret(value) if _interpolate(raw, where)[1] else value


def _interpolate(value: Any, where: str) -> tuple[Any, bool]:
    """Replace ``${VAR}`` in strings (recursively); returns the value and whether it read the environment."""
    if isinstance(value, str):
        used = False

        def sub(match: re.Match[str]) -> str:
            nonlocal used
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            if not _ENV_NAME.match(name):
                raise ConfigError(f"{where}: ${{{name}}} is not a valid environment variable reference")
            if name not in os.environ:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            used = True
            return os.environ[name]

        return _ENV_REF.sub(sub, value), used
    if isinstance(value, list):
        out, any_used = [], False
        for item in value:
            item, used = _interpolate(item, where)
            out.append(item)
            any_used |= used
        return out, any_used
    if isinstance(value, dict):
        table, any_used = {}, False
        for k, item in value.items():
            item, used = _interpolate(item, f"{where}.{k}")
            table[k] = item
            any_used |= used
        return table, any_used
    return value, False
