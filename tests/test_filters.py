"""One filter, one meaning, on every backend: ``sparsebridge.filters`` parses it once and each
connector translates the parsed conditions.

Qdrant runs for real (the Edge engine in-process and qdrant-client's local mode); Elasticsearch and
OpenSearch cannot run here, so their real clients talk to the stand-in engine of lucene_testkit.py.
"""

from __future__ import annotations

import math

import pytest
from lucene_testkit import FakeEngine, FakeServer
from sparsebridge.connector import IndexSpec, Query, Record, SearchOptions, SparseVector
from sparsebridge.errors import FilterError, SparsebridgeError
from sparsebridge.filters import Condition, check_filter_fields, parse_filter

SPEC = IndexSpec(
    "docs",
    payload_fields={"tag": "keyword", "n": "integer"},
    metadata={"model": "m", "vocab_size": 10, "vocab_fingerprint": "f"},
)
TAGS = ["red", "blue", "red", "green"]
RECORDS = [
    Record(f"r{i}", f"text {i}", SparseVector.from_pairs([(1, "alpha", 1.0 + i)]), {"tag": t, "n": i})
    for i, t in enumerate(TAGS)
]
QUERY = SparseVector.from_pairs([(1, "alpha", 1.0)])


def test_parse_filter():
    assert parse_filter(None) == [] and parse_filter({}) == []
    assert parse_filter({"tag": "red", "n": [1, 2]}) == [
        Condition("tag", "eq", value="red"),
        Condition("n", "any", values=[1, 2]),
    ]
    assert parse_filter({"tag": []})[0].matches_nothing
    for bad, needle in (
        ({"tag": None}, "got NoneType"),
        ({"tag": {"nested": 1}}, "got dict"),
        ({"tag": [1, [2]]}, "got list"),
        ({"n": math.nan}, "must be finite"),
        ({"": 1}, "non-empty strings"),
        ({3: 1}, "non-empty strings"),
    ):
        with pytest.raises(FilterError, match=needle) as err:
            parse_filter(bad)
        assert isinstance(err.value, SparsebridgeError) and isinstance(err.value, ValueError)


def test_filter_fields_are_checked_against_the_index():
    stored = {"payload_fields": ["lang", "title"]}
    check_filter_fields({"lang": "en"}, stored, "docs")
    check_filter_fields({"year": 1}, {}, "docs")  # an index that does not list its fields: not checked
    check_filter_fields({"year": 1}, stored, "docs", also=["year"])
    with pytest.raises(FilterError, match=r"filter field 'nosuch' is not a payload field of index 'docs' \(payload"):
        check_filter_fields({"nosuch": 1}, stored, "docs")


def _qdrant(kind, tmp_path):
    from sparsebridge_qdrant import QdrantConnector

    if kind == "qdrant-edge":
        pytest.importorskip("qdrant_edge")
        return QdrantConnector(mode="edge", path=str(tmp_path / "edge"))
    return QdrantConnector(mode="local")


@pytest.fixture(params=["qdrant-edge", "qdrant-local", "elasticsearch", "opensearch"])
def conn(request, tmp_path):
    if request.param.startswith("qdrant"):
        c = _qdrant(request.param, tmp_path)
        c.ensure_index(SPEC)
        assert not c.write(RECORDS).failed
        yield c
        c.close()
        return
    from sparsebridge_elasticsearch import ElasticsearchConnector
    from sparsebridge_opensearch import OpenSearchConnector

    cls, flavor, version = {
        "elasticsearch": (ElasticsearchConnector, "elasticsearch", "9.1.0"),
        "opensearch": (OpenSearchConnector, "opensearch", "3.3.0"),
    }[request.param]
    with FakeServer(FakeEngine(flavor=flavor, version=version)) as srv:
        c = cls(url=srv.url)
        c.ensure_index(SPEC)
        assert not c.write(RECORDS).failed
        yield c
        c.close()


@pytest.mark.parametrize(
    "flt, expected",
    [
        ({"tag": "red"}, {"r0", "r2"}),
        ({"tag": ["blue", "green"]}, {"r1", "r3"}),
        ({"tag": "red", "n": 2}, {"r2"}),
        ({"tag": []}, set()),  # any of nothing: matches nothing, on every backend
        ({"tag": ["red"], "n": []}, set()),
    ],
)
def test_same_filter_same_hits_everywhere(conn, flt, expected):
    (res,) = conn.search([Query(sparse=QUERY, filter=flt)], SearchOptions(top_k=10))
    assert {h.id for h in res.hits} == expected


@pytest.mark.parametrize("flt", [{"tag": {"nested": 1}}, {"tag": None}, {"n": math.inf}, {"": "x"}])
def test_same_bad_filter_same_error_everywhere(conn, flt):
    with pytest.raises(FilterError):
        conn.search([Query(sparse=QUERY, filter=flt)])
