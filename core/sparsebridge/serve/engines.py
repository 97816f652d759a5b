"""The routes Elasticsearch and OpenSearch call, and where the bodies that point the engines at
them live.

The server answers ``POST /{query,document}/elasticsearch/sparse_embedding`` (Elasticsearch's
``custom`` inference service: ``{"input": [texts]}`` in, an object at the root with token strings
and weights out) and ``POST /{query,document}/opensearch/sparse_encoding`` (an ML connector's
remote model: ``{"texts": [texts]}`` in, ``{"response": [{token: weight}, ...]}`` out); see
``app.py``. The engine-side objects that call these routes (inference endpoints, ML connectors,
models, ingest pipelines) are the connector plugins' business: ``sparsebridge register`` asks the
configured connector for them through :meth:`sparsebridge.connector.Connector.register_model_server`
(``sparsebridge_elasticsearch.inference``, ``sparsebridge_opensearch.ml``); the core knows no backend.
"""
