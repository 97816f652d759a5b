"""Dense modules (feature-extraction Transformer, Pooling, Normalize, Dense) and ``DenseEncoder``:
parity with sentence-transformers (the oracle, test-only) on the packaged all-MiniLM-L6-v2 and real
cranfield/vaswani documents, and save/load round trips in both directions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from sparsebridge import DenseEncoder
from sparsebridge.modules import Dense, Normalize, Pooling, Transformer

TOL = 1e-5


@pytest.fixture(scope="module")
def texts() -> list[str]:
    vaswani = [d["text"] for d in read_jsonl(DATA_DIR / "vaswani" / "corpus.jsonl", 40)]
    # The longest cranfield documents exceed max_seq_length (256), so truncation is exercised.
    cranfield = sorted((d["text"] for d in read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl")), key=len)[-12:]
    return vaswani + cranfield


@pytest.fixture(scope="module")
def dense(minilm_path):
    return DenseEncoder(str(minilm_path), device="cpu")


@pytest.fixture(scope="module")
def oracle(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu")


def test_packaged_minilm_matches_oracle(dense, oracle, texts):
    ours, ref = dense.encode(texts, batch_size=16), oracle.encode(texts, batch_size=16)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    assert np.abs(ours - ref).max() <= TOL
    assert [type(m).__name__ for m in dense] == ["Transformer", "Pooling", "Normalize"]
    assert dense.get_sentence_embedding_dimension() == 384
    assert dense.similarity_fn_name == "cosine"


def test_output_types_and_single_input(dense, oracle, texts):
    tensor = dense.encode(texts[:5], convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (5, 384)
    rows = dense.encode(texts[:5], convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 5 and rows[0].shape == (384,)
    one = dense.encode(texts[0])
    assert one.shape == (384,) and np.abs(one - oracle.encode(texts[0])).max() <= TOL
    assert dense.encode([]).shape == (0, 384)
    # Results come back in input order whatever the batching.
    assert np.abs(dense.encode(texts, batch_size=3) - dense.encode(texts, batch_size=64)).max() <= TOL


def test_query_document_prompts_and_similarity_match_oracle(minilm_path, oracle, texts):
    from sentence_transformers import SentenceTransformer

    prompts = {"query": "query: ", "document": "passage: "}
    ours = DenseEncoder(str(minilm_path), device="cpu", prompts=prompts)
    ref = SentenceTransformer(str(minilm_path), device="cpu", prompts=prompts)
    queries = [q["text"] for q in read_jsonl(DATA_DIR / "cranfield" / "queries.jsonl", 10)]
    q, d = ours.encode_query(queries), ours.encode_document(texts[:20])
    assert np.abs(q - ref.encode_query(queries)).max() <= TOL
    assert np.abs(d - ref.encode_document(texts[:20])).max() <= TOL
    assert torch.allclose(ours.similarity(q, d), ref.similarity(q, d), atol=TOL)
    assert np.abs(q - ours.encode(queries)).max() > 1e-3  # the prompt really changes the vectors


def test_normalize_embeddings_and_truncate_dim(dense, oracle, texts):
    a = dense.encode(texts[:8], normalize_embeddings=True, truncate_dim=128)
    b = oracle.encode(texts[:8], normalize_embeddings=True, truncate_dim=128)
    assert a.shape == (8, 128) and np.abs(a - b).max() <= TOL
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "mode",
    ["mean", "max", "cls", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ("cls", "mean")],
)
def test_pooling_modes_match_oracle(minilm_path, texts, mode):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling as OraclePooling
    from sentence_transformers.sentence_transformer.modules import Transformer as OracleTransformer

    ours = DenseEncoder(modules=[Transformer(str(minilm_path), max_seq_length=128), Pooling(384, mode)], device="cpu")
    ref = SentenceTransformer(
        modules=[OracleTransformer(str(minilm_path), max_seq_length=128), OraclePooling(384, mode)], device="cpu"
    )
    sample = texts[:6] + texts[-2:]
    assert np.abs(ours.encode(sample, batch_size=4) - ref.encode(sample, batch_size=4)).max() <= TOL


def test_include_prompt_false_matches_oracle(minilm_path, texts, tmp_path):
    from sentence_transformers import SentenceTransformer

    ours = DenseEncoder(
        modules=[Transformer(str(minilm_path)), Pooling(384, "mean", include_prompt=False), Normalize()],
        device="cpu",
        prompts={"query": "Represent this question for retrieval: "},
    )
    ours.save(tmp_path / "m")
    ref = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    queries = texts[:6]
    a, b = ours.encode_query(queries), ref.encode_query(queries)
    assert np.abs(a - b).max() <= TOL
    with_prompt = DenseEncoder(str(minilm_path), device="cpu", prompts=ours.prompts).encode_query(queries)
    assert np.abs(a - with_prompt).max() > 1e-3  # excluding the prompt tokens changes the pooling


def test_dense_layer_round_trips_both_ways(minilm_path, texts, tmp_path):
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    dense_layer = Dense(384, 64, activation_function="torch.nn.modules.activation.Tanh")
    ours = DenseEncoder(
        modules=[Transformer(str(minilm_path)), Pooling(384, "mean"), dense_layer, Normalize()], device="cpu"
    )
    ours.save(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "2_Dense" / "config.json").read_text())
    assert config["activation_function"] == "torch.nn.modules.activation.Tanh" and config["out_features"] == 64
    ref = SentenceTransformer(str(tmp_path / "ours"), device="cpu")
    expected = ours.encode(texts[:10])
    assert expected.shape == (10, 64)
    assert np.abs(ref.encode(texts[:10]) - expected).max() <= TOL
    # ... and we load what sentence-transformers saves.
    ref.save(str(tmp_path / "theirs"))
    again = DenseEncoder(str(tmp_path / "theirs"), device="cpu")
    assert [type(m).__name__ for m in again] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert np.abs(again.encode(texts[:10]) - expected).max() <= TOL


def test_oracle_saved_minilm_loads_and_matches(oracle, texts, tmp_path):
    oracle.save(str(tmp_path / "st"))
    ours = DenseEncoder(str(tmp_path / "st"), device="cpu")
    assert np.abs(ours.encode(texts[:10]) - oracle.encode(texts[:10])).max() <= TOL


def test_bare_checkpoint_becomes_mean_pooling(minilm_path, texts, tmp_path):
    from sentence_transformers import SentenceTransformer

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (bare / name).write_bytes((minilm_path / name).read_bytes())
    ours = DenseEncoder(str(bare), device="cpu")
    ref = SentenceTransformer(str(bare), device="cpu")
    assert [type(m).__name__ for m in ours] == ["Transformer", "Pooling"]
    assert np.abs(ours.encode(texts[:5]) - ref.encode(texts[:5])).max() <= TOL


def test_unknown_output_value_is_an_error(dense):
    with pytest.raises(ValueError, match="output_value"):
        dense.encode("x", output_value="token_embeddings")
