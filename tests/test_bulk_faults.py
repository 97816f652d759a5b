"""Fault injection for the Elasticsearch and OpenSearch connectors' writes, through the real clients.

No engine can run here: the real ``elasticsearch`` / ``opensearch-py`` clients (their transports and
bulk helpers) talk over HTTP to a local stand-in server on 127.0.0.1 (``http.server`` in a thread,
``lucene_testkit.py``) that answers as the engines document and can be told to fail: whole
requests with 429/503, single bulk items with 429, documents the mapping refuses. Backoffs are made
tiny through the connector options; the sleeps are recorded to check the schedule.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from lucene_testkit import FakeEngine, FakeServer, closed_port
from sparsebridge.connector import (
    ConnectorError,
    IndexMismatchError,
    IndexSpec,
    Query,
    Record,
    SparseVector,
)
from sparsebridge_elasticsearch import ElasticsearchConnector
from sparsebridge_lucene_rest import base as lucene_base
from sparsebridge_opensearch import OpenSearchConnector

ENGINES = {
    "elasticsearch": (ElasticsearchConnector, dict(flavor="elasticsearch", version="9.1.0")),
    "opensearch": (OpenSearchConnector, dict(flavor="opensearch", version="3.3.0")),
}
API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
PASSWORD = "pa55-w0rd-Zebra!"
SPEC = IndexSpec(
    "docs",
    payload_fields={"year": "integer"},
    metadata={"model": "m", "vocab_size": 100, "vocab_fingerprint": "abc"},
)


def vec(*tokens: str) -> SparseVector:
    return SparseVector.from_pairs((i + 1, t, 1.0 + i) for i, t in enumerate(tokens))


def records(n: int) -> list[Record]:
    return [Record(f"r{i}", f"text {i}", vec("alpha", f"tok{i}"), {"year": 2000 + i}) for i in range(n)]


@pytest.fixture(params=sorted(ENGINES))
def kind(request) -> str:
    return request.param


@pytest.fixture
def engine(kind) -> FakeEngine:
    return FakeEngine(**ENGINES[kind][1])


@pytest.fixture
def server(engine):
    with FakeServer(engine) as srv:
        yield srv


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(lucene_base.time, "sleep", recorded.append)
    return recorded


def make(kind: str, url: str, **options):
    options.setdefault("initial_backoff", 0.01)
    options.setdefault("max_backoff", 0.04)
    return ENGINES[kind][0](url=url, **options)


@pytest.fixture
def conn(kind, server):
    c = make(kind, server.url, max_retries=3)
    c.ensure_index(SPEC)
    yield c
    c.close()


def bulk_ids(engine: FakeEngine) -> list[list[str]]:
    return [[line[op]["_id"] for line in r.lines()[::2] for op in line] for r in engine.calls(r"/_bulk$")]


@pytest.mark.parametrize("status", [429, 503])
def test_transient_whole_request_errors_are_retried_with_backoff(conn, engine, sleeps, status):
    engine.fail_requests(r"/_bulk$", status, status)
    result = conn.write(records(5))
    assert sorted(result.written) == [f"r{i}" for i in range(5)] and not result.failed
    assert result.retries == 2
    assert len(engine.calls(r"/_bulk$")) == 3  # the transport itself did not retry on top
    assert sleeps == [0.01, 0.02]
    assert conn.count() == 5


def test_per_item_429s_are_retried_alone(conn, engine, sleeps):
    engine.fail_items("r1", (429, "es_rejected_execution_exception"), (429, "es_rejected_execution_exception"))
    engine.fail_items("r3", (429, "es_rejected_execution_exception"))
    result = conn.write(records(5))
    assert not result.failed and len(result.written) == 5
    assert result.retries == 2
    assert bulk_ids(engine) == [["r0", "r1", "r2", "r3", "r4"], ["r1", "r3"], ["r1"]]
    assert sleeps == [0.01, 0.02]


def test_retries_stop_at_the_limit_and_say_so(conn, engine, sleeps):
    engine.fail_items("r2", *[(429, "es_rejected_execution_exception")] * 10)
    engine.fail_items("r4", (503, "unavailable_shards_exception"))
    result = conn.write(records(5))
    assert result.retries == 3
    assert sleeps == [0.01, 0.02, 0.04]
    assert sorted(result.written) == ["r0", "r1", "r3", "r4"]
    assert list(result.failed) == ["r2"]
    assert "es_rejected_execution_exception" in result.failed["r2"]
    assert "HTTP 429; gave up after 3 retries" in result.failed["r2"]
    assert len(engine.calls(r"/_bulk$")) == 4


def test_whole_request_errors_past_the_limit_fail_the_items(kind, server, engine, sleeps):
    conn = make(kind, server.url, max_retries=1)
    conn.ensure_index(SPEC)
    engine.fail_requests(r"/_bulk$", 503, 503, 503)
    result = conn.write(records(2))
    assert result.retries == 1 and sorted(result.failed) == ["r0", "r1"] and not result.written
    assert all("gave up after 1 retries" in reason for reason in result.failed.values())


def test_permanent_item_errors_are_reported_by_id_and_the_rest_lands(conn, engine, sleeps):
    docs = records(4)
    docs[1] = Record("r1", "bad", vec("alpha"), {"year": "not-a-year"})
    docs[2] = Record("r2", "bad too", vec("alpha"), {"year": "MMXX"})
    result = conn.write(docs)
    assert sorted(result.written) == ["r0", "r3"]
    assert sorted(result.failed) == ["r1", "r2"]
    assert "parsing_exception" in result.failed["r1"] and "not-a-year" in result.failed["r1"]
    assert result.retries == 0 and sleeps == []
    assert conn.count() == 2
    assert conn.write([Record("r1", "fixed", vec("alpha"), {"year": 2020})]).written == ["r1"]
    assert conn.count() == 3


def test_a_failing_search_is_retried_too(conn, engine, sleeps):
    conn.write(records(3))
    engine.fail_requests(r"/_msearch$", 503)
    (res,) = conn.search([Query(sparse=vec("alpha"))])
    assert len(res.hits) == 3 and sleeps == [0.01]


@pytest.mark.parametrize("operation", ["ensure_index", "write", "search", "count"])
def test_unreachable_server_fails_fast_with_one_line(kind, operation, monkeypatch):
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    conn = make(kind, url, index="docs", password=PASSWORD)
    # "Fast" is checked as what happened, not in seconds (a loaded machine is slow either way): the
    # server was dialled once and nothing anywhere slept for a back-off before giving up.
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    dials: list[object] = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if address[1] == port:
            dials.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(ConnectorError) as err:
        if operation == "ensure_index":
            conn.ensure_index(SPEC)
        elif operation == "write":
            conn.write(records(2))
        elif operation == "search":
            conn.search([Query(sparse=vec("alpha"))])
        else:
            conn.count()
    assert len(dials) == 1 and slept == [], (dials, slept)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300
    assert url in message and "Connection refused" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert PASSWORD not in message


def test_server_going_away_mid_ingest_is_one_line_too(kind, sleeps):
    engine = FakeEngine(**ENGINES[kind][1])
    srv = FakeServer(engine, keep_alive=False)
    srv.httpd.handle_error = lambda request, address: None  # the dropped connection below is on purpose
    handle, bulks = engine.handle, []

    def going_away(method, target, headers, body):
        if target.split("?")[0].endswith("/_bulk"):
            bulks.append(target)
            if len(bulks) == 2:
                # The second bulk request of the write: the server stops listening and drops the
                # connection without an answer, the first request's documents already stored.
                srv.httpd.shutdown()
                srv.httpd.server_close()
                raise ConnectionAbortedError("server going away")
        return handle(method, target, headers, body)

    engine.handle = going_away
    with srv:
        conn = make(kind, srv.url, chunk_size=2)
        conn.ensure_index(SPEC)
        with pytest.raises(ConnectorError) as err:
            conn.write(records(6))
    assert len(bulks) >= 2  # it went away in the middle of the write, not before it
    assert sorted(engine.indices["docs"]["docs"]) == ["r0", "r1"]
    assert "\n" not in str(err.value) and srv.url in str(err.value)


@pytest.mark.parametrize(
    "kind, mappings, needle",
    [
        ("elasticsearch", {"properties": {"sparse": {"type": "rank_features"}}}, "'rank_features'"),
        ("opensearch", {"properties": {"sparse": {"type": "sparse_vector"}}}, "'sparse_vector'"),
        (
            "elasticsearch",
            {"properties": {"sparse": {"type": "sparse_vector"}, "dense": {"type": "dense_vector", "dims": 384}}},
            "has 384 dimensions",
        ),
        (
            "opensearch",
            {"properties": {"sparse": {"type": "rank_features"}, "dense": {"type": "knn_vector", "dimension": 384}}},
            "has 384 dimensions",
        ),
    ],
)
def test_wrong_existing_mapping_is_caught_before_writing(kind, mappings, needle):
    engine = FakeEngine(**ENGINES[kind][1])
    engine.add_index("docs", mappings)
    with FakeServer(engine) as srv:
        conn = make(kind, srv.url)
        spec = IndexSpec("docs", dense_field="dense", dense_size=768)
        with pytest.raises(IndexMismatchError) as err:
            conn.ensure_index(spec)
        assert needle in str(err.value)
        assert "drop the index" in str(err.value) and "another index name" in str(err.value)
        assert not engine.calls(r"/_bulk$")


def test_vocabulary_mismatch_is_refused(kind, conn, server):
    other = make(kind, server.url)
    with pytest.raises(IndexMismatchError, match="another vocabulary"):
        other.ensure_index(IndexSpec("docs", metadata={"model": "other", "vocab_fingerprint": "zzz"}))


def test_secrets_stay_out_of_reprs_logs_and_errors(kind, engine, server, caplog):
    creds = {"api_key": API_KEY} if kind == "elasticsearch" else {"username": "admin", "password": PASSWORD}
    caplog.set_level(logging.DEBUG)
    conn = make(kind, server.url, **creds)
    assert API_KEY not in repr(conn) and PASSWORD not in repr(conn) and "***" in repr(conn)
    conn.ensure_index(SPEC)
    engine.fail_items("r1", (400, "mapper_parsing_exception"))
    conn.write(records(3))
    conn.search([Query(sparse=vec("alpha"))])
    sent = engine.requests[-1].headers.get("authorization", "")
    assert sent.startswith("ApiKey " if kind == "elasticsearch" else "Basic ")  # the secret was used
    # The server now refuses the credentials: the error names the cause, not the secret.
    engine.require_auth = "something else"
    with pytest.raises(ConnectorError) as err:
        conn.search([Query(sparse=vec("alpha"))])
    assert "authentication failed" in str(err.value)
    # Unreachable, with the password inside the URL.
    url = f"http://admin:{PASSWORD}@127.0.0.1:{closed_port()}"
    unreachable = ENGINES[kind][0](url=url)
    assert PASSWORD not in repr(unreachable)
    with pytest.raises(ConnectorError) as err2:
        unreachable.ensure_index(SPEC)
    texts = [repr(conn), str(err.value), str(err2.value), caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert API_KEY not in text and PASSWORD not in text and sent.split(" ", 1)[-1] not in text


# --------------------------------------------------------------------------- writes from a vector dataset's columns
#
# ``ingest vectors.parquet`` hands the connector RecordColumns (flat arrays, no Record per row);
# Elasticsearch and OpenSearch build the bulk actions from them directly. They must be the actions
# the Record path builds, and go through the same retry and per-item failure handling.

TOKENS = ["[pad]", "alpha", "beta", "gam.ma", "50%", "dup", "dup", "zeta"]  # "dup" twice: two ids, one token


def vocab_records(n: int) -> list[Record]:
    out = []
    for i in range(n):
        ids = sorted({1, 2 + i % 6, 3 + (i * 3) % 5})
        weights = tuple(0.25 + 0.5 * k + i / 8 for k in range(len(ids)))
        if i == 2:
            ids, weights = [1, 5, 6], (0.5, 2.0, 1.0)  # two ids with one token: the larger (first) is kept
        out.append(
            Record(
                f"r{i}",
                f"text {i}",
                SparseVector(tuple(ids), weights, tuple(TOKENS[k] for k in ids)),
                {"year": 2000 + i},
            )
        )
    return out


def columns_of(recs: list[Record]):
    import numpy as np
    from sparsebridge.connector import RecordColumns

    lengths = [len(r.sparse) for r in recs]
    return RecordColumns(
        ids=[r.id for r in recs],
        texts=[r.text for r in recs],
        payloads=[dict(r.payload) for r in recs],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        indices=np.array([i for r in recs for i in r.sparse.indices], dtype=np.uint32),
        values=np.array([w for r in recs for w in r.sparse.values], dtype=np.float32),
        tokens=np.array(TOKENS, dtype=object),
    )


def test_columns_give_the_bulk_actions_of_records(conn):
    recs = vocab_records(8)
    # float32 weights, as a dataset holds them: the Record path sees the same values.
    recs = [
        Record(
            r.id,
            r.text,
            SparseVector(r.sparse.indices, tuple(columns_of([r]).values.tolist()), r.sparse.tokens),
            r.payload,
        )
        for r in recs
    ]
    from_columns = conn.bulk_actions_columns(columns_of(recs))
    assert from_columns == conn.bulk_actions(recs)
    # Not vacuous: the two ids of one token keep the larger weight (keys by token), or both (by id).
    sparse = next(a for a in from_columns if a["_id"] == "r2")["_source"]["sparse"]
    assert sparse in ({"alpha": 0.5, "dup": 2.0}, {"1": 0.5, "5": 2.0, "6": 1.0})
    assert [a["_id"] for a in from_columns] == [f"r{i}" for i in range(8)]


def test_columns_take_the_retry_and_failure_paths(conn, engine, sleeps):
    engine.fail_items("r1", (429, "es_rejected_execution_exception"), (429, "es_rejected_execution_exception"))
    recs = vocab_records(5)
    recs[3] = Record("r3", "bad", recs[3].sparse, {"year": "not-a-year"})
    result = conn.write_columns(columns_of(recs))
    assert sorted(result.written) == ["r0", "r1", "r2", "r4"]
    assert list(result.failed) == ["r3"] and "not-a-year" in result.failed["r3"]
    assert result.retries == 2 and sleeps == [0.01, 0.02]
    assert bulk_ids(engine) == [["r0", "r1", "r2", "r3", "r4"], ["r1"], ["r1"]]
    assert conn.count() == 4
