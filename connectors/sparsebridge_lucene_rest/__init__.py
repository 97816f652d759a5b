"""What the Elasticsearch and OpenSearch connectors share, in the open: the REST dialect both
engines speak (:mod:`.dialect`), the base connector built on it (:mod:`.base`), the retry policy
(:mod:`.retry`), option and engine errors (:mod:`.errors`), secret redaction (:mod:`.redaction`),
the client settings both clients take alike (:mod:`.client_options`).

This package is a library, not a plugin: it registers no connector and imports no search-engine
client. ``sparsebridge_elasticsearch`` and ``sparsebridge_opensearch`` build on its public API.
"""

from __future__ import annotations

from .base import LuceneConnector, SearchPlan, keyed_rows
from .client_options import shared_client_options
from .dialect import (
    META_FORMAT,
    META_KEY,
    PAYLOAD_FIELD,
    RESERVED_FIELDS,
    TEXT_FIELD,
    Layout,
    combine,
    filter_clauses,
    hit_payload,
)
from .errors import OptionError, connection_cause, error_reason, missing_client, one_line
from .redaction import redact, split_credentials
from .retry import RETRY_STATUSES, backoff_delay

__all__ = [
    "META_FORMAT",
    "META_KEY",
    "PAYLOAD_FIELD",
    "RESERVED_FIELDS",
    "RETRY_STATUSES",
    "TEXT_FIELD",
    "Layout",
    "LuceneConnector",
    "OptionError",
    "SearchPlan",
    "backoff_delay",
    "combine",
    "connection_cause",
    "error_reason",
    "filter_clauses",
    "hit_payload",
    "missing_client",
    "keyed_rows",
    "one_line",
    "redact",
    "shared_client_options",
    "split_credentials",
]
