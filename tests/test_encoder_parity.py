"""Parity with sentence-transformers (the oracle, test-only) on the packaged SPLADE model and real
documents from the shared BEIR collections."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from tolerances import FLOAT32_ATOL, FLOAT32_RTOL, float32_close

TOL = 1e-4  # similarity scores only, relative to the largest score; vectors: float32_close


def corpus_texts(name: str, limit: int | None = None) -> list[str]:
    return [f"{d.get('title', '')} {d['text']}".strip() for d in read_jsonl(DATA_DIR / name / "corpus.jsonl", limit)]


@pytest.fixture(scope="module")
def oracle(splade_path):
    from sentence_transformers import SparseEncoder as OracleEncoder

    return OracleEncoder(str(splade_path), device="cpu")


@pytest.fixture(scope="module")
def documents() -> list[str]:
    # 200 short abstracts plus 40 long cranfield documents, some longer than max_seq_length.
    vaswani = corpus_texts("vaswani", 200)
    cranfield = sorted(corpus_texts("cranfield"), key=len, reverse=True)[:40]
    return vaswani + cranfield


@pytest.fixture(scope="module")
def queries() -> list[str]:
    return [q["text"] for q in read_jsonl(DATA_DIR / "cranfield" / "queries.jsonl", 60)]


@pytest.fixture(scope="module")
def encoded(encoder, oracle, documents):
    return encoder.encode(documents, batch_size=16), oracle.encode(documents, batch_size=16)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.to_dense() if a.is_sparse else a
    b = b.to_dense() if b.is_sparse else b
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def test_documents_include_truncated_ones(encoder, documents):
    lengths = [len(ids) for ids in encoder.tokenizer(documents)["input_ids"]]
    assert len(documents) >= 240
    assert max(lengths) > encoder.max_seq_length  # the truncation path is exercised


def test_encode_matches_oracle(encoded):
    ours, ref = encoded
    assert ours.is_sparse and ours.shape == ref.shape
    assert float32_close(ours, ref)


def test_encode_query_and_document_match_oracle(encoder, oracle, queries, documents):
    assert float32_close(encoder.encode_query(queries), oracle.encode_query(queries))
    docs = documents[:50]
    assert float32_close(encoder.encode_document(docs), oracle.encode_document(docs))


def test_prompts_match_oracle(splade_path, queries):
    from sentence_transformers import SparseEncoder as OracleEncoder
    from sparsebridge import SparseEncoder

    prompts = {"query": "query: ", "document": "passage: "}
    ours = SparseEncoder(str(splade_path), device="cpu", prompts=prompts)
    ref = OracleEncoder(str(splade_path), device="cpu", prompts=prompts)
    a, b = ours.encode_query(queries[:20]), ref.encode_query(queries[:20])
    assert float32_close(a, b)
    # The prompt really changes the vectors (so the comparison above is not vacuous).
    assert max_diff(a, ours.encode(queries[:20])) > 1e-3


def test_max_active_dims_matches_oracle(encoder, oracle, documents):
    ours = encoder.encode(documents[:80], max_active_dims=16)
    ref = oracle.encode(documents[:80], max_active_dims=16)
    assert float32_close(ours, ref)
    active = (ours.to_dense() != 0).sum(dim=1)
    assert int(active.max()) <= 16 and int(active.min()) > 0


def test_long_documents_with_short_max_seq_length(encoder, oracle, documents):
    long_docs = documents[-20:]
    old_ours, old_ref = encoder.max_seq_length, oracle.max_seq_length
    encoder.max_seq_length = oracle.max_seq_length = 64
    try:
        ours, ref = encoder.encode(long_docs), oracle.encode(long_docs)
    finally:
        encoder.max_seq_length, oracle.max_seq_length = old_ours, old_ref
    assert float32_close(ours, ref)
    assert max_diff(ours, encoder.encode(long_docs)) > 1e-3  # truncation changed the vectors


def test_output_forms_match_oracle(encoder, oracle, documents):
    docs = documents[:10]
    dense_ours = encoder.encode(docs, convert_to_sparse_tensor=False)
    dense_ref = oracle.encode(docs, convert_to_sparse_tensor=False)
    assert not dense_ours.is_sparse and float32_close(dense_ours, dense_ref)
    rows_ours = encoder.encode(docs, convert_to_tensor=False)
    rows_ref = oracle.encode(docs, convert_to_tensor=False)
    assert isinstance(rows_ours, list) and len(rows_ours) == len(rows_ref)
    for a, b in zip(rows_ours, rows_ref):
        assert a.dim() == 1 and a.is_sparse and float32_close(a, b)
    single = encoder.encode(docs[0])
    assert single.dim() == 1 and float32_close(single, oracle.encode(docs[0]))


def test_decode_matches_oracle(encoder, oracle, encoded):
    ours, ref = encoded
    rows = torch.tensor([0, 5, 220])
    ours_rows, ref_rows = ours.index_select(0, rows), ref.index_select(0, rows)
    for top_k in (None, 10):
        got, want = encoder.decode(ours_rows, top_k=top_k), oracle.decode(ref_rows, top_k=top_k)
        for g, w in zip(got, want):
            assert len(g) == len(w)
            # Same weights in the same order; tokens equal wherever weights are not tied.
            assert all(abs(a[1] - b[1]) <= FLOAT32_ATOL + FLOAT32_RTOL * abs(b[1]) for a, b in zip(g, w))
            assert {t for t, _ in g} == {t for t, _ in w} or top_k is not None
    assert encoder.decode(ours_rows[0], top_k=3) == oracle.decode(ref_rows[0], top_k=3)


@pytest.mark.parametrize("fn", ["dot", "cosine", "euclidean", "manhattan"])
def test_similarity_functions_match_oracle(encoder, oracle, encoded, fn):
    ours, ref = encoded
    a_idx, b_idx = torch.arange(0, 30), torch.arange(200, 240)
    encoder.similarity_fn_name = fn
    oracle.similarity_fn_name = fn
    try:
        got = encoder.similarity(ours.index_select(0, a_idx), ours.index_select(0, b_idx))
        want = oracle.similarity(ref.index_select(0, a_idx), ref.index_select(0, b_idx))
        assert got.shape == (30, 40) and max_diff(got, want) <= TOL * max(1.0, want.abs().max().item())
        pair_a, pair_b = ours.index_select(0, a_idx), ours.index_select(0, b_idx[:30])
        got_pw = encoder.similarity_pairwise(pair_a, pair_b)
        want_pw = oracle.similarity_pairwise(ref.index_select(0, a_idx), ref.index_select(0, b_idx[:30]))
        assert max_diff(got_pw, want_pw) <= TOL * max(1.0, want_pw.abs().max().item())
        # Against an exact float64 reference, identical rows included.
        dense = ours.index_select(0, a_idx).to_dense().double()
        exact = {
            "dot": dense @ dense.T,
            "cosine": torch.nn.functional.normalize(dense, dim=1) @ torch.nn.functional.normalize(dense, dim=1).T,
            "euclidean": -torch.cdist(dense, dense),
            "manhattan": -torch.cdist(dense, dense, p=1),
        }[fn]
        self_sim = encoder.similarity(ours.index_select(0, a_idx), ours.index_select(0, a_idx))
        assert max_diff(self_sim.double(), exact) <= TOL * max(1.0, exact.abs().max().item())
    finally:
        encoder.similarity_fn_name = None
        oracle.similarity_fn_name = None


def test_sparsity_matches_oracle(encoder, oracle, encoded):
    ours, ref = encoded
    got, want = encoder.sparsity(ours), oracle.sparsity(ref)
    assert got.keys() == want.keys()
    for key in got:
        assert abs(got[key] - want[key]) <= 1e-6 * max(1.0, abs(want[key]))


def test_intersection_matches_oracle(encoder, oracle, encoded):
    ours, ref = encoded
    q = encoder.encode_query("boundary layer flow over a flat plate")
    q_ref = oracle.encode_query("boundary layer flow over a flat plate")
    rows = torch.arange(200, 210)
    got = encoder.intersection(q, ours.index_select(0, rows))
    want = oracle.intersection(q_ref, ref.index_select(0, rows))
    assert got.shape == want.shape and float32_close(got, want)
    assert got.coalesce().values().numel() > 0


def test_empty_string_behaves_as_oracle(encoder, oracle):
    assert float32_close(encoder.encode(""), oracle.encode(""))
    assert float32_close(encoder.encode(["", "x", "   "]), oracle.encode(["", "x", "   "]))
