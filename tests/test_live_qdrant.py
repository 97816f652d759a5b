"""The Qdrant connector against a running Qdrant server (``mode="server"``).

Runs only when ``QDRANT_URL`` is set, e.g. with docker/docker-compose.qdrant.yml::

    docker compose -f docker/docker-compose.qdrant.yml up -d
    QDRANT_URL=http://127.0.0.1:6333 python -m pytest -m live tests/test_live_qdrant.py

``QDRANT_API_KEY`` is sent when set; ``QDRANT_PREFER_GRPC=1`` switches to gRPC. Every collection made
here has a random name and is dropped at the end.
"""

from __future__ import annotations

import os
import uuid

import pytest

pytest.importorskip("qdrant_client")

from sparsebridge.connector import IndexMismatchError, IndexSpec, Query, SearchOptions  # noqa: E402
from sparsebridge_qdrant import QdrantConnector  # noqa: E402
from test_qdrant_connector import (  # noqa: E402
    META,
    assert_top_k,
    cosine_scores,
    hybrid_spec,
    make_queries,
    make_records,
    pairs,
    rrf_reference,
    sparse_scores,
)
from test_qdrant_vaswani import (  # noqa: E402, F401 - fixtures are used by name
    N_DOCS,
    N_QUERIES,
    TOL,
    TOP_K,
    _ingest,
    _metadata,
    check_top_k,
    dense_encoded,
    sparse_encoded,
    vaswani,
)
from test_qdrant_vaswani import rrf_reference as rrf_reference_vaswani  # noqa: E402

QDRANT_URL = os.environ.get("QDRANT_URL")

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not QDRANT_URL,
        reason="QDRANT_URL is not set (docker compose -f docker/docker-compose.qdrant.yml up -d; "
        "export QDRANT_URL=http://127.0.0.1:6333)",
    ),
]


def server(**extra) -> QdrantConnector:
    opts = {"mode": "server", "url": QDRANT_URL}
    if os.environ.get("QDRANT_API_KEY"):
        opts["api_key"] = os.environ["QDRANT_API_KEY"]
    if os.environ.get("QDRANT_PREFER_GRPC", "").lower() in ("1", "true", "yes"):
        opts["prefer_grpc"] = True
    opts.update(extra)
    return QdrantConnector(**opts)


@pytest.fixture
def conn():
    name = f"sparsebridge-live-{uuid.uuid4().hex[:10]}"
    c = server(collection=name)
    yield c, name
    try:
        c.drop()
    finally:
        c.close()


def test_live_lifecycle_filters_and_fusion(conn):
    c, name = conn
    records = make_records()
    c.ensure_index(hybrid_spec(name))
    assert c.index_metadata() == META
    res = c.write(records)
    assert not res.failed and c.count() == len(records)
    c.write(records[:40])
    assert c.count() == len(records)
    for s, d in make_queries(5):
        (sp,) = c.search([Query(sparse=s)], SearchOptions(top_k=25))
        assert_top_k(pairs(sp), sparse_scores(records, s), 25, 1e-4)
        (de,) = c.search([Query(dense=d)], SearchOptions(top_k=25, backend_options={"exact": True}))
        assert_top_k(pairs(de), cosine_scores(records, d), 25, 1e-4)
        (fl,) = c.search([Query(sparse=s, filter={"tag": ["red", "blue"], "flag": True})], SearchOptions(top_k=10))
        keep = lambda r: r.payload["tag"] in ("red", "blue") and r.payload["flag"]  # noqa: E731
        assert_top_k(pairs(fl), sparse_scores(records, s, keep=keep), 10, 1e-4)
        reference = rrf_reference([[h.id for h in sp.hits], [h.id for h in de.hits]], 7)
        opts = SearchOptions(top_k=10, rrf_k=7, prefetch_limit=25, backend_options={"exact": True})
        (hy,) = c.search([Query(sparse=s, dense=d)], opts)
        assert_top_k(pairs(hy), reference, 10, 1e-6)
    with pytest.raises(IndexMismatchError, match="size 8"):
        c.ensure_index(IndexSpec(name=name, dense_field="dense", dense_size=16, metadata=dict(META)))
    c.delete(["doc-1", "doc-2"])
    assert c.count() == len(records) - 2
    reopened = server(collection=name)
    assert reopened.count() == len(records) - 2 and reopened.index_metadata() == META
    reopened.close()


@pytest.mark.slow
def test_live_vaswani_exact_top10_and_rrf(conn, vaswani, sparse_encoded, dense_encoded):  # noqa: F811
    import torch

    c, name = conn
    spec = IndexSpec(name=name, dense_field="minilm", dense_size=384, metadata=_metadata(sparse_encoded))
    c.ensure_index(spec)
    _ingest(c, vaswani, sparse_encoded["docs"], dense_encoded["docs"])
    assert c.count() == N_DOCS
    doc_index = {d: i for i, d in enumerate(vaswani["doc_ids"])}
    results = c.search([Query(sparse=q) for q in sparse_encoded["queries"]], SearchOptions(top_k=TOP_K))
    assert len(results) == N_QUERIES
    for qi, res in enumerate(results):
        check_top_k(res.hits, sparse_encoded["scores"][:, qi], doc_index, TOP_K, TOL)

    cand, rrf_k, exact = 50, 20, {"exact": True}
    dq = dense_encoded["queries"]
    sparse_only = c.search([Query(sparse=q) for q in sparse_encoded["queries"]], SearchOptions(top_k=cand))
    dense_only = c.search([Query(dense=v.tolist()) for v in dq], SearchOptions(top_k=cand, backend_options=exact))
    fused = c.search(
        [Query(sparse=q, dense=v.tolist()) for q, v in zip(sparse_encoded["queries"], dq)],
        SearchOptions(top_k=TOP_K, rrf_k=rrf_k, prefetch_limit=cand, backend_options=exact),
    )
    for qi in range(N_QUERIES):
        reference = rrf_reference_vaswani(
            [[h.id for h in sparse_only[qi].hits], [h.id for h in dense_only[qi].hits]], rrf_k
        )
        ids = list(reference)
        ref = torch.tensor([reference[d] for d in ids], dtype=torch.float64)
        check_top_k(fused[qi].hits, ref, {d: i for i, d in enumerate(ids)}, TOP_K, 1e-6)
