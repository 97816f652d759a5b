"""One meaning for fusion: every backend returns the fused ranking the definition gives.

For the same documents and query vectors, each backend (Qdrant Edge for real; Elasticsearch and
OpenSearch through the engine double, in versions that fuse in the engine and in versions that
leave it to the client) answers the two legs alone and the hybrid query. The reference fusion is
computed here, from the definition in :class:`sparsebridge.connector.SearchOptions` (written
independently of :func:`sparsebridge.connector.fuse_legs`), from that backend's own legs; the
hybrid answer must match it, and all backends must agree with each other.

Weights are multiples of 1/8 and 1/4 so that Lucene's 9-bit feature weights store them exactly,
and no two documents tie within a leg.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest

pytest.importorskip("qdrant_edge")
pytest.importorskip("elasticsearch")
pytest.importorskip("opensearchpy")

from lucene_testkit import FakeEngine, FakeServer  # noqa: E402
from sparsebridge.connector import IndexSpec, Query, Record, SearchOptions, SparseVector  # noqa: E402
from sparsebridge_elasticsearch import ElasticsearchConnector  # noqa: E402
from sparsebridge_opensearch import OpenSearchConnector  # noqa: E402
from sparsebridge_qdrant import QdrantConnector  # noqa: E402

N_DOCS, VOCAB, DIM = 40, 12, 4
TOP_K, CANDIDATES = 6, 10
# Scores closer than this count as a tie: the backends break ties differently, and OpenSearch
# floors a leg's lowest min-max score at 0.001 (weighted: at most 0.001 here).
TIE = 2e-3


def corpus() -> tuple[list[Record], list[tuple[SparseVector, list[float]]]]:
    rng = random.Random(14)  # a seed whose legs have no ties (test_no_ties_within_a_leg)
    docs = []
    for i in range(N_DOCS):
        ids = sorted(rng.sample(range(VOCAB), rng.randint(2, 5)))
        sparse = SparseVector.from_pairs((t, f"tok{t}", rng.randint(1, 400) / 8) for t in ids)
        dense = [rng.randint(-8, 8) / 4 or 0.25 for _ in range(DIM)]
        docs.append(Record(f"d{i:02d}", f"doc {i}", sparse, {"lang": "en" if i % 3 else "fr"}, dense))
    queries = []
    for _ in range(4):
        ids = sorted(rng.sample(range(VOCAB), 4))
        sparse = SparseVector.from_pairs((t, f"tok{t}", rng.randint(1, 60) / 4) for t in ids)
        queries.append((sparse, [rng.randint(-8, 8) / 4 or 0.5 for _ in range(DIM)]))
    return docs, queries


# --- the reference, from the definition --------------------------------------------------------


def reference(legs: list[list[tuple[str, float]]], fusion: str, rrf_k: int, weights: tuple[float, float]):
    """Fused (id, score) best first: legs are (id, score) best first, ranks from 1."""
    total: dict[str, float] = {}
    for leg_no, leg in enumerate(legs):
        scores = [s for _, s in leg]
        for rank, (doc, s) in enumerate(leg, start=1):
            if fusion == "rrf":
                part = 1 / (rrf_k + rank)
            elif fusion == "linear":
                lo, hi = min(scores), max(scores)
                part = (1.0 if hi == lo else (s - lo) / (hi - lo)) * weights[leg_no] / sum(weights)
            else:  # dbsf: mean +- 3 sample standard deviations
                if len(scores) < 2 or statistics.stdev(scores) == 0:
                    part = 0.5
                else:
                    mu, sigma = statistics.mean(scores), statistics.stdev(scores)
                    part = (s - (mu - 3 * sigma)) / (6 * sigma)
            total[doc] = total.get(doc, 0.0) + part
    return sorted(total.items(), key=lambda kv: -kv[1])


def tie_groups(ranked: list[tuple[str, float]]) -> list[set[str]]:
    groups: list[set[str]] = []
    last = None
    for doc, score in ranked:
        if last is not None and abs(score - last) <= TIE:
            groups[-1].add(doc)
        else:
            groups.append({doc})
        last = score
    return groups


def same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]], k: int = TOP_K) -> list[str]:
    """Problems (none when equal) between the top ``k`` of ``got`` and the full fused reference
    ``want``: the same documents in the same order, ties in any order (also across the cut at
    ``k``), and the same scores."""
    problems = []
    if len(got) != min(k, len(want)):
        problems.append(f"{len(got)} hits, expected {min(k, len(want))}")
    pos = 0
    for group in tie_groups(want):
        if pos >= len(got):
            break
        part = [d for d, _ in got[pos : pos + len(group)]]
        if not set(part) <= group:
            problems.append(f"ranks {pos + 1}-{pos + len(group)}: {part}, reference {sorted(group)}")
        pos += len(group)
    want_scores = dict(want)
    for doc, score in got:
        if doc in want_scores and abs(score - want_scores[doc]) > TIE:
            problems.append(f"{doc}: fused score {score:.6g}, reference {want_scores[doc]:.6g}")
    return problems


# --- the backends -------------------------------------------------------------------------------

SPEC = dict(dense_field="dense", dense_size=DIM, payload_fields={"lang": "keyword"})


def _lucene(cls, engine):
    server = FakeServer(engine).__enter__()
    conn = cls(url=server.url, initial_backoff=0.001, max_backoff=0.002)
    conn.ensure_index(IndexSpec("fusion", **SPEC))
    return conn, server


BACKENDS = {
    "qdrant-edge": None,
    "elasticsearch-9.1 (retrievers)": (ElasticsearchConnector, dict(version="9.1.0")),
    "elasticsearch-8.13 (client-side)": (ElasticsearchConnector, dict(version="8.13.4")),
    "elasticsearch-9.1 basic licence": (ElasticsearchConnector, dict(version="9.1.0", license="basic")),
    "opensearch-3.1 (pipelines)": (OpenSearchConnector, dict(flavor="opensearch", version="3.1.0")),
    "opensearch-2.17 (rrf client-side)": (OpenSearchConnector, dict(flavor="opensearch", version="2.17.0")),
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    docs, _ = corpus()
    conns, servers = {}, []
    for name, how in BACKENDS.items():
        if how is None:
            conn = QdrantConnector(mode="edge", path=str(tmp_path_factory.mktemp("edge")), collection="fusion")
            conn.ensure_index(IndexSpec("fusion", **SPEC))
        else:
            cls, kw = how
            conn, server = _lucene(cls, FakeEngine(**kw))
            servers.append(server)
        result = conn.write(docs)
        assert not result.failed, (name, result.failed)
        conns[name] = conn
    yield conns
    for conn in conns.values():
        conn.close()
    for server in servers:
        server.__exit__(None, None, None)


def legs_of(conn, sparse, dense, flt):
    opts = SearchOptions(top_k=CANDIDATES, with_payload=False)
    (s,) = conn.search([Query(sparse=sparse, filter=flt)], opts)
    (d,) = conn.search([Query(dense=dense, filter=flt)], opts)
    return [[(h.id, h.score) for h in s.hits], [(h.id, h.score) for h in d.hits]]


@pytest.mark.parametrize("fusion", ["rrf", "linear", "dbsf"])
@pytest.mark.parametrize("flt", [None, {"lang": "en"}], ids=["all", "filtered"])
def test_every_backend_returns_the_reference_fusion(loaded, fusion, flt):
    _, queries = corpus()
    weights = (0.3, 0.7) if fusion == "linear" else (1.0, 1.0)
    opts = SearchOptions(
        top_k=TOP_K, fusion=fusion, rrf_k=5, weights=weights, prefetch_limit=CANDIDATES, with_payload=False
    )
    problems = []
    for qn, (sparse, dense) in enumerate(queries):
        rankings = {}
        for name, conn in loaded.items():
            legs = legs_of(conn, sparse, dense, flt)
            assert len(legs[0]) == CANDIDATES and len(legs[1]) == CANDIDATES, (name, legs)
            want = reference(legs, fusion, 5, weights)
            (res,) = conn.search([Query(sparse=sparse, dense=dense, filter=flt)], opts)
            got = [(h.id, h.score) for h in res.hits]
            problems += [f"{name} query {qn}: {p}" for p in same_ranking(got, want)]
            rankings[name] = want
        # The backends' references agree with each other: same legs, same definition.
        first_name, first = next(iter(rankings.items()))
        for name, want in rankings.items():
            problems += [f"{name} vs {first_name}, query {qn}: {p}" for p in same_ranking(want, first, k=len(first))]
    assert not problems, "\n".join(problems)


def test_the_fallbacks_say_so(loaded):
    _, queries = corpus()
    sparse, dense = queries[0]
    q = [Query(sparse=sparse, dense=dense)]
    notes = {
        name: conn.search(q, SearchOptions(top_k=3, fusion="rrf", rrf_k=5, prefetch_limit=CANDIDATES))[0].notes
        for name, conn in loaded.items()
    }
    assert notes["qdrant-edge"] == []
    assert notes["elasticsearch-9.1 (retrievers)"] == []
    assert notes["opensearch-3.1 (pipelines)"] == []
    assert any("no rrf retriever (8.16+)" in n for n in notes["elasticsearch-8.13 (client-side)"])
    assert any("licence" in n and "fused on the client" in n for n in notes["elasticsearch-9.1 basic licence"])
    assert any("score-ranker-processor" in n for n in notes["opensearch-2.17 (rrf client-side)"])
    linear = SearchOptions(top_k=3, fusion="linear", prefetch_limit=CANDIDATES)
    (res,) = loaded["qdrant-edge"].search(q, linear)
    assert any("fused on the client" in n for n in res.notes)


def test_the_reference_itself():
    """The reference on a hand-checked case: ranks from 1, k = 5."""
    legs = [[("a", 9.0), ("b", 5.0), ("c", 1.0)], [("c", 0.9), ("a", 0.8)]]
    rrf = dict(reference(legs, "rrf", 5, (1, 1)))
    assert rrf["a"] == pytest.approx(1 / 6 + 1 / 7) and rrf["c"] == pytest.approx(1 / 8 + 1 / 6)
    linear = dict(reference(legs, "linear", 5, (1, 3)))
    # a: sparse (9-1)/(9-1) = 1, dense (0.8-0.8)/(0.9-0.8) = 0 -> 1 * 1/4; c: 0 + 1 * 3/4
    assert linear["a"] == pytest.approx(0.25) and linear["c"] == pytest.approx(0.75)
    assert linear["b"] == pytest.approx(0.5 * 0.25)
    dbsf = dict(reference(legs, "dbsf", 5, (1, 1)))
    mu, sd = 5.0, 4.0
    assert dbsf["b"] == pytest.approx((5 - (mu - 3 * sd)) / (6 * sd))
    assert math.isclose(dbsf["b"], 0.5)


def test_no_ties_within_a_leg():
    """The precondition of the comparison: every leg (filtered or not) ranks more than the
    candidates, with distinct scores, so each backend's legs hold the same documents."""
    docs, queries = corpus()
    for sparse, dense in queries:
        q = sparse.as_index_dict()
        norm = math.sqrt(sum(x * x for x in dense))
        for keep in (lambda r: True, lambda r: r.payload["lang"] == "en"):
            kept = [r for r in docs if keep(r)]
            sp = [sum(w * q.get(i, 0.0) for i, w in zip(r.sparse.indices, r.sparse.values)) for r in kept]
            sp = [s for s in sp if s > 0]
            de = [
                sum(a * b for a, b in zip(r.dense, dense)) / (norm * math.sqrt(sum(x * x for x in r.dense)))
                for r in kept
            ]
            for leg in (sp, de):
                assert len(leg) > CANDIDATES
                assert len({round(s, 7) for s in leg}) == len(leg)
