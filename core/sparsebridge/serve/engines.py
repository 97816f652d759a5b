"""The bodies that make Elasticsearch and OpenSearch call a running ``sparsebridge serve``.

Elasticsearch (8.19+ / 9.1+): one ``custom`` inference endpoint per side,
``PUT _inference/sparse_embedding/<id>`` with :func:`elasticsearch_inference_endpoint`; a
``semantic_text`` field then names the document side as ``inference_id`` and the query side as
``search_inference_id``. Elasticsearch sends ``{"input": [texts]}`` (the request template's
``${input}``) and reads tokens and weights with the ``json_parser`` paths from the object at the
root of the answer.

OpenSearch (2.x / 3.x): an ML connector per side, ``POST /_plugins/_ml/connectors/_create`` with
:func:`opensearch_connector`, then a remote model registered on it and deployed. The
``sparse_encoding`` ingest processor and the ``neural_sparse`` query call the model with their
texts; the connector's pre-process function puts them in ``parameters.texts``, the request body
sends ``{"texts": [texts]}`` and the answer ``{"response": [{token: weight}, ...]}`` is read as is.

The shapes follow the engines' specifications in ``shared/specs`` (``CustomServiceSettings``,
``ml.create_connector``); the tests validate them there and call the server exactly as the bodies
say.
"""

from __future__ import annotations

from typing import Any

ES_TOKEN_PATH = "$.sparse_embeddings[*].embedding[*].token"
ES_WEIGHT_PATH = "$.sparse_embeddings[*].embedding[*].weight"
ES_REQUEST_TEMPLATE = '{"input": ${input}}'
OS_REQUEST_BODY = '{ "texts": ${parameters.texts} }'
OS_PRE_PROCESS = "connector.pre_process.default.embedding"


def _route(base_url: str, side: str, endpoint: str) -> str:
    if side not in ("query", "document"):
        raise ValueError(f"side must be 'query' or 'document', got {side!r}")
    return f"{base_url.rstrip('/')}/{side}/{endpoint}"


def elasticsearch_inference_endpoint(base_url: str, side: str, api_key: str | None = None) -> dict[str, Any]:
    """The body of ``PUT _inference/sparse_embedding/<id>`` for one side of the model at ``base_url``.

    With an API key, Elasticsearch keeps it in ``secret_parameters`` and sends it as a bearer token.
    """
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = "Bearer ${api_key}"
    return {
        "service": "custom",
        "service_settings": {
            "url": _route(base_url, side, "elasticsearch/sparse_embedding"),
            "headers": headers,
            "secret_parameters": {"api_key": api_key} if api_key is not None else {},
            "request": {"content": ES_REQUEST_TEMPLATE},
            "response": {"json_parser": {"token_path": ES_TOKEN_PATH, "weight_path": ES_WEIGHT_PATH}},
        },
    }


def opensearch_connector(base_url: str, side: str, api_key: str | None = None) -> dict[str, Any]:
    """The body of ``POST /_plugins/_ml/connectors/_create`` for one side of the model at ``base_url``."""
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = "Bearer ${credential.api_key}"
    return {
        "name": f"sparsebridge {side} encoder",
        "description": f"sparsebridge serve: the {side} side of a learned sparse model",
        "version": 1,
        "protocol": "http",
        "parameters": {},
        "credential": {"api_key": api_key} if api_key is not None else {},
        "actions": [
            {
                "action_type": "predict",
                "method": "POST",
                "url": _route(base_url, side, "opensearch/sparse_encoding"),
                "headers": headers,
                "request_body": OS_REQUEST_BODY,
                "pre_process_function": OS_PRE_PROCESS,
            }
        ],
    }
