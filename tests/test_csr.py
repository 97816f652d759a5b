"""CSR models (Transformer + Pooling + SparseAutoEncoder): parity with sentence-transformers (the
oracle, test-only) on the packaged all-MiniLM-L6-v2 and vaswani abstracts, and save/load both ways."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from sparsebridge import SparseEncoder
from sparsebridge.modules import Normalize, Pooling, SparseAutoEncoder, Transformer

TOL = 1e-5
HIDDEN, K = 1024, 16


def dense(x: torch.Tensor) -> torch.Tensor:
    return x.to_dense() if x.is_sparse else x


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [d["text"] for d in read_jsonl(DATA_DIR / "vaswani" / "corpus.jsonl", 40)]


def build(minilm_path, normalize: bool, seed: int = 0) -> SparseEncoder:
    torch.manual_seed(seed)
    sae = SparseAutoEncoder(384, hidden_dim=HIDDEN, k=K, k_aux=64, normalize=normalize)
    with torch.no_grad():  # a trained CSR head is not zero-initialised: give every weight a value
        sae.encoder.weight.normal_(0, 0.05)
        sae.pre_bias.normal_(0, 0.01)
        sae.latent_bias.normal_(0, 0.01)
    modules = [Transformer(str(minilm_path), max_seq_length=128), Pooling(384, "mean"), Normalize(), sae]
    return SparseEncoder(modules=modules, device="cpu")


@pytest.mark.parametrize("normalize", [False, True])
def test_csr_model_matches_oracle_and_round_trips(minilm_path, texts, tmp_path, normalize):
    from sentence_transformers import SparseEncoder as OracleEncoder

    ours = build(minilm_path, normalize)
    assert ours.max_active_dims == K and ours.get_sentence_embedding_dimension() == HIDDEN
    out = ours.encode(texts, batch_size=16)
    assert out.is_sparse and out.shape == (len(texts), HIDDEN)
    active = (dense(out) != 0).sum(dim=1)
    assert int(active.max()) <= K and int(active.min()) > 0

    ours.save(tmp_path / "csr")
    config = json.loads((tmp_path / "csr" / "3_SparseAutoEncoder" / "config.json").read_text())
    assert config == {"input_dim": 384, "hidden_dim": HIDDEN, "k": K, "k_aux": 64, "normalize": normalize,
                      "dead_threshold": 30}  # fmt: skip
    ref = OracleEncoder(str(tmp_path / "csr"), device="cpu")
    assert (dense(ref.encode(texts, batch_size=16)) - dense(out)).abs().max() <= TOL
    # max_active_dims above k lets more latents through, in both libraries alike.
    wide = ours.encode(texts[:8], max_active_dims=40)
    assert int((dense(wide) != 0).sum(dim=1).max()) > K
    assert (dense(ref.encode(texts[:8], max_active_dims=40)) - dense(wide)).abs().max() <= TOL

    again = SparseEncoder(str(tmp_path / "csr"), device="cpu")
    assert isinstance(again[-1], SparseAutoEncoder)
    assert (dense(again.encode(texts, batch_size=16)) - dense(out)).abs().max() == 0

    ref.save(str(tmp_path / "theirs"))
    theirs = SparseEncoder(str(tmp_path / "theirs"), device="cpu")
    assert (dense(theirs.encode(texts, batch_size=16)) - dense(out)).abs().max() <= TOL


def test_sparse_auto_encoder_module_matches_oracle_module():
    from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder as OracleSAE

    torch.manual_seed(1)
    ref = OracleSAE(32, hidden_dim=64, k=5, normalize=True)
    with torch.no_grad():
        ref.encoder.weight.normal_()
        ref.pre_bias.normal_()
        ref.latent_bias.normal_()
    ours = SparseAutoEncoder(32, hidden_dim=64, k=5, normalize=True)
    state = {k: v for k, v in ref.state_dict().items() if k != "decoder.linear.weight"}
    ours.load_state_dict(state)
    x = torch.randn(7, 32)
    with torch.inference_mode():
        a = ours({"sentence_embedding": x.clone()})["sentence_embedding"]
        b = ref.eval()({"sentence_embedding": x.clone()})["sentence_embedding"]
        assert torch.allclose(a, b, atol=1e-6)
        c = ours({"sentence_embedding": x.clone()}, max_active_dims=9)["sentence_embedding"]
        d = ref({"sentence_embedding": x.clone()}, max_active_dims=9)["sentence_embedding"]
        assert torch.allclose(c, d, atol=1e-6)
    with pytest.raises(ValueError):
        SparseAutoEncoder(8, hidden_dim=4, k=5)
