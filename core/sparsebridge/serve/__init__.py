"""``sparsebridge serve``: the configured model behind an HTTP API that engines and frameworks call.

* TEI's API (Hugging Face text-embeddings-inference), as its OpenAPI document states it:
  ``POST /embed_sparse``, ``POST /embed`` (the dense model of a hybrid config), ``GET /info``,
  ``GET /health``, ``GET /metrics``; errors as ``{"error", "error_type"}``.
* ``/query/...`` and ``/document/...``: the same routes with the side fixed, for clients that cannot
  send ``prompt_name`` (Haystack's text embedder sends only ``inputs``).
* ``POST /elasticsearch/sparse_embedding`` and ``POST /opensearch/sparse_encoding``: bodies the
  engines' remote-model connectors can parse (see the README for the exact bodies).

Files by job: ``schemas`` (request bodies), ``errors`` (TEI's error body), ``service`` (model
loading and one model pass), ``identity`` (the model fingerprints of ``/info``), ``batching``
(concurrent requests joined into passes), ``auth``, ``metrics``, ``app`` (the routes), ``server``
(uvicorn, signals).
"""

from __future__ import annotations

from .app import create_app
from .server import serve

__all__ = ["create_app", "serve"]
