"""Live test of the ``opensearch`` connector on a real cluster: all of vaswani, every query, each top
10 against an exact brute-force dot product over the same vectors.

Runs only when ``OPENSEARCH_URL`` is set (e.g. ``https://localhost:9200`` with
``docker/docker-compose.opensearch.yml``). Credentials: ``OPENSEARCH_USERNAME`` (default ``admin``)
and ``OPENSEARCH_PASSWORD``; TLS: ``OPENSEARCH_CA_CERTS``, ``OPENSEARCH_VERIFY_CERTS=false`` (the
demo configuration's certificates are self-signed). Creates and then drops indexes named
``sparsebridge-live-<random>``.

``rank_features`` keeps each document weight in 9 significant bits (Lucene ``FeatureField``), so
scores are compared with a 1% tolerance and near-ties may swap (``lucene_testkit.compare_top_k``).
The SEISMIC ``sparse_vector`` field (3.3+) is approximate and quantizes weights to 8 bits; its test
only asks for a high overlap with the exact top 10.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from lucene_testkit import compare_top_k, encode_rows, exact_scores
from sparsebridge.connector import IndexSpec, Query, Record, SearchOptions, SparseVector

URL = os.environ.get("OPENSEARCH_URL")
pytestmark = [
    pytest.mark.live,
    pytest.mark.slow,
    pytest.mark.skipif(not URL, reason="OPENSEARCH_URL is not set (live tests need a running OpenSearch)"),
]


def options(**extra) -> dict:
    opts: dict = {"url": URL, "request_timeout": 120, **extra}
    if os.environ.get("OPENSEARCH_PASSWORD"):
        opts["username"] = os.environ.get("OPENSEARCH_USERNAME", "admin")
        opts["password"] = os.environ["OPENSEARCH_PASSWORD"]
    if os.environ.get("OPENSEARCH_CA_CERTS"):
        opts["ca_certs"] = os.environ["OPENSEARCH_CA_CERTS"]
    if os.environ.get("OPENSEARCH_VERIFY_CERTS", "").lower() in ("0", "false", "no"):
        opts["verify_certs"] = False
    return opts


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def vaswani(encoder, data_dir):
    corpus = read_jsonl(data_dir / "vaswani" / "corpus.jsonl")
    queries = read_jsonl(data_dir / "vaswani" / "queries.jsonl")
    docs = encode_rows(encoder.encode_document, [d["text"] for d in corpus], encoder.tokenizer)
    qvecs = encode_rows(encoder.encode_query, [q["text"] for q in queries], encoder.tokenizer)
    records = [Record(d["_id"], d["text"], vec, {}) for d, vec in zip(corpus, docs)]
    return records, {r.id: r.sparse for r in records}, [(q["_id"], v) for q, v in zip(queries, qvecs)]


def ingest(vaswani, encoder, **conn_options):
    from sparsebridge_opensearch import OpenSearchConnector

    records, _, _ = vaswani
    name = f"sparsebridge-live-{uuid.uuid4().hex[:10]}"
    meta = {"model": "live-test", "vocab_size": len(encoder.tokenizer), "vocab_fingerprint": name}
    conn = OpenSearchConnector(**options(**conn_options))
    spec = IndexSpec(name, metadata=meta)
    conn.ensure_index(spec)
    result = conn.write(records)
    assert not result.failed, dict(list(result.failed.items())[:5])
    return conn, spec


def run_queries(conn, vectors, **backend) -> list:
    results = []
    for start in range(0, len(vectors), 25):
        batch = [Query(sparse=v) for v in vectors[start : start + 25]]
        results += conn.search(batch, SearchOptions(top_k=10, with_payload=False, backend_options=backend))
    return results


@pytest.fixture(scope="module")
def rank_features_index(vaswani, encoder):
    conn, spec = ingest(vaswani, encoder)
    try:
        yield conn, spec
    finally:
        conn.drop()
        conn.close()


def test_everything_landed_with_its_metadata(rank_features_index, vaswani):
    conn, spec = rank_features_index
    assert conn.count() == len(vaswani[0])
    assert conn.index_metadata() == spec.metadata


def test_every_top_10_matches_the_exact_dot_product(rank_features_index, vaswani):
    conn, _ = rank_features_index
    _, doc_vectors, queries = vaswani
    problems = {}
    for (qid, qvec), res in zip(queries, run_queries(conn, [v for _, v in queries])):
        found = compare_top_k([(h.id, h.score) for h in res.hits], exact_scores(doc_vectors, qvec), 10)
        if found:
            problems[qid] = found
    assert not problems, f"{len(problems)} of {len(queries)} queries differ: {dict(list(problems.items())[:3])}"


def test_queries_above_64_are_rescaled_and_rank_the_same(rank_features_index, vaswani):
    conn, _ = rank_features_index
    _, doc_vectors, queries = vaswani
    loud = [SparseVector(v.indices, tuple(w * 100 for w in v.values), v.tokens) for _, v in queries[:20]]
    for qvec, res in zip(loud, run_queries(conn, loud)):
        assert any("rescaled" in n for n in res.notes)
        assert not compare_top_k([(h.id, h.score) for h in res.hits], exact_scores(doc_vectors, qvec), 10)


def test_seismic_sparse_vector_finds_nearly_the_exact_top_10(vaswani, encoder):
    from sparsebridge_opensearch import OpenSearchConnector

    probe = OpenSearchConnector(**options())
    if probe.server_version < (3, 3):
        pytest.skip(f"SEISMIC sparse_vector needs OpenSearch 3.3+, server is {probe.server_version}")
    records, doc_vectors, queries = vaswani
    # Quantization ceilings at the data's largest weights, so that nothing is clipped.
    ceiling_ingest = max(max(r.sparse.values, default=0) for r in records) * 1.01
    ceiling_search = max(max(v.values, default=0) for _, v in queries) * 1.01
    conn, _ = ingest(
        vaswani,
        encoder,
        sparse_field_type="sparse_vector",
        quantization_ceiling_ingest=ceiling_ingest,
        quantization_ceiling_search=min(ceiling_search, 64.0),
    )
    try:
        overlaps = []
        for (_, qvec), res in zip(queries, run_queries(conn, [v for _, v in queries], heap_factor=2.0)):
            exact = sorted(exact_scores(doc_vectors, qvec).items(), key=lambda kv: -kv[1])[:10]
            want = {d for d, _ in exact}
            overlaps.append(len(want & {h.id for h in res.hits}) / max(len(want), 1))
        assert sum(overlaps) / len(overlaps) >= 0.8, overlaps
    finally:
        conn.drop()
        conn.close()
