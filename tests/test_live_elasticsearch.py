"""Live test of the ``elasticsearch`` connector on a real cluster: all of vaswani, every query, each
top 10 against an exact brute-force dot product over the same vectors.

Runs only when ``ELASTICSEARCH_URL`` is set (e.g. ``http://localhost:9200`` with
``docker/docker-compose.elasticsearch.yml``). Credentials: ``ELASTICSEARCH_API_KEY``, or
``ELASTICSEARCH_USERNAME`` (default ``elastic``) and ``ELASTICSEARCH_PASSWORD``; TLS:
``ELASTICSEARCH_CA_CERTS``, ``ELASTICSEARCH_VERIFY_CERTS=false``. Creates and then drops an index
named ``sparsebridge-live-<random>``.

Elasticsearch keeps each document weight in 9 significant bits (Lucene ``FeatureField``), so scores
are compared with a 1% tolerance and near-ties may swap (see ``lucene_testkit.compare_top_k``).
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from lucene_testkit import compare_top_k, encode_rows, exact_scores
from sparsebridge.connector import IndexMismatchError, IndexSpec, Query, Record, SearchOptions

URL = os.environ.get("ELASTICSEARCH_URL")
pytestmark = [
    pytest.mark.live,
    pytest.mark.slow,
    pytest.mark.skipif(not URL, reason="ELASTICSEARCH_URL is not set (live tests need a running Elasticsearch)"),
]


def options() -> dict:
    opts: dict = {"url": URL, "request_timeout": 120}
    if os.environ.get("ELASTICSEARCH_API_KEY"):
        opts["api_key"] = os.environ["ELASTICSEARCH_API_KEY"]
    elif os.environ.get("ELASTICSEARCH_PASSWORD"):
        opts["username"] = os.environ.get("ELASTICSEARCH_USERNAME", "elastic")
        opts["password"] = os.environ["ELASTICSEARCH_PASSWORD"]
    if os.environ.get("ELASTICSEARCH_CA_CERTS"):
        opts["ca_certs"] = os.environ["ELASTICSEARCH_CA_CERTS"]
    if os.environ.get("ELASTICSEARCH_VERIFY_CERTS", "").lower() in ("0", "false", "no"):
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
    records = [Record(d["_id"], d["text"], vec, {"bucket": int(d["_id"]) % 3}) for d, vec in zip(corpus, docs)]
    return records, {r.id: r.sparse for r in records}, [(q["_id"], v) for q, v in zip(queries, qvecs)]


@pytest.fixture(scope="module")
def index(vaswani, encoder):
    from sparsebridge_elasticsearch import ElasticsearchConnector

    records, _, _ = vaswani
    name = f"sparsebridge-live-{uuid.uuid4().hex[:10]}"
    meta = {"model": "live-test", "vocab_size": len(encoder.tokenizer), "vocab_fingerprint": name}
    spec = IndexSpec(name, payload_fields={"bucket": "integer"}, metadata=meta)
    conn = ElasticsearchConnector(**options())
    conn.ensure_index(spec)
    try:
        result = conn.write(records)
        assert not result.failed, dict(list(result.failed.items())[:5])
        yield conn, spec
    finally:
        conn.drop()
        conn.close()


def run_queries(conn, queries, flt=None) -> list:
    results = []
    for start in range(0, len(queries), 25):
        batch = [Query(sparse=v, filter=flt) for _, v in queries[start : start + 25]]
        results += conn.search(batch, SearchOptions(top_k=10, with_payload=False))
    return results


def test_everything_landed_with_its_metadata(index, vaswani):
    conn, spec = index
    assert conn.count() == len(vaswani[0])
    assert conn.index_metadata() == spec.metadata


def test_every_top_10_matches_the_exact_dot_product(index, vaswani):
    conn, _ = index
    _, doc_vectors, queries = vaswani
    problems = {}
    for (qid, qvec), res in zip(queries, run_queries(conn, queries)):
        found = compare_top_k([(h.id, h.score) for h in res.hits], exact_scores(doc_vectors, qvec), 10)
        if found:
            problems[qid] = found
    assert not problems, f"{len(problems)} of {len(queries)} queries differ: {dict(list(problems.items())[:3])}"


def test_filtered_top_10_matches_the_exact_dot_product(index, vaswani):
    conn, _ = index
    _, doc_vectors, queries = vaswani
    in_bucket = {i: v for i, v in doc_vectors.items() if int(i) % 3 == 1}
    problems = {}
    for (qid, qvec), res in zip(queries[:20], run_queries(conn, queries[:20], {"bucket": 1})):
        found = compare_top_k([(h.id, h.score) for h in res.hits], exact_scores(in_bucket, qvec), 10)
        if found:
            problems[qid] = found
    assert not problems, problems


def test_another_vocabulary_is_refused(index):
    from sparsebridge_elasticsearch import ElasticsearchConnector

    _, spec = index
    other = IndexSpec(spec.name, payload_fields=spec.payload_fields, metadata={**spec.metadata, "vocab_size": 1})
    with pytest.raises(IndexMismatchError):
        ElasticsearchConnector(**options()).ensure_index(other)
