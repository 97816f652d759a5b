"""The ingest/search/explain/eval pipeline on the embedded Qdrant Edge backend, with the real model."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from pipeline_support import (
    FailingWrites,
    beir,
    brute_force_ranking,
    caching_encoder,
    doc_text,
    reference_metrics,
)
from sparsebridge.config import IngestSettings, SearchSettings
from sparsebridge.connector import IndexMismatchError, SparseVector
from sparsebridge.pipeline import (
    PARENT_KEY,
    Pipeline,
    Vocabulary,
    collapse_passages,
    evaluate_run,
    explain_match,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    split_passages,
    text_id,
    to_sparse_vectors,
    vocab_fingerprint,
    vocabulary,
)
from sparsebridge.plugins import create_connector

pytest.importorskip("qdrant_edge")


def edge(path, index="docs"):
    return create_connector("qdrant", mode="edge", path=str(path), index=index)


@pytest.fixture(scope="module")
def cranfield(data_dir):
    return beir(str(data_dir / "cranfield"))


@pytest.fixture(scope="module")
def cenc(encoder):
    return caching_encoder(encoder)


@pytest.fixture(scope="module")
def cranfield_pipe(cenc, data_dir, tmp_path_factory):
    """The whole Cranfield corpus ingested once into an embedded Edge index."""
    connector = edge(tmp_path_factory.mktemp("cranfield-edge"), "cranfield")
    pipe = Pipeline(cenc, connector, "cranfield", show_progress=False)
    report = pipe.ingest(data_dir / "cranfield")
    yield pipe, report
    pipe.close()


# --------------------------------------------------------------------------- vectors


def test_to_sparse_vectors_matches_decode(encoder):
    texts = ["experimental investigation of a wing in a slipstream", "boundary layer", "heat transfer at mach 5"]
    emb = encoder.encode_document(texts)
    vocab = Vocabulary(encoder.tokenizer, "m")
    vectors = to_sparse_vectors(emb, vocab)
    decoded = encoder.decode(emb)
    assert len(vectors) == 3
    for vec, dec in zip(vectors, decoded):
        assert list(vec.indices) == sorted(vec.indices)
        assert vec.as_token_dict() == pytest.approx(dict(dec))
        assert list(vec.tokens) == encoder.tokenizer.convert_ids_to_tokens(list(vec.indices))
    # A dense input gives the same vectors; an all-zero row gives an empty vector, not a dropped row.
    dense = emb.to_dense()
    dense[1] = 0
    again = to_sparse_vectors(dense, vocab)
    assert again[0] == vectors[0] and again[2] == vectors[2] and len(again[1]) == 0


def test_vocab_fingerprint(encoder, minilm_path):
    from transformers import AutoTokenizer

    tok = encoder.tokenizer
    fp = vocab_fingerprint(tok)
    assert fp == vocab_fingerprint(tok) and len(fp) == 64
    expected = hashlib.sha256("".join(f"{i}\t{t}\n" for i, t in enumerate(vocabulary(tok))).encode()).hexdigest()
    assert fp == expected
    # all-MiniLM-L6-v2 uses the same bert-base-uncased vocabulary: same fingerprint.
    assert vocab_fingerprint(AutoTokenizer.from_pretrained(str(minilm_path))) == fp

    class Swapped:
        def __len__(self):
            return len(tok)

        def convert_ids_to_tokens(self, ids):
            toks = tok.convert_ids_to_tokens(ids)
            toks[1000], toks[1001] = toks[1001], toks[1000]
            return toks

    assert vocab_fingerprint(Swapped()) != fp


def test_text_id_is_sha256_of_text():
    assert text_id("hello") == hashlib.sha256(b"hello").hexdigest()[:32]
    assert text_id("hello") != text_id("hello ")


# --------------------------------------------------------------------------- ingest


def test_ingest_cranfield_reports_empty_documents(cranfield_pipe, cranfield):
    pipe, report = cranfield_pipe
    docs, _, _ = cranfield
    empty = {d["_id"] for d in docs if not doc_text(d)}
    assert empty == {"471", "995"}  # two Cranfield documents have neither title nor text
    assert report.documents == len(docs) == 1400
    assert report.written == 1400 - len(empty) == pipe.count()
    assert set(report.failed) == empty
    assert all("no text" in reason for reason in report.failed.values())
    # The report accounts for its time: encoding and writing are parts of the whole.
    assert report.encode_seconds > 0 and report.write_seconds > 0
    assert report.encode_seconds + report.write_seconds <= report.seconds
    meta = pipe.connector.index_metadata()
    assert meta["vocab_fingerprint"] == vocab_fingerprint(pipe.encoder.tokenizer)
    assert meta["vocab_size"] == 30522
    stored = pipe.connector.get(["1"])["1"]
    assert stored["title"].startswith("experimental investigation")
    assert stored["text"] == doc_text(docs[0])


def test_search_matches_brute_force(cranfield_pipe, cranfield, cenc):
    pipe, _ = cranfield_pipe
    docs, queries, _ = cranfield
    kept = [d for d in docs if doc_text(d)]
    doc_vectors = cenc.encode_document([doc_text(d) for d in kept])
    qids = list(queries)[:15]
    q_vectors = cenc.encode_query([queries[q] for q in qids])
    expected = brute_force_ranking(q_vectors, doc_vectors, [d["_id"] for d in kept], 10)
    results = pipe.search([queries[q] for q in qids], top_k=10)
    assert len(results) == len(qids)
    for result, exp in zip(results, expected):
        assert [h.score for h in result.hits] == pytest.approx([s for _, s in exp], rel=1e-4)
        # Same documents at the same ranks, except where two scores tie to float precision.
        for hit, (doc_id, score) in zip(result.hits, exp):
            assert hit.id == doc_id or math.isclose(hit.score, score, rel_tol=1e-5)


def test_search_filter_and_one_batch_request(cranfield_pipe, monkeypatch):
    pipe, _ = cranfield_pipe
    calls = []
    original = pipe.connector.search
    monkeypatch.setattr(pipe.connector, "search", lambda q, o=None: calls.append(len(q)) or original(q, o))
    results = pipe.search(["supersonic flow", "heat transfer", "boundary layer"], top_k=5)
    assert calls == [3] and [len(r.hits) for r in results] == [5, 5, 5]
    title = results[0].hits[0].payload["title"]
    filtered = pipe.search(["supersonic flow"], top_k=5, filter={"title": title})
    assert filtered[0].hits and all(h.payload["title"] == title for h in filtered[0].hits)


def test_explanation_tokens_are_shared_and_match_decode(cranfield_pipe, encoder):
    pipe, _ = cranfield_pipe
    query = "what are the structural and aeroelastic problems of high speed aircraft"
    (result,) = pipe.search([query], top_k=5, explain=True)
    q_weights = dict(encoder.decode(encoder.encode_query([query])[0]))
    for hit in result.hits:
        d_weights = dict(encoder.decode(encoder.encode_document([hit.payload["text"]])[0]))
        shared = set(q_weights) & set(d_weights)
        matches = hit.explanation.matches
        assert {m.token for m in matches} == shared
        for m in matches:
            assert m.query_weight == pytest.approx(q_weights[m.token], rel=1e-4)
            assert m.document_weight == pytest.approx(d_weights[m.token], rel=1e-4)
            assert m.product == pytest.approx(m.query_weight * m.document_weight)
        assert [m.product for m in matches] == sorted((m.product for m in matches), reverse=True)
        # The explanation accounts for the whole score: the engine's score is the dot product.
        assert hit.explanation.score == pytest.approx(hit.score, rel=1e-3)


def test_explain_match_on_handmade_vectors():
    q = SparseVector((1, 5, 9), (1.0, 2.0, 0.5), ("a", "b", "c"))
    d = SparseVector((5, 9, 12), (3.0, 4.0, 1.0), ("b", "c", "d"))
    e = explain_match(q, d)
    assert [(m.token, m.product) for m in e.matches] == [("b", 6.0), ("c", 2.0)]
    assert e.score == 8.0


def test_reingest_is_idempotent(cenc, tmp_path, cranfield):
    docs, _, _ = cranfield
    sample = docs[:40]
    no_ids = [{"text": doc_text(d)} for d in docs[40:60]]
    with Pipeline(cenc, edge(tmp_path / "edge"), "docs", show_progress=False) as pipe:
        first = pipe.ingest(sample + no_ids)
        assert first.written == 60 and pipe.count() == 60
        again = pipe.ingest(sample + no_ids)
        assert again.written == 60 and pipe.count() == 60  # upserts, not duplicates
        hashed = text_id(doc_text(docs[40]))
        assert pipe.connector.get([hashed])[hashed]["text"] == doc_text(docs[40])


def test_failed_documents_are_reported_by_id(cenc, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"id": "ok-1", "text": "the lift of a wing"}),
        json.dumps({"id": "no-text", "title": "", "body": "wrong field"}),
        "{not json",
        json.dumps({"id": "int-text", "text": 42}),
        json.dumps(["a", "list"]),
        json.dumps({"id": "bad-write", "text": "this one the backend refuses"}),
        json.dumps({"text": "an id from the text hash"}),
        json.dumps({"id": "ok-1", "text": "a second document with the first one's id"}),
        '{"id": "latin-1", "text": "caf\xe9"}',
    ]
    corpus.write_bytes(b"\n".join(line.encode("latin-1") for line in lines) + b"\n")
    connector = FailingWrites(edge(tmp_path / "edge"), {"bad-write"})
    with Pipeline(cenc, connector, "docs", show_progress=False) as pipe:
        report = pipe.ingest(corpus)
        assert pipe.connector.get(["ok-1"])["ok-1"]["text"] == "the lift of a wing"  # the first one is kept
    assert report.documents == 9
    assert report.written == 2
    assert report.failed == {
        "ok-1 (document 8)": "duplicate id 'ok-1': document 1 of this corpus has the same id (ids compare as "
        "strings; without an id field, equal texts get equal ids); it was kept",
        "docs.jsonl:9": "not valid UTF-8: byte 0xe9 at column 31",
        "no-text": "no text: the fields 'title', 'text' are missing or empty",
        "docs.jsonl:3": report.failed["docs.jsonl:3"],
        "int-text": "text field 'text' is not a string (got int)",
        "docs.jsonl:5": "expected a JSON object, got list",
        "bad-write": "mapper_parsing_exception: injected failure",
    }
    assert report.failed["docs.jsonl:3"].startswith("not valid JSON")
    assert report.retries >= 1
    assert report.documents == report.written + len(report.failed)


def test_encoding_failure_isolated_to_the_document(encoder, tmp_path):
    class Picky:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def encode_document(self, texts, **kw):
            if any("poison" in t for t in texts):
                raise RuntimeError("CUDA out of memory (simulated)")
            return self.inner.encode_document(texts, **kw)

    docs = [{"id": str(i), "text": f"document number {i}"} for i in range(5)]
    docs[2]["text"] = "poison pill"
    with Pipeline(Picky(encoder), edge(tmp_path / "edge"), "docs", show_progress=False) as pipe:
        report = pipe.ingest(docs)
        assert report.written == 4 and pipe.count() == 4
    assert list(report.failed) == ["2"] and "out of memory" in report.failed["2"]


def test_passage_splitting(cenc, tmp_path, cranfield):
    docs, _, _ = cranfield
    tok = cenc.tokenizer
    long_doc = max(docs, key=lambda d: len(doc_text(d)))
    n_tokens = len(tok(doc_text(long_doc), add_special_tokens=False, verbose=False)["input_ids"])
    assert n_tokens > cenc.max_seq_length  # the longest Cranfield document would be truncated
    settings = IngestSettings(split_passages=True)
    with Pipeline(cenc, edge(tmp_path / "edge"), "docs", ingest_settings=settings, show_progress=False) as pipe:
        report = pipe.ingest([long_doc, docs[0]])
        n = report.records - 1
        assert n >= 2 and report.written == n + 1 and pipe.count() == n + 1
        ids = [f"{long_doc['_id']}#p{i}" for i in range(n)]
        stored = pipe.connector.get(ids + [docs[0]["_id"]])
        assert set(stored) == set(ids) | {docs[0]["_id"]}
        for i, pid in enumerate(ids):
            assert stored[pid][PARENT_KEY] == long_doc["_id"] and stored[pid]["passage"] == i
            assert len(tok(stored[pid]["text"], add_special_tokens=False)["input_ids"]) <= cenc.max_seq_length - 2
        assert PARENT_KEY not in stored[docs[0]["_id"]]  # short documents keep their own id
        # Nothing is lost: the passages, in order, are the document's text.
        joined = " ".join(stored[pid]["text"] for pid in ids)
        assert joined.split() == doc_text(long_doc).split()
        hits = pipe.search([stored[ids[-1]]["text"]], top_k=3)[0].hits
        assert hits[0].id == ids[-1]
        assert collapse_passages(hits)[0] == long_doc["_id"]


def test_passage_ids_never_overwrite_a_document_with_that_id(cenc, tmp_path, cranfield):
    """Issue 23 item 1: a document whose own id is "a#p1" overwrote passage 1 of a long document "a"
    (or the other way round), and the report said "0 failed"."""
    docs, _, _ = cranfield
    long_doc = max(docs, key=lambda d: len(doc_text(d)))
    clash = {"_id": f"{long_doc['_id']}#p1", "text": "a short document whose id looks like a passage id"}
    settings = IngestSettings(split_passages=True)
    for order in ((long_doc, clash), (clash, long_doc)):
        path = tmp_path / f"edge-{order[0] is clash}"
        with Pipeline(cenc, edge(path), "docs", ingest_settings=settings, show_progress=False) as pipe:
            report = pipe.ingest(list(order))
            first_holds_it = 1 if order[0] is long_doc else 2
            n = report.records  # the long document's passages, or the short one and all passages but one
            assert n >= 2
            assert report.failed == {
                f"{clash['_id']} (document 2)": f"duplicate id {clash['_id']!r}: document 1 of this corpus already "
                f"gives a record this id (a passage's id is its document's id + '#pN'); it was kept"
            }
            # Every record prepared is written or reported, and the index holds what was written.
            assert report.written == report.records == pipe.count()
            assert report.written + len(report.failed) == n + 1
            stored = pipe.connector.get([clash["_id"]])[clash["_id"]]
            assert (stored.get(PARENT_KEY) == long_doc["_id"]) == (first_holds_it == 1)


def test_split_passages_overlap_and_word_boundaries(encoder):
    tok = encoder.tokenizer
    text = " ".join(f"aeroelasticity{i} wing" for i in range(60))
    parts = split_passages(text, tok, 40, overlap=10)
    assert len(parts) > 2
    for part in parts:
        assert len(tok(part, add_special_tokens=False)["input_ids"]) <= 40
        assert text.startswith(part) or f" {part}" in text  # cut between words, never inside one
    # Consecutive passages overlap.
    assert set(parts[0].split()[-3:]) & set(parts[1].split())
    assert split_passages("short text", tok, 40) == ["short text"]


def test_vocabulary_mismatch_is_refused(cranfield_pipe, encoder):
    pipe, _ = cranfield_pipe

    class OtherVocab:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        @property
        def tokenizer(self):
            outer = self.inner.tokenizer

            class Tok:
                def __len__(self):
                    return len(outer) - 1

                def convert_ids_to_tokens(self, ids):
                    return outer.convert_ids_to_tokens(ids)

            return Tok()

    other = Pipeline(encoder, pipe.connector, "cranfield", query_encoder=OtherVocab(encoder), show_progress=False)
    with pytest.raises(IndexMismatchError, match="another vocabulary"):
        other.search(["wing"])


def test_hybrid_dense_and_sparse(cenc, tmp_path, minilm_path, cranfield):
    from sparsebridge import DenseEncoder

    dense = DenseEncoder(str(minilm_path), device="cpu")
    docs, queries, _ = cranfield
    sample = [d for d in docs[:80] if doc_text(d)]
    pipe = Pipeline(
        cenc, edge(tmp_path / "edge"), "hybrid", dense_encoder=dense, search_settings=SearchSettings(top_k=5)
    )
    with pipe:
        report = pipe.ingest(sample)
        assert report.written == len(sample)
        assert pipe.connector.index_metadata()["dense_model"] == str(minilm_path)
        q = [queries["1"], queries["2"]]
        hybrid = pipe.search(q)  # hybrid is the default once a dense encoder is set
        sparse = pipe.search(q, mode="sparse", top_k=100)
        dense_hits = pipe.search(q, mode="dense", top_k=100)
        q_dense = np.asarray(dense.encode_query(q))
        for n, (s, d, h) in enumerate(zip(sparse, dense_hits, hybrid)):
            # Dense scores are the cosine similarity of the MiniLM vectors that were stored.
            top = d.hits[0]
            doc = np.asarray(dense.encode_document([top.payload["text"]]))[0]
            cosine = float(q_dense[n] @ doc / np.linalg.norm(q_dense[n]) / np.linalg.norm(doc))
            assert top.score == pytest.approx(cosine, rel=1e-3)
            assert len(d.hits) == len(sample)  # every document has a dense score
            # Hybrid = reciprocal rank fusion (k=60, 1-based ranks) of the two full lists.
            expected: dict[str, float] = {}
            for hits in (s.hits, d.hits):
                for rank, hit in enumerate(hits, 1):
                    expected[hit.id] = expected.get(hit.id, 0.0) + 1 / (60 + rank)
            assert len(h.hits) == 5
            assert [x.score for x in h.hits] == pytest.approx(sorted(expected.values(), reverse=True)[:5])
            assert all(x.score == pytest.approx(expected[x.id]) for x in h.hits)


# --------------------------------------------------------------------------- metrics


def test_metrics_by_hand():
    rel = {"a": 2, "b": 1, "c": 0}
    ranking = ["x", "a", "b", "c"]
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranking, rel, 10) == pytest.approx(dcg / idcg)
    assert mrr_at_k(ranking, rel, 10) == 0.5
    assert recall_at_k(ranking, rel, 100) == 1.0
    assert recall_at_k(ranking[:2], rel, 100) == 0.5
    assert ndcg_at_k(["x"], {"a": 0}) == 0.0 and mrr_at_k(["a"], {"a": 0}) == 0.0
    assert mrr_at_k(["x"] * 10 + ["a"], rel, 10) == 0.0  # beyond the cut-off
    run = {"q1": ranking, "q2": []}
    qrels = {"q1": rel, "q2": {"z": 1}, "q3": {"y": 0}}  # q3 has nothing relevant: not counted
    result = evaluate_run(run, qrels)
    assert result["queries"] == 2
    assert result["ndcg@10"] == pytest.approx(dcg / idcg / 2)
    reference = reference_metrics(run, qrels)
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert result[metric] == pytest.approx(reference[metric])


def test_evaluate_matches_brute_force(cranfield_pipe, cranfield, cenc, data_dir):
    pipe, _ = cranfield_pipe
    docs, queries, qrels = cranfield
    result = pipe.evaluate(data_dir / "cranfield")
    assert "ingest" not in result  # the index was already full
    kept = [d for d in docs if doc_text(d)]
    qids = [q for q in queries if q in qrels]
    ranked = brute_force_ranking(
        cenc.encode_query([queries[q] for q in qids]),
        cenc.encode_document([doc_text(d) for d in kept]),
        [d["_id"] for d in kept],
        100,
    )
    expected = reference_metrics({q: [d for d, _ in r] for q, r in zip(qids, ranked)}, qrels)
    assert result["queries"] == expected["queries"] == 225
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert result[metric] == pytest.approx(expected[metric], abs=1e-3), metric
    assert 0.2 < result["ndcg@10"] < 0.6


def test_dense_encoder_output_accepted_as_torch(cenc, tmp_path):
    class TorchDense:
        def get_sentence_embedding_dimension(self):
            return 4

        def encode_document(self, texts, **kw):
            return torch.ones(len(texts), 4)

    with Pipeline(cenc, edge(tmp_path / "edge"), "t", dense_encoder=TorchDense(), show_progress=False) as pipe:
        assert pipe.index_spec().dense_size == 4
        assert pipe.ingest([{"id": "a", "text": "x y z"}]).written == 1
