"""Every built-in connector passes the conformance tests a third-party connector subclasses
(:mod:`sparsebridge.testing`).

Qdrant runs for real (Edge in-process, and qdrant-client's local mode). Elasticsearch and OpenSearch
cannot run here: they are the engine double of ``lucene_testkit`` behind their real official
clients (the same double the connectors' own tests use).
"""

from __future__ import annotations

import pytest
from lucene_testkit import FakeEngine, FakeServer
from sparsebridge.testing import ConnectorConformance

pytest.importorskip("qdrant_edge")
from sparsebridge_elasticsearch import ElasticsearchConnector  # noqa: E402
from sparsebridge_opensearch import OpenSearchConnector  # noqa: E402
from sparsebridge_qdrant import QdrantConnector  # noqa: E402


class TestQdrantEdge(ConnectorConformance):
    def make_connector(self, index, tmp_path):
        return QdrantConnector(mode="edge", path=str(tmp_path / "edge"), index=index)


class TestQdrantLocal(ConnectorConformance):
    def make_connector(self, index, tmp_path):
        return QdrantConnector(mode="local", location=":memory:", index=index)


class _Double:
    """A connector on the engine double, served over HTTP for the test's duration."""

    flavor = version = ""
    connector_class: type

    @pytest.fixture(autouse=True)
    def _server(self):
        with FakeServer(FakeEngine(flavor=self.flavor, version=self.version)) as server:
            self.url = server.url
            yield

    def make_connector(self, index, tmp_path):
        return self.connector_class(url=self.url, index=index, initial_backoff=0.001, max_backoff=0.002)


class TestElasticsearch(_Double, ConnectorConformance):
    flavor, version, connector_class = "elasticsearch", "9.1.0", ElasticsearchConnector


class TestOpenSearch(_Double, ConnectorConformance):
    flavor, version, connector_class = "opensearch", "3.3.0", OpenSearchConnector


def test_a_subclass_without_make_connector_says_what_is_missing(tmp_path):
    with pytest.raises(NotImplementedError, match="define make_connector"):
        ConnectorConformance().make_connector("x", tmp_path)
