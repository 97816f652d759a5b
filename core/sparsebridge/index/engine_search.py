"""``[search] query_encoding = "engine"``: queries go to the engine as text, and the engine encodes
them by calling ``sparsebridge serve`` (set up by ``sparsebridge register``). No sparse model loads
here; hybrid search still encodes the dense side on the client (``[search] hybrid``).

The engine's id of the query model is read back from the index metadata, where ``register``
recorded it (:data:`~sparsebridge.connector.ENGINE_ENCODING_KEY`), so the config names nothing more.

The served model is checked against the index's, once per process: ``register`` compared them, but
the server can be restarted with another model afterwards, and the engine would then encode queries
that rank silently wrong. One ``GET /info`` (a few milliseconds, answered from memory by the server)
per process and server is cheap next to a search; per query it would add a round trip to each. The
URL is the one ``register`` recorded (its ``--check-url``, else ``--server-url``), sent with
``[serve] api_key``. A server that differs refuses the search (``[ingest] allow_model_change``
turns that into a note); one this machine cannot ask (another network, another key) gives a note,
since only the engine needs to reach it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import Config, ConfigError, reveal
from ..connector import ENGINE_ENCODING_KEY, Connector, ConnectorError, Filter, Query
from ..connector.filters import check_filter_fields
from ..vectors.provenance import check_producers, producer_fingerprint
from .model_server import check_server_model, server_info
from .results import QueryResult, SearchHit
from .search import SEARCH_MODES, search_options

EXPLAIN_NOTE = "no explanation: query_encoding = 'engine' has no model on the client to recompute the token weights"


def check_engine_encoding(connector: Connector, index: str) -> dict:
    """The index metadata, once sure the backend encodes text and ``register`` was run for ``index``."""
    if not type(connector).encodes_text:
        raise ConfigError(
            f"the {connector.name} backend cannot encode query text in the engine; "
            f'set [search] query_encoding = "client"'
        )
    stored = connector.index_metadata()
    if stored is None:
        raise ConnectorError(f"index {index!r} does not exist; run `sparsebridge ingest` first")
    if not (stored.get(ENGINE_ENCODING_KEY) or {}).get("query"):
        raise ConfigError(
            f"index {index!r} records no engine-side query model; run `sparsebridge register` "
            f'(with `sparsebridge serve` running) first, or set [search] query_encoding = "client"'
        )
    return stored


SEARCH_INFO_TIMEOUT_S = 5.0


def check_served_model(config: Config, stored: dict, index: str) -> list[str]:
    """Notes after comparing the query model the registered server serves with the index's (see
    the module docstring); raises :class:`~sparsebridge.errors.ModelMismatchError` when they differ."""
    record = stored.get(ENGINE_ENCODING_KEY) or {}
    url = record.get("info_url") or record.get("server")
    if not url:
        return []
    key = reveal(config.serve.api_key)
    try:
        info = server_info(str(url), None if key is None else str(key), timeout=SEARCH_INFO_TIMEOUT_S)
    except ConnectorError as exc:
        return [f"the served model was not checked against index {index!r}'s: {exc}"]
    allow = config.ingest.allow_model_change
    return check_server_model(stored, info, index, str(url), sides=("query",), allow_change=allow)


def engine_search(
    config: Config,
    connector: Connector,
    queries: str | Sequence[str],
    *,
    top_k: int | None = None,
    filter: Filter | None = None,
    mode: str | None = None,
    explain: bool = False,
    dense_encoder: object | None = None,
) -> list[QueryResult]:
    """Search ``queries`` with the engine encoding their text; one :class:`QueryResult` each.

    ``mode`` as in :meth:`~sparsebridge.index.search.Searching.search`; the dense side of
    ``"dense"`` / ``"hybrid"`` is encoded here by ``dense_encoder`` (built from the config when not
    given). ``explain`` only adds a note: explaining needs the model on the client.
    """
    queries = [queries] if isinstance(queries, str) else list(queries)
    if not queries:
        return []
    settings = config.search
    mode = mode or ("hybrid" if settings.hybrid else "sparse")
    if mode not in SEARCH_MODES:
        raise ValueError(f"search mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
    index = config.backend.index
    stored = check_engine_encoding(connector, index)
    check_filter_fields(filter, stored, index, also=config.ingest.payload_fields or ())
    notes = check_served_model(config, stored, index)
    dense: list[list[float] | None] = [None] * len(queries)
    if mode != "sparse":
        if not settings.hybrid:
            raise ConfigError(f"search mode {mode!r} needs a dense model ([search] hybrid = true)")
        from ..config.builder import build_dense_encoder
        from ..vectors.convert import dense_rows

        encoder = dense_encoder if dense_encoder is not None else build_dense_encoder(config)
        # The dense side is encoded here: checked as client-side hybrid search checks it.
        current = {"dense": producer_fingerprint(encoder, None, "document")}
        allow = config.ingest.allow_model_change
        notes += check_producers(stored, current, index, sides=("dense",), allow_change=allow)
        encode = getattr(encoder, "encode_query", None) or encoder.encode_document  # type: ignore[attr-defined]
        dense = list(dense_rows(encode(queries)))
    batch = [Query(text=q if mode != "dense" else None, dense=d, filter=filter) for q, d in zip(queries, dense)]
    options = search_options(settings, top_k)
    notes += [EXPLAIN_NOTE] if explain else []
    return [
        QueryResult(q, [SearchHit(h.id, float(h.score), dict(h.payload or {})) for h in r.hits], notes + list(r.notes))
        for q, r in zip(queries, connector.search(batch, options))
    ]
