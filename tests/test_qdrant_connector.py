"""The Qdrant connector against the real engines: Qdrant Edge (in-process) and qdrant-client's local mode.

No mocks: every test writes points into a real Qdrant engine and reads them back. References are
computed here, independently of the connector (brute-force dot products, a hand-written RRF).
"""

from __future__ import annotations

import math
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("qdrant_edge")
pytest.importorskip("qdrant_client")

from sparsebridge.connector import (  # noqa: E402
    ConnectorError,
    IndexMismatchError,
    IndexSpec,
    Query,
    Record,
    SearchOptions,
    SparseVector,
)
from sparsebridge.errors import FilterError  # noqa: E402
from sparsebridge.plugins import create_connector, get_connectors  # noqa: E402
from sparsebridge_qdrant import QdrantConnector, QdrantOptionError, point_id  # noqa: E402

VOCAB = 400
DIM = 8
META = {"model": "test/splade", "vocab_size": VOCAB, "vocab_fingerprint": "fp-1"}


# --- data and references ---------------------------------------------------------------------------


def rand_sparse(rng: random.Random, n_terms: int) -> SparseVector:
    ids = rng.sample(range(VOCAB), n_terms)
    return SparseVector.from_pairs((i, f"tok{i}", rng.uniform(0.05, 3.0)) for i in ids)


def rand_dense(rng: random.Random) -> list[float]:
    return [rng.gauss(0.0, 1.0) for _ in range(DIM)]


def make_records(n: int = 300, seed: int = 0, dense: bool = True) -> list[Record]:
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        recs.append(
            Record(
                id=f"doc-{i}",
                text=f"document number {i}",
                sparse=rand_sparse(rng, rng.randint(5, 40)),
                payload={"tag": ["red", "green", "blue"][i % 3], "n": i % 7, "flag": i % 2 == 0, "w": (i % 4) / 2},
                dense=rand_dense(rng) if dense else None,
            )
        )
    return recs


def make_queries(n: int = 12, seed: int = 1) -> list[tuple[SparseVector, list[float]]]:
    rng = random.Random(seed)
    return [(rand_sparse(rng, rng.randint(3, 25)), rand_dense(rng)) for _ in range(n)]


def sparse_scores(records: list[Record], q: SparseVector, keep=lambda r: True) -> dict[str, float]:
    qd = q.as_index_dict()
    out = {}
    for r in records:
        if not keep(r):
            continue
        s = sum(w * qd[i] for i, w in zip(r.sparse.indices, r.sparse.values) if i in qd)
        if s > 0:
            out[r.id] = s
    return out


def cosine_scores(records: list[Record], q: list[float]) -> dict[str, float]:
    qn = math.sqrt(sum(x * x for x in q))
    out = {}
    for r in records:
        d = r.dense
        out[r.id] = sum(a * b for a, b in zip(d, q)) / (qn * math.sqrt(sum(x * x for x in d)))
    return out


def rrf_reference(rankings: list[list[str]], k: int) -> dict[str, float]:
    """Reciprocal rank fusion as Cormack et al. define it: sum over lists of 1 / (k + rank), rank from 1."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return fused


def assert_top_k(got: list[tuple[str, float]], reference: dict[str, float], k: int, tol: float) -> None:
    """``got`` is a correct top ``k`` of ``reference`` (id -> score), ties at the cut in any order."""
    ranked = sorted(reference.values(), reverse=True)
    assert len(got) == min(k, len(ranked)), (len(got), min(k, len(ranked)))
    got_scores = [s for _, s in got]
    assert got_scores == pytest.approx(ranked[: len(got)], abs=tol)
    for doc, score in got:
        assert doc in reference, f"{doc} is not a candidate"
        assert score == pytest.approx(reference[doc], abs=tol), doc
    if got:
        cut = ranked[len(got) - 1]
        must = {d for d, s in reference.items() if s > cut + tol}
        assert must <= {d for d, _ in got}, f"missing above the cut: {must - {d for d, _ in got}}"


def assert_same_ranking(a: list[tuple[str, float]], b: list[tuple[str, float]], tol: float = 1e-6) -> None:
    """Two rankings agree: same scores, same ids above the last score (ties may order either way, and
    a tie at the cut may keep different ids)."""
    assert len(a) == len(b)
    assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=tol)
    if a:
        cut = a[-1][1]
        assert {d for d, s in a if s > cut + tol} == {d for d, s in b if s > cut + tol}


def pairs(result) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in result.hits]


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(params=["edge", "local"])
def mode(request) -> str:
    return request.param


@pytest.fixture
def options(mode, tmp_path) -> dict:
    if mode == "edge":
        return {"mode": "edge", "path": str(tmp_path / "edge")}
    return {"mode": "local", "location": ":memory:"}


@pytest.fixture
def conn(options):
    c = QdrantConnector(**options)
    yield c
    c.close()


def hybrid_spec(name: str = "docs", **kw) -> IndexSpec:
    return IndexSpec(
        name=name,
        dense_field="dense",
        dense_size=DIM,
        payload_fields={"tag": "keyword", "n": "integer", "flag": "boolean", "w": "float"},
        metadata=dict(META),
        **kw,
    )


@pytest.fixture
def loaded(conn):
    records = make_records()
    conn.ensure_index(hybrid_spec())
    res = conn.write(records)
    assert res.failed == {} and len(res.written) == len(records)
    return conn, records


# --- plugin and options ----------------------------------------------------------------------------


def test_registered_as_plugin():
    assert get_connectors()["qdrant"] is QdrantConnector
    c = create_connector("qdrant", mode="local")
    assert isinstance(c, QdrantConnector)
    c.close()


def test_unknown_or_misplaced_option_is_refused(tmp_path):
    with pytest.raises(QdrantOptionError, match="mode='server'"):
        QdrantConnector(mode="edge", path=str(tmp_path), url="http://127.0.0.1:6333")
    with pytest.raises(QdrantOptionError, match="unknown Qdrant mode"):
        QdrantConnector(mode="cloud")
    with pytest.raises(ConnectorError, match="url"):
        QdrantConnector(mode="server")


def test_point_ids_are_deterministic_uuids():
    import uuid

    assert point_id("doc-1") == point_id("doc-1") != point_id("doc-2")
    assert uuid.UUID(point_id("doc-1")).version == 5


def test_repr_hides_secrets():
    c = QdrantConnector(mode="server", url="https://user:hunter2@qdrant.example:6333", api_key="s3cr3t-key")
    text = repr(c)
    assert "s3cr3t-key" not in text and "hunter2" not in text
    assert "api_key='***'" in text
    c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.filterwarnings("ignore:the Qdrant api_key is sent unencrypted")
@pytest.mark.parametrize("grpc", [False, True])
def test_unreachable_server_fails_fast_in_one_line(grpc, monkeypatch):
    port = _free_port()
    opts = {"mode": "server", "url": f"http://127.0.0.1:{port}", "api_key": "s3cr3t-key", "timeout": 5}
    dialled = f"127.0.0.1:{port}"
    if grpc:
        opts.update(prefer_grpc=True, grpc_port=_free_port())
        dialled = f"127.0.0.1:{opts['grpc_port']} (gRPC)"  # the address it dialled, not the REST one
    c = QdrantConnector(**opts)
    # "Fast" is checked as what happened, not in seconds (a loaded machine is slow either way): one
    # request, no back-off sleep, and the cause is the refusal, not the 5 s timeout running out.
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    requests: list[str] = []
    client = c._backend.client
    for name in ("get_collections", "collection_exists", "get_collection"):
        real = getattr(client, name)
        monkeypatch.setattr(
            client, name, lambda *a, _real=real, _name=name, **k: requests.append(_name) or _real(*a, **k)
        )
    with pytest.raises(ConnectorError) as info:
        c.ensure_index(hybrid_spec())
    msg = str(info.value)
    assert len(requests) == 1 and slept == [], (requests, slept)
    assert "Connection refused" in msg, msg
    assert "\n" not in msg
    assert dialled in msg and "cannot reach Qdrant" in msg
    assert "s3cr3t-key" not in msg
    c.close()


def test_api_key_over_http_is_one_warning_in_our_words():
    from sparsebridge.errors import SparsebridgeWarning

    with pytest.warns(
        SparsebridgeWarning, match="the Qdrant api_key is sent unencrypted to http://q.invalid:6333"
    ) as seen:
        QdrantConnector(mode="server", url="http://q.invalid:6333", api_key="k").close()
    assert [type(w.message) for w in seen] == [SparsebridgeWarning]  # the client's raw UserWarning is gone


def test_no_collection_selected(conn):
    with pytest.raises(ConnectorError, match="ensure_index"):
        conn.search([Query(sparse=rand_sparse(random.Random(0), 3))])


def test_missing_collection(options):
    c = QdrantConnector(**options, collection="nope")
    assert c.index_metadata() is None
    assert c.count() == 0
    with pytest.raises(ConnectorError, match="does not exist"):
        c.search([Query(sparse=rand_sparse(random.Random(0), 3))])
    c.drop()  # a missing index is not an error
    c.close()


# --- lifecycle -------------------------------------------------------------------------------------


def test_write_count_search_delete_drop(loaded):
    conn, records = loaded
    assert conn.count() == len(records)
    assert conn.index_metadata() == META
    for q, _ in make_queries(8):
        (res,) = conn.search([Query(sparse=q)], SearchOptions(top_k=10))
        assert_top_k(pairs(res), sparse_scores(records, q), 10, 1e-4)
        assert all(h.payload["text"].startswith("document number") for h in res.hits)
        assert all("doc_id" not in h.payload for h in res.hits)

    got = conn.get(["doc-3", "doc-4", "unknown"])
    assert set(got) == {"doc-3", "doc-4"}
    assert got["doc-3"] == {"tag": "red", "n": 3, "flag": False, "w": 1.5, "text": "document number 3"}

    conn.delete(["doc-3", "doc-4", "never-written"])
    assert conn.count() == len(records) - 2
    assert conn.get(["doc-3"]) == {}
    q = records[3].sparse
    (res,) = conn.search([Query(sparse=q)], SearchOptions(top_k=20))
    assert "doc-3" not in {h.id for h in res.hits}

    conn.drop()
    assert conn.count() == 0
    assert conn.index_metadata() is None
    conn.drop()


def test_rewrite_is_idempotent_and_updates(loaded):
    conn, records = loaded
    res = conn.write(records[:50])
    assert len(res.written) == 50 and not res.failed
    assert conn.count() == len(records)
    changed = Record(id="doc-1", text="new text", sparse=records[1].sparse, payload={"tag": "violet"})
    conn.write([changed, changed])  # duplicates in one batch: one point
    assert conn.count() == len(records)
    assert conn.get(["doc-1"])["doc-1"] == {"tag": "violet", "text": "new text"}


def test_bad_items_fail_alone(conn):
    conn.ensure_index(hybrid_spec())
    good = make_records(5)
    bad = [
        Record(id="short-dense", text="x", sparse=good[0].sparse, dense=[1.0, 2.0]),
        Record(id="nan-dense", text="x", sparse=good[0].sparse, dense=[float("nan")] * DIM),
        Record(id="reserved", text="x", sparse=good[0].sparse, payload={"doc_id": "other"}),
        Record(id="not-json", text="x", sparse=good[0].sparse, payload={"obj": object()}),
        Record(id="huge-index", text="x", sparse=SparseVector((2**32,), (1.0,), ("t",))),
    ]
    res = conn.write(good[:3] + bad + good[3:])
    assert sorted(res.written) == sorted(r.id for r in good)
    assert set(res.failed) == {r.id for r in bad}
    assert "dimensions" in res.failed["short-dense"]
    assert "reserved" in res.failed["reserved"]
    assert "uint32" in res.failed["huge-index"]
    assert conn.count() == 5


def test_sparse_only_index_refuses_dense_only_query(conn):
    conn.ensure_index(IndexSpec(name="sparse-only", metadata=dict(META)))
    records = make_records(40, dense=False)
    conn.write(records)
    with pytest.raises(ConnectorError, match="no dense vector"):
        conn.search([Query(dense=rand_dense(random.Random(0)))])
    q, d = make_queries(1)[0]
    (res,) = conn.search([Query(sparse=q, dense=d)])
    assert res.notes and "sparse vector only" in res.notes[0]
    assert_top_k(pairs(res), sparse_scores(records, q), 10, 1e-4)
    res = conn.write([Record(id="with-dense", text="x", sparse=q, dense=d)])
    assert "has none" in res.failed["with-dense"]


# --- filters and batches ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flt, keep",
    [
        ({"tag": "red"}, lambda p: p["tag"] == "red"),
        ({"n": 3}, lambda p: p["n"] == 3),
        ({"flag": True}, lambda p: p["flag"] is True),
        ({"flag": False}, lambda p: p["flag"] is False),
        ({"w": 0.5}, lambda p: p["w"] == 0.5),
        ({"tag": ["red", "blue"]}, lambda p: p["tag"] in ("red", "blue")),
        ({"n": [1, 2, 6]}, lambda p: p["n"] in (1, 2, 6)),
        ({"n": [1, "x"]}, lambda p: p["n"] == 1),
        ({"tag": "green", "flag": True, "n": [0, 1, 2, 3]}, lambda p: p["tag"] == "green" and p["flag"] and p["n"] < 4),
        ({"tag": []}, lambda p: False),
    ],
)
def test_filters(loaded, flt, keep):
    conn, records = loaded
    for q, _ in make_queries(4, seed=7):
        (res,) = conn.search([Query(sparse=q, filter=flt)], SearchOptions(top_k=15))
        reference = sparse_scores(records, q, keep=lambda r: keep(r.payload))
        assert_top_k(pairs(res), reference, 15, 1e-4)


def test_filter_values_are_checked(loaded):
    conn, _ = loaded
    with pytest.raises(FilterError, match="filter value"):  # sparsebridge.filters: the same on every backend
        conn.search([Query(sparse=rand_sparse(random.Random(0), 3), filter={"tag": {"nested": 1}})])


def test_batch_equals_single_queries(loaded):
    conn, _ = loaded
    qs = make_queries(20, seed=3)
    queries = [Query(sparse=s) for s, _ in qs[:8]] + [Query(dense=d) for _, d in qs[8:14]]
    queries += [Query(sparse=s, dense=d, filter={"tag": "blue"}) for s, d in qs[14:]]
    opts = SearchOptions(top_k=7, rrf_k=5, prefetch_limit=30)
    batch = conn.search(queries, opts)
    assert len(batch) == len(queries)
    for q, res in zip(queries, batch):
        (single,) = conn.search([q], opts)
        assert_same_ranking(pairs(single), pairs(res))
    assert conn.search([], opts) == []


def test_without_payload_hits_keep_original_ids(loaded):
    conn, records = loaded
    q = records[10].sparse
    (res,) = conn.search([Query(sparse=q)], SearchOptions(top_k=5, with_payload=False))
    assert res.hits[0].id == "doc-10"
    assert all(h.payload == {} for h in res.hits)


def test_dense_only_matches_brute_force(loaded):
    conn, records = loaded
    for _, d in make_queries(6, seed=11):
        (res,) = conn.search([Query(dense=d)], SearchOptions(top_k=10, backend_options={"exact": True}))
        assert_top_k(pairs(res), cosine_scores(records, d), 10, 1e-4)


# --- hybrid ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rrf_k", [1, 7, 60])
def test_rrf_equals_reference_fusion(loaded, rrf_k):
    conn, records = loaded
    cand, top_k = 25, 12
    for s, d in make_queries(10, seed=5):
        # The rankings fused: sparse-only and dense-only top `cand`, each checked against brute force.
        (sp,) = conn.search([Query(sparse=s)], SearchOptions(top_k=cand))
        (de,) = conn.search([Query(dense=d)], SearchOptions(top_k=cand))
        assert_top_k(pairs(sp), sparse_scores(records, s), cand, 1e-4)
        assert_top_k(pairs(de), cosine_scores(records, d), cand, 1e-4)
        reference = rrf_reference([[h.id for h in sp.hits], [h.id for h in de.hits]], rrf_k)
        (hy,) = conn.search(
            [Query(sparse=s, dense=d)], SearchOptions(top_k=top_k, fusion="rrf", rrf_k=rrf_k, prefetch_limit=cand)
        )
        assert_top_k(pairs(hy), reference, top_k, 1e-6)


def test_rrf_with_filter_fuses_filtered_rankings(loaded):
    conn, records = loaded
    flt = {"tag": ["red", "green"]}
    for s, d in make_queries(5, seed=9):
        (sp,) = conn.search([Query(sparse=s, filter=flt)], SearchOptions(top_k=20))
        (de,) = conn.search([Query(dense=d, filter=flt)], SearchOptions(top_k=20))
        reference = rrf_reference([[h.id for h in sp.hits], [h.id for h in de.hits]], 10)
        opts = SearchOptions(top_k=10, rrf_k=10, prefetch_limit=20)
        (hy,) = conn.search([Query(sparse=s, dense=d, filter=flt)], opts)
        assert_top_k(pairs(hy), reference, 10, 1e-6)
        assert all(h.payload["tag"] in ("red", "green") for h in hy.hits)


def test_dbsf_is_sane(loaded):
    conn, records = loaded
    # A query built from doc-42's own vectors: doc-42 tops both rankings, so it must top the fusion.
    target = records[42]
    opts = SearchOptions(top_k=10, fusion="dbsf", prefetch_limit=30)
    (res,) = conn.search([Query(sparse=target.sparse, dense=list(target.dense))], opts)
    assert res.hits[0].id == "doc-42"
    for s, d in make_queries(5, seed=13):
        (hy,) = conn.search([Query(sparse=s, dense=d)], opts)
        (sp,) = conn.search([Query(sparse=s)], SearchOptions(top_k=30))
        (de,) = conn.search([Query(dense=d)], SearchOptions(top_k=30))
        assert len(hy.hits) == 10
        scores = [h.score for h in hy.hits]
        assert scores == sorted(scores, reverse=True)
        assert all(math.isfinite(x) for x in scores)
        assert {h.id for h in hy.hits} <= {h.id for h in sp.hits} | {h.id for h in de.hits}


def test_edge_and_local_rank_alike(tmp_path):
    records = make_records(250, seed=21)
    edge = QdrantConnector(mode="edge", path=str(tmp_path / "edge"))
    local = QdrantConnector(mode="local", location=":memory:")
    try:
        for c in (edge, local):
            c.ensure_index(hybrid_spec("same"))
            c.write(records)
        qs = make_queries(15, seed=22)
        queries = [Query(sparse=s) for s, _ in qs[:5]] + [Query(dense=d) for _, d in qs[5:10]]
        queries += [Query(sparse=s, dense=d) for s, d in qs[10:]]
        for fusion in ("rrf", "dbsf"):
            opts = SearchOptions(top_k=10, fusion=fusion, rrf_k=3, prefetch_limit=40)
            for q, qe_res, lo_res in zip(queries, edge.search(queries, opts), local.search(queries, opts)):
                assert_same_ranking(pairs(qe_res), pairs(lo_res), 1e-4)
                if q.sparse is None or q.dense is None:  # continuous scores, no ties: the very same order
                    assert [h.id for h in qe_res.hits] == [h.id for h in lo_res.hits]
    finally:
        edge.close()
        local.close()


# --- index checks ----------------------------------------------------------------------------------


def test_ensure_index_twice_is_fine(loaded):
    conn, records = loaded
    conn.ensure_index(hybrid_spec())
    assert conn.count() == len(records)


def test_ensure_index_mismatches(conn):
    conn.ensure_index(hybrid_spec())
    with pytest.raises(IndexMismatchError, match=r"size 8.*16"):
        conn.ensure_index(IndexSpec(name="docs", dense_field="dense", dense_size=16, metadata=dict(META)))
    with pytest.raises(IndexMismatchError, match="no sparse vector named 'splade'"):
        conn.ensure_index(
            IndexSpec(name="docs", sparse_field="splade", dense_field="dense", dense_size=8, metadata=dict(META))
        )
    with pytest.raises(IndexMismatchError, match="another vocabulary"):
        conn.ensure_index(IndexSpec(name="docs", metadata={**META, "vocab_fingerprint": "fp-2"}))
    with pytest.raises(IndexMismatchError, match="dot"):
        conn.ensure_index(hybrid_spec(options={"distance": "dot"}))
    conn.ensure_index(IndexSpec(name="plain", metadata=dict(META)))
    with pytest.raises(IndexMismatchError, match="no dense vector named 'dense'"):
        conn.ensure_index(IndexSpec(name="plain", dense_field="dense", dense_size=8, metadata=dict(META)))
    # An index opened without its dense field still serves hybrid queries with it.
    conn.ensure_index(IndexSpec(name="docs", metadata=dict(META)))
    conn.write(make_records(20))
    s, d = make_queries(1)[0]
    (res,) = conn.search([Query(sparse=s, dense=d)])
    assert res.notes == [] and res.hits


def test_invalid_collection_name(conn):
    with pytest.raises(ConnectorError, match="invalid collection name"):
        conn.ensure_index(IndexSpec(name="../escape"))


# --- persistence -----------------------------------------------------------------------------------


def test_edge_reopen_from_disk(tmp_path):
    path = str(tmp_path / "edge")
    records = make_records(120)
    c = QdrantConnector(mode="edge", path=path)
    c.ensure_index(hybrid_spec("persist"))
    c.write(records)
    q = records[7].sparse
    before = pairs(c.search([Query(sparse=q)])[0])
    c.close()

    c2 = QdrantConnector(mode="edge", path=path, collection="persist")
    assert c2.count() == len(records)
    assert c2.index_metadata() == META
    assert pairs(c2.search([Query(sparse=q)])[0]) == before
    s, d = make_queries(1)[0]
    assert c2.search([Query(sparse=s, dense=d)])[0].hits  # the dense field comes from the sidecar
    c2.close()
    assert (Path(path) / "persist" / "sparsebridge.json").is_file()


def test_edge_connectors_of_one_process_share_the_folder(tmp_path):
    path = str(tmp_path / "edge")
    a = QdrantConnector(mode="edge", path=path)
    a.ensure_index(hybrid_spec("shared"))
    a.write(make_records(30))
    b = QdrantConnector(mode="edge", path=path, collection="shared")
    assert b.count() == 30
    a.close()
    assert b.count() == 30
    b.close()


def test_local_path_reopen(tmp_path):
    path = str(tmp_path / "local")
    records = make_records(60)
    c = QdrantConnector(mode="local", path=path)
    c.ensure_index(hybrid_spec("persist"))
    c.write(records)
    c.close()
    c2 = QdrantConnector(mode="local", path=path, collection="persist")
    assert c2.count() == 60
    assert c2.index_metadata() == META
    c2.close()


_CHILD = textwrap.dedent(
    """
    import os, random, signal, sys
    sys.path[:0] = {tests_dir!r}
    from test_qdrant_connector import hybrid_spec, make_records
    from sparsebridge_qdrant import QdrantConnector

    c = QdrantConnector(mode="edge", path={path!r})
    c.ensure_index(hybrid_spec("crash"))
    records = make_records({n})
    mode = sys.argv[1]
    if mode == "kill-after-write":
        res = c.write(records)
        print("written", len(res.written), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    for start in range(0, len(records), 25):
        res = c.write(records[start:start + 25])
        print("acked", start + len(res.written), flush=True)
    print("done", flush=True)
    """
)


def _child(tmp_path: Path, n: int, mode: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(tests_dir=[str(Path(__file__).parent)], path=str(tmp_path / "edge"), n=n))
    return subprocess.Popen(
        [sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_edge_write_survives_sigkill(tmp_path):
    proc = _child(tmp_path, 200, "kill-after-write")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert "written 200" in out
    c = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="crash")
    assert c.count() == 200
    assert c.index_metadata() == META
    q = make_records(200)[5].sparse
    assert c.search([Query(sparse=q)])[0].hits[0].id == "doc-5"
    c.close()


@pytest.mark.slow
def test_edge_sigkill_mid_ingest_reopens_cleanly(tmp_path):
    n = 4000
    proc = _child(tmp_path, n, "ingest")
    acked = 0
    try:
        for line in proc.stdout:
            if line.startswith("acked"):
                acked = int(line.split()[1])
                if acked >= 500:
                    break
        assert acked >= 500, proc.stderr.read()
        # While the child holds the folder, another process cannot open it: a clear one-line error.
        with pytest.raises(ConnectorError, match="another process") as info:
            QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="crash").count()
        assert "\n" not in str(info.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    c = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), collection="crash")
    got = c.count()
    assert acked <= got <= n
    records = make_records(n)
    q = records[3].sparse
    assert c.search([Query(sparse=q)])[0].hits[0].id == "doc-3"
    # Running the ingest again completes the collection without duplicates.
    c.ensure_index(hybrid_spec("crash"))
    c.write(records)
    assert c.count() == n
    c.close()


def columns_of(records: list[Record]):
    """A batch as a vector dataset's ingest hands it over: flat arrays, float32 weights."""
    import numpy as np
    from sparsebridge.connector import RecordColumns

    return RecordColumns(
        ids=[r.id for r in records],
        texts=[r.text for r in records],
        payloads=[dict(r.payload) for r in records],
        offsets=np.concatenate([[0], np.cumsum([len(r.sparse) for r in records])]).astype(np.int64),
        indices=np.array([i for r in records for i in r.sparse.indices], dtype=np.uint32),
        values=np.array([w for r in records for w in r.sparse.values], dtype=np.float32),
        tokens=np.array([f"tok{i}" for i in range(VOCAB)], dtype=object),
    )


def test_edge_write_columns_stores_what_write_stores(tmp_path):
    records = make_records(120, dense=False)
    cols = columns_of(records)
    # The Record path with the same float32 weights the columns hold.
    by_records = [
        Record(
            r.id,
            r.text,
            SparseVector(r.sparse.indices, tuple(columns_of([r]).values.tolist()), r.sparse.tokens),
            r.payload,
        )
        for r in records
    ]
    spec = IndexSpec(name="cols", payload_fields={"tag": "keyword"}, metadata=dict(META))
    stored = []
    for name, write in (("columns", lambda c: c.write_columns(cols)), ("records", lambda c: c.write(by_records))):
        c = QdrantConnector(mode="edge", path=str(tmp_path / name), flush="close")
        c.ensure_index(spec)
        result = write(c)
        assert sorted(result.written) == sorted(r.id for r in records) and not result.failed
        hits = c.search([Query(sparse=r.sparse, filter={"tag": "red"}) for r in records[:10]], SearchOptions(top_k=5))
        stored.append((c.count(), c.get([r.id for r in records]), [pairs(h) for h in hits], list(c.export([]))))
        c.close()
    assert stored[0][0] == 120 and stored[0][1]["doc-3"] == {
        "tag": "red",
        "n": 3,
        "flag": False,
        "w": 1.5,
        "text": "document number 3",
    }
    assert stored[0][:2] == stored[1][:2]
    # The engine sums float32 products in no fixed order: scores agree to float32 precision.
    for a, b in zip(stored[0][2], stored[1][2]):
        assert_same_ranking(a, b, tol=1e-4)
    assert sorted((r.id, r.sparse.indices, r.sparse.values) for b in stored[0][3] for r in b) == sorted(
        (r.id, r.sparse.indices, r.sparse.values) for b in stored[1][3] for r in b
    )


def test_edge_write_columns_names_bad_rows_as_write_does(tmp_path):
    records = make_records(6, dense=False)
    cols = columns_of(records)
    cols.payloads[1] = {"doc_id": "someone else"}  # the reserved id key
    cols.payloads[2] = {"x": float("nan")}
    cols.payload_constants = True
    c = QdrantConnector(mode="edge", path=str(tmp_path / "edge"))
    c.ensure_index(IndexSpec(name="bad", metadata=dict(META)))
    result = c.write_columns(cols)
    assert sorted(result.written) == ["doc-0", "doc-3", "doc-4", "doc-5"]
    assert "reserved" in result.failed["doc-1"] and "JSON" in result.failed["doc-2"]
    assert c.count() == 4
    c.close()


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"flush": "sometimes"}, "flush must be 'interval', 'write' (or true), or 'close' (or false), got 'sometimes'"),
        ({"flush_interval": -1}, "flush_interval must be 0 or more seconds, got -1"),
        ({"flush_interval": "soon"}, "flush_interval must be a number of seconds, got 'soon'"),
    ],
)
def test_edge_flush_options_are_checked(tmp_path, options, needle):
    with pytest.raises(ConnectorError) as info:
        QdrantConnector(mode="edge", path=str(tmp_path / "edge"), **options)
    assert str(info.value) == needle


@pytest.mark.parametrize(
    ("flush", "policy"), [(True, "write"), ("WRITE", "write"), (False, "close"), ("interval", "interval")]
)
def test_edge_flush_policies(tmp_path, flush, policy):
    c = QdrantConnector(mode="edge", path=str(tmp_path / "edge"), flush=flush)
    assert c._backend.flush == policy
    assert QdrantConnector(mode="edge", path=str(tmp_path / "edge"))._backend.flush == "interval"  # the default
