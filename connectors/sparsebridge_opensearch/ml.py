"""OpenSearch's side of ``sparsebridge register`` (2.x / 3.x, ML Commons and neural-search): per
side an ML connector to a running ``sparsebridge serve`` and a remote model registered on it and
deployed; then a ``sparse_encoding`` ingest pipeline on the document model, set as the index's
``default_pipeline``.

The connector (:func:`ml_connector`): ML Commons' pre-process function for embeddings puts the
texts into ``parameters.texts``, the request body sends ``{"texts": [...]}`` to the side's
``/opensearch/sparse_encoding`` route, and the answer ``{"response": [{token: weight}, ...]}`` is
what neural-search reads from a sparse model's output (the ``response`` key, one map per text),
so no post-process function is needed. With an API key, OpenSearch keeps it in ``credential``
(encrypted) and sends it as a bearer token. The shapes follow ``ml.create_connector`` /
``ml.register_model`` and ``ingest.put_pipeline`` of the specification in ``shared/specs``.
"""

from __future__ import annotations

from typing import Any

from sparsebridge.connector import ModelServer

REQUEST_BODY = '{ "texts": ${parameters.texts} }'
PRE_PROCESS = "connector.pre_process.default.embedding"
ROUTE = "opensearch/sparse_encoding"
BATCH_SIZE = 16


def model_name(index: str, side: str) -> str:
    """The name ``register`` gives the ``side`` model of ``index``."""
    return f"{index}-sparsebridge-{side}"


def pipeline_name(index: str) -> str:
    """The ingest pipeline ``register`` sets as the default of ``index``."""
    return f"{index}-sparsebridge-ingest"


def ml_connector(server: ModelServer, side: str) -> dict[str, Any]:
    """The body of ``POST /_plugins/_ml/connectors/_create`` for one side of the model at ``server``."""
    headers = {"Content-Type": "application/json"}
    if server.api_key is not None:
        headers["Authorization"] = "Bearer ${credential.api_key}"
    return {
        "name": f"sparsebridge {side} encoder",
        "description": f"sparsebridge serve: the {side} side of a learned sparse model",
        "version": 1,
        "protocol": "http",
        "parameters": {},
        "credential": {"api_key": server.api_key} if server.api_key is not None else {},
        "actions": [
            {
                "action_type": "predict",
                "method": "POST",
                "url": server.route(side, ROUTE),
                "headers": headers,
                "request_body": REQUEST_BODY,
                "pre_process_function": PRE_PROCESS,
            }
        ],
    }


def remote_model(name: str, connector_id: str, side: str) -> dict[str, Any]:
    """The body of ``POST /_plugins/_ml/models/_register`` for a remote model on ``connector_id``."""
    return {
        "name": name,
        "function_name": "remote",
        "connector_id": connector_id,
        "description": f"sparsebridge serve: the {side} side of a learned sparse model",
    }


def ingest_pipeline(model_id: str, sparse_field: str, text_field: str) -> dict[str, Any]:
    """The body of ``PUT /_ingest/pipeline/<name>``: the document model encodes ``text_field`` into
    ``sparse_field``."""
    return {
        "description": "sparsebridge: documents encoded by sparsebridge serve at ingest",
        # batch_size: documents per model call (the processor's default is 1 per call).
        "processors": [
            {
                "sparse_encoding": {
                    "model_id": model_id,
                    "field_map": {text_field: sparse_field},
                    "batch_size": BATCH_SIZE,
                }
            }
        ],
    }
