"""Inference-free queries: ``SparseStaticEmbedding`` (from_json, from_corpus) and ``Router``, with
parity against sentence-transformers (the oracle, test-only) on the packaged SPLADE model and
cranfield texts, and save/load round trips in both directions."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from sparsebridge import SparseEncoder
from sparsebridge.modules import MODULE_CLASSES, MLMTransformer, Router, SparseStaticEmbedding, SpladePooling
from tolerances import float32_close


def dense(x: torch.Tensor) -> torch.Tensor:
    return x.to_dense() if x.is_sparse else x


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (dense(a) - dense(b)).abs().max().item()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [f"{d['title']} {d['text']}".strip() for d in read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl")]


@pytest.fixture(scope="module")
def queries() -> list[str]:
    return [q["text"] for q in read_jsonl(DATA_DIR / "cranfield" / "queries.jsonl", 40)]


@pytest.fixture(scope="module")
def doc_transformer(splade_path):
    return MLMTransformer(str(splade_path))


@pytest.fixture(scope="module")
def static(doc_transformer, corpus):
    return SparseStaticEmbedding.from_corpus(doc_transformer.tokenizer, corpus, frozen=True)


@pytest.fixture(scope="module")
def model(doc_transformer, static):
    router = Router.for_query_document([static], [doc_transformer, SpladePooling("max", "relu")])
    return SparseEncoder(modules=[router], device="cpu")


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("inference_free") / "model"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def oracle(saved):
    from sentence_transformers import SparseEncoder as OracleEncoder

    return OracleEncoder(str(saved), device="cpu")


def test_from_corpus_is_the_documented_bm25_idf(doc_transformer):
    tok = doc_transformer.tokenizer
    texts = ["the wing", "the wing flutter", "the shock"]
    module = SparseStaticEmbedding.from_corpus(tok, texts)
    vocab = tok.get_vocab()

    def idf(df: int, n: int = 3) -> float:
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    for token, df in (("the", 3), ("wing", 2), ("flutter", 1), ("shock", 1), ("engine", 0)):
        assert module.weight[vocab[token]].item() == pytest.approx(idf(df), rel=1e-6)
    assert module.weight[tok.cls_token_id].item() == 0 and module.weight[tok.pad_token_id].item() == 0
    assert module.weight[vocab["the"]].item() > 0  # a token in every text still counts a little
    with pytest.raises(ValueError):
        SparseStaticEmbedding.from_corpus(tok, [])


def test_static_module_matches_oracle(doc_transformer, static, queries):
    from sentence_transformers import SparseEncoder as OracleEncoder
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding as OracleStatic

    ref_module = OracleStatic(doc_transformer.tokenizer, weight=static.weight.detach().clone(), frozen=True)
    ours = SparseEncoder(modules=[static], device="cpu")
    ref = OracleEncoder(modules=[ref_module], device="cpu")
    # Long inputs too: truncation at the tokenizer's limit, without special tokens.
    texts = queries + [" ".join(queries)]
    out = ours.encode(texts)
    assert out.is_sparse and float32_close(out, ref.encode(texts))
    assert float32_close(ours.encode(texts, max_active_dims=4), ref.encode(texts, max_active_dims=4))
    single = ours.encode(queries[0])
    assert single.dim() == 1 and float32_close(single, ref.encode(queries[0]))
    as_dense = ours.encode(queries[:3], convert_to_sparse_tensor=False)
    assert not as_dense.is_sparse and float32_close(as_dense, ref.encode(queries[:3]))
    # No special tokens: [CLS]/[SEP] never show up in a query vector.
    active = {tok for tok, _ in ours.decode(ours.encode(queries[0]))}
    assert "[CLS]" not in active and "[SEP]" not in active


def test_from_json_matches_oracle(doc_transformer, static, queries, tmp_path):
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding as OracleStatic

    tok = doc_transformer.tokenizer
    ids = torch.nonzero(static.weight > 0).flatten()[:5000].tolist()
    idf = dict(zip(tok.convert_ids_to_tokens(ids), static.weight[ids].tolist()))
    (tmp_path / "idf.json").write_text(json.dumps(idf), encoding="utf-8")
    ours = SparseStaticEmbedding.from_json(tmp_path / "idf.json", tok)
    from_folder = SparseStaticEmbedding.from_json(tmp_path, tok)
    ref = OracleStatic.from_json(str(tmp_path / "idf.json"), tokenizer=tok)
    assert torch.equal(ours.weight.detach(), ref.weight.detach())
    assert torch.equal(from_folder.weight.detach(), ref.weight.detach())
    assert int((ours.weight > 0).sum()) == 5000
    with pytest.raises(FileNotFoundError):
        SparseStaticEmbedding.from_json(tmp_path / "missing" / "idf.json", tok)


def test_oracle_loads_our_inference_free_model(model, oracle, saved, queries, corpus):
    config = json.loads((saved / "router_config.json").read_text())
    assert config["structure"] == {
        "query": ["query_0_SparseStaticEmbedding"],
        "document": ["document_0_MLMTransformer", "document_1_SpladePooling"],
    }
    docs = corpus[:8]
    assert float32_close(model.encode_query(queries), oracle.encode_query(queries))
    assert float32_close(model.encode_document(docs), oracle.encode_document(docs))
    # Plain encode takes the default route (document), as in the reference.
    assert float32_close(model.encode(docs[:4]), oracle.encode(docs[:4]))
    assert max_diff(model.encode(docs[:4]), model.encode_document(docs[:4])) == 0
    assert set(model.get_model_kwargs()) == set(oracle.get_model_kwargs()) == {"task", "modality"}


def test_we_load_the_oracles_save(oracle, model, tmp_path, queries, corpus):
    oracle.save(str(tmp_path / "st"))
    ours = SparseEncoder(str(tmp_path / "st"), device="cpu")
    router = ours[0]
    assert isinstance(router, Router) and router.default_route == "document"
    assert isinstance(router.sub_modules["query"][0], SparseStaticEmbedding)
    assert float32_close(ours.encode_query(queries), model.encode_query(queries))
    assert float32_close(ours.encode_document(corpus[:8]), model.encode_document(corpus[:8]))
    # ... and our own save loads back into us.
    again = SparseEncoder(str(tmp_path / "st"), device="cpu")
    again.save(tmp_path / "ours")
    assert float32_close(
        SparseEncoder(str(tmp_path / "ours"), device="cpu").encode_query(queries), ours.encode_query(queries)
    )


def test_max_active_dims_per_route_without_the_document_route(model, oracle, queries, corpus, doc_transformer):
    q = model.encode_query(queries, max_active_dims=3)
    assert float32_close(q, oracle.encode_query(queries, max_active_dims=3))
    assert int((dense(q) != 0).sum(dim=1).max()) <= 3
    d = model.encode_document(corpus[:6], max_active_dims=20)
    assert int((dense(d) != 0).sum(dim=1).max()) <= 20
    assert float32_close(d, oracle.encode_document(corpus[:6], max_active_dims=20))
    # Queries never touch the transformer.
    calls = []
    hook = doc_transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.encode_query(queries)
        assert calls == []
        model.encode_document(corpus[:1])
        assert calls == [1]
    finally:
        hook.remove()


def test_router_properties_and_errors(model):
    assert model.tokenizer is not None and model.max_seq_length == 512
    assert model.get_sentence_embedding_dimension() == 30522
    assert model.transformers_model is not None
    with pytest.raises(ValueError, match="no route for task 'nope'"):
        model.encode("x", task="nope")
    with pytest.raises(ValueError, match="default route"):
        Router({"query": []}, default_route="document")
    assert MODULE_CLASSES["Asym"] is Router and MODULE_CLASSES["Router"] is Router


def test_static_only_model_round_trips_both_ways(static, queries, tmp_path):
    from sentence_transformers import SparseEncoder as OracleEncoder

    ours = SparseEncoder(modules=[static], device="cpu")
    ours.save(tmp_path / "static")
    assert json.loads((tmp_path / "static" / "config.json").read_text()) == {"frozen": True}
    ref = OracleEncoder(str(tmp_path / "static"), device="cpu")
    expected = ours.encode(queries)
    assert float32_close(ref.encode(queries), expected)
    ref.save(str(tmp_path / "theirs"))
    back = SparseEncoder(str(tmp_path / "theirs"), device="cpu")
    assert isinstance(back[0], SparseStaticEmbedding) and back[0].frozen
    assert float32_close(back.encode(queries), expected)
