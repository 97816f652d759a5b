"""Retrieval quality of an inference-free model assembled here: the packaged SPLADE model for the
documents, and ``SparseStaticEmbedding.from_corpus`` (BM25 IDF of the cranfield documents) for the
queries, so queries need no transformer pass.

All 225 cranfield queries rank all 1,400 documents (title + text, first 256 tokens) by dot product;
nDCG@10 is computed here from qrels/test.tsv with trec_eval's definition: gain = the graded
relevance (1-4), discount log2(rank + 1), ideal ordering from all judged documents of the query.

Measured (2026-11-22, packaged BERT-tiny SPLADE): inference-free nDCG@10 = 0.346; the full SPLADE
query encoder on the same document vectors 0.363; a random ranking 0.005. The floor asserted below,
0.25, leaves room for numeric noise but catches a broken IDF, routing or tokenization.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from sparsebridge import SparseEncoder
from sparsebridge.modules import MLMTransformer, Router, SparseStaticEmbedding, SpladePooling

FLOOR = 0.25
DOC_TOKENS = 256


def read_qrels(path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        next(fh)  # header
        for line in fh:
            query_id, doc_id, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(query_id, {})[doc_id] = int(score)
    return qrels


def ndcg_at_10(scores: np.ndarray, query_ids: list[str], doc_ids: list[str], qrels) -> float:
    values = []
    for row, query_id in enumerate(query_ids):
        judged = qrels.get(query_id)
        if not judged:
            continue
        top = np.argsort(-scores[row], kind="stable")[:10]
        dcg = sum(judged.get(doc_ids[j], 0) / math.log2(rank + 2) for rank, j in enumerate(top))
        ideal = sorted(judged.values(), reverse=True)[:10]
        idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
        values.append(dcg / idcg)
    return float(np.mean(values))


def test_ndcg_helper_on_a_hand_made_case():
    qrels = {"q": {"a": 3, "b": 1}}
    perfect = np.array([[2.0, 1.0, 0.0]])
    assert ndcg_at_10(perfect, ["q"], ["a", "b", "c"], qrels) == pytest.approx(1.0)
    swapped = np.array([[1.0, 2.0, 0.0]])
    expected = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert ndcg_at_10(swapped, ["q"], ["a", "b", "c"], qrels) == pytest.approx(expected)


def test_inference_free_model_ranks_cranfield(splade_path):
    collection = DATA_DIR / "cranfield"
    docs = read_jsonl(collection / "corpus.jsonl")
    queries = read_jsonl(collection / "queries.jsonl")
    qrels = read_qrels(collection / "qrels" / "test.tsv")
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in docs]
    doc_ids = [d["_id"] for d in docs]
    query_ids = [q["_id"] for q in queries]
    assert len(docs) == 1400 and len(queries) == 225 and set(qrels) <= set(query_ids)

    transformer = MLMTransformer(str(splade_path), max_seq_length=DOC_TOKENS)
    static = SparseStaticEmbedding.from_corpus(transformer.tokenizer, texts, frozen=True)
    model = SparseEncoder(
        modules=[Router.for_query_document([static], [transformer, SpladePooling("max", "relu")])], device="cpu"
    )
    doc_vectors = model.encode_document(texts, batch_size=32).to_dense()
    query_vectors = model.encode_query([q["text"] for q in queries]).to_dense()
    inference_free = ndcg_at_10((query_vectors @ doc_vectors.T).numpy(), query_ids, doc_ids, qrels)

    full = SparseEncoder(modules=[transformer, SpladePooling("max", "relu")], device="cpu")
    full_queries = full.encode_query([q["text"] for q in queries]).to_dense()
    full_ndcg = ndcg_at_10((full_queries @ doc_vectors.T).numpy(), query_ids, doc_ids, qrels)
    random = ndcg_at_10(np.random.default_rng(0).random((len(queries), len(docs))), query_ids, doc_ids, qrels)
    print(f"\ncranfield nDCG@10: inference-free {inference_free:.4f}, full SPLADE queries {full_ndcg:.4f}, "
          f"random {random:.4f}")  # fmt: skip

    assert math.isfinite(inference_free) and inference_free > FLOOR
    assert inference_free > 10 * random
    assert not torch.equal(query_vectors, full_queries)  # the two query sides really differ
