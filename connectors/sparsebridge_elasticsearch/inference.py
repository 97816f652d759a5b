"""Elasticsearch's side of ``sparsebridge register``: ``custom`` inference endpoints that call a
running ``sparsebridge serve`` (Elasticsearch 8.19+ / 9.1+), and the optional ``semantic_text`` index.

One endpoint per side, ``PUT _inference/sparse_embedding/<id>`` with :func:`inference_endpoint`.
Elasticsearch fills the request template (``${input}``: the JSON array of the texts), sends it to
the side's ``/elasticsearch/sparse_embedding`` route, and reads tokens and weights from the object
at the root of the answer by the ``json_parser`` paths. With an API key, Elasticsearch keeps it in
``secret_parameters`` and sends it as a bearer token (``${api_key}`` in the header). The shapes
follow ``CustomServiceSettings`` of the specification in ``shared/specs``.
"""

from __future__ import annotations

from typing import Any

from sparsebridge.connector import ModelServer

TOKEN_PATH = "$.sparse_embeddings[*].embedding[*].token"
WEIGHT_PATH = "$.sparse_embeddings[*].embedding[*].weight"
REQUEST_TEMPLATE = '{"input": ${input}}'
ROUTE = "elasticsearch/sparse_embedding"
TASK_TYPE = "sparse_embedding"


def endpoint_id(index: str, side: str) -> str:
    """The inference id ``register`` gives the ``side`` endpoint of ``index``."""
    return f"{index}-sparsebridge-{side}"


def inference_endpoint(server: ModelServer, side: str) -> dict[str, Any]:
    """The body of ``PUT _inference/sparse_embedding/<id>`` for one side of the model at ``server``.

    ``chunking_settings`` ``none``: a ``semantic_text`` field sends each text whole (the server
    truncates as the Python API does), so its vectors are the ones client-side encoding gives.
    """
    headers = {"Content-Type": "application/json"}
    if server.api_key is not None:
        headers["Authorization"] = "Bearer ${api_key}"
    return {
        "service": "custom",
        "service_settings": {
            "url": server.route(side, ROUTE),
            "headers": headers,
            "secret_parameters": {"api_key": server.api_key} if server.api_key is not None else {},
            "request": {"content": REQUEST_TEMPLATE},
            "response": {"json_parser": {"token_path": TOKEN_PATH, "weight_path": WEIGHT_PATH}},
        },
        "chunking_settings": {"strategy": "none"},
    }


def semantic_text_property(document_id: str, query_id: str) -> dict[str, Any]:
    """A ``semantic_text`` field on the registered endpoints (the document side at ingest, the
    query side at search)."""
    # No query-token pruning (9.1+ prunes new sparse fields by default): scores stay exact, as the
    # sparse_vector fields sparsebridge creates are.
    return {
        "type": "semantic_text",
        "inference_id": document_id,
        "search_inference_id": query_id,
        "index_options": {"sparse_vector": {"prune": False}},
    }
