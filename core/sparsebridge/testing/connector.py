"""The connector contract as tests (:mod:`sparsebridge.connector`), for any connector.

Usage, in a plugin's test suite::

    from sparsebridge.testing import ConnectorConformance

    class TestMyConnector(ConnectorConformance):
        def make_connector(self, index, tmp_path):
            return MyConnector(url=..., index=index)

Every test gets a fresh connector on an index named ``conformance`` (dropped first) and closes it
afterwards. The records use a small made-up vocabulary (``vocabulary``) whose tokens are plain
words, with weights far enough apart that an engine that stores weights with 9 significant bits
(Lucene) ranks them exactly as the float32 dot product does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..connector import Connector, IndexSpec, Query, Record, SearchOptions, SparseVector

WORDS = ("wing", "lift", "drag", "flow", "heat", "shock", "layer", "wave", "mach", "tunnel", "plate", "nozzle")
# Engines that keep 9 significant bits of a weight give it back within this relative error.
QUANTISED_RTOL = 2.0**-8


def vector(weights: dict[str, float]) -> SparseVector:
    """A sparse vector over :data:`WORDS` (index = the word's position)."""
    return SparseVector.from_pairs((WORDS.index(t), t, w) for t, w in weights.items())


class ConnectorConformance:
    """Mixin: the rules of the connector contract as pytest tests. Subclasses define
    :meth:`make_connector`."""

    index = "conformance"
    vocabulary: tuple[str, ...] = WORDS
    records = (
        Record("d1", "wing lift", vector({"wing": 2.0, "lift": 1.0}), {"lang": "en", "n": 1}),
        Record("d2", "lift drag flow", vector({"lift": 0.5, "drag": 3.0, "flow": 0.25}), {"lang": "de", "n": 2}),
        Record("d3", "heat shock", vector({"heat": 1.5, "shock": 4.0}), {"lang": "en", "n": 3}),
        Record("d4", "wing wave", vector({"wing": 0.125, "wave": 1.0}), {"lang": "fr", "n": 4}),
    )
    metadata: dict[str, Any] = {"model": "conformance", "vocab_size": len(WORDS), "nested": {"a": [1, "x"]}}

    def make_connector(self, index: str, tmp_path: Path) -> Connector:
        """A new connector on ``index`` (the subclass's backend, options, temporary folder)."""
        raise NotImplementedError("subclasses of ConnectorConformance define make_connector(index, tmp_path)")

    def spec(self) -> IndexSpec:
        """The index the tests create: a sparse field, one keyword payload field, nested metadata."""
        return IndexSpec(name=self.index, payload_fields={"lang": "keyword"}, metadata=dict(self.metadata))

    @pytest.fixture
    def connector(self, tmp_path: Path) -> Iterator[Connector]:
        """A connector on a dropped (empty) index, closed after the test."""
        conn = self.make_connector(self.index, tmp_path)
        conn.drop()
        try:
            yield conn
        finally:
            conn.close()

    @pytest.fixture
    def filled(self, connector: Connector) -> Connector:
        """The connector with :attr:`records` written."""
        connector.ensure_index(self.spec())
        result = connector.write(list(self.records))
        assert result.failed == {} and sorted(result.written) == sorted(r.id for r in self.records)
        return connector

    # -- the index and its metadata

    def test_a_new_index_has_no_metadata_until_ensured(self, connector: Connector) -> None:
        assert connector.index_metadata() is None
        connector.ensure_index(self.spec())
        assert connector.index_metadata() == self.metadata
        connector.ensure_index(self.spec())  # ensuring an existing, matching index is fine
        assert connector.count() == 0

    def test_drop_removes_the_index_and_dropping_again_is_fine(self, filled: Connector) -> None:
        filled.drop()
        assert filled.index_metadata() is None
        filled.drop()

    # -- writes

    def test_write_is_an_upsert_by_id(self, filled: Connector) -> None:
        assert filled.count() == len(self.records)
        again = filled.write(list(self.records))
        assert again.failed == {} and filled.count() == len(self.records)

    # -- search

    def test_search_ranks_by_dot_product_one_result_per_query(self, filled: Connector) -> None:
        queries = [vector({"lift": 1.0, "wing": 0.5}), vector({"shock": 1.0})]
        results = filled.search([Query(sparse=q) for q in queries], SearchOptions(top_k=10))
        assert len(results) == len(queries)
        for query, result in zip(queries, results):
            expected = self._exact(query)
            assert [h.id for h in result.hits] == [doc_id for doc_id, _ in expected]
            for hit, (_, score) in zip(result.hits, expected):
                assert hit.score == pytest.approx(score, rel=4 * QUANTISED_RTOL)

    def test_search_honours_top_k_and_filters(self, filled: Connector) -> None:
        query = Query(sparse=vector({"lift": 1.0, "wing": 1.0}), filter={"lang": "en"})
        (result,) = filled.search([query], SearchOptions(top_k=10))
        assert [h.id for h in result.hits] == ["d1"]
        (top1,) = filled.search([Query(sparse=vector({"wing": 1.0, "lift": 1.0}))], SearchOptions(top_k=1))
        assert [h.id for h in top1.hits] == ["d1"]

    # -- reading back

    def test_get_returns_stored_text_and_payload_of_the_ids_found(self, filled: Connector) -> None:
        found = filled.get(["d1", "d3", "missing"])
        assert sorted(found) == ["d1", "d3"]
        for record in (self.records[0], self.records[2]):
            assert found[record.id]["text"] == record.text
            assert found[record.id]["lang"] == record.payload["lang"]

    def test_export_gives_back_what_was_written(self, filled: Connector) -> None:
        exported = {r.id: r for batch in filled.export(list(self.vocabulary), batch_size=2) for r in batch}
        assert sorted(exported) == sorted(r.id for r in self.records)
        rtol = 0.0 if filled.export_quantisation() == "none" else QUANTISED_RTOL
        for record in self.records:
            back = exported[record.id]
            assert back.text == record.text and back.payload.get("lang") == record.payload["lang"]
            assert back.sparse.indices == record.sparse.indices
            assert back.sparse.tokens == record.sparse.tokens
            assert back.sparse.values == pytest.approx(record.sparse.values, rel=rtol)

    def _exact(self, query: SparseVector) -> list[tuple[str, float]]:
        """(id, dot product) of the records that share a token with ``query``, best first."""
        weights = query.as_index_dict()
        scored = [
            (r.id, sum(w * weights.get(i, 0.0) for i, w in r.sparse.as_index_dict().items())) for r in self.records
        ]
        return sorted([s for s in scored if s[1] > 0], key=lambda s: (-s[1], s[0]))
