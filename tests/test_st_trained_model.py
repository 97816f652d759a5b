"""Training stays with sentence-transformers: a model it trains (a few optimizer steps with its own SPLADE
loss on the packaged model) and saves loads in sparsebridge with the outputs sentence-transformers gives."""

from __future__ import annotations

import pytest
import torch
from sparsebridge import SparseEncoder

TEXTS = ["what causes boundary layer separation", "heat transfer in hypersonic flow", "flutter of swept wings"]
QUERIES = ["boundary layer separation", "hypersonic heat transfer", "wing flutter", "shock wave reflection"]
DOCUMENTS = [
    "separation of the laminar boundary layer under an adverse pressure gradient",
    "measurements of heat transfer to a flat plate at hypersonic speeds",
    "flutter analysis of swept wings in subsonic flow",
    "reflection of a plane shock wave from a wedge",
]


@pytest.fixture(scope="module")
def trained(splade_path, tmp_path_factory):
    from sentence_transformers import SparseEncoder as OracleEncoder
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss

    torch.manual_seed(0)
    model = OracleEncoder(str(splade_path), device="cpu")
    before = model.encode(TEXTS, convert_to_sparse_tensor=False)
    loss = SpladeLoss(
        model,
        SparseMultipleNegativesRankingLoss(model),
        query_regularizer_weight=5e-5,
        document_regularizer_weight=3e-5,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    losses = []
    for _ in range(3):
        parts = loss([model.preprocess(QUERIES), model.preprocess(DOCUMENTS)], None)
        total = sum(parts.values()) if isinstance(parts, dict) else parts
        total.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(total.item())
    model.eval()
    folder = tmp_path_factory.mktemp("st_trained")
    model.save_pretrained(str(folder))
    return folder, before, model.encode(TEXTS, convert_to_sparse_tensor=False), losses


def test_training_changed_the_model(trained):
    _, before, after, losses = trained
    assert losses[-1] < losses[0]
    assert (after - before).abs().max().item() > 0.1
    assert bool(((after != 0).sum(dim=1) > 0).all())  # still a working encoder, not a collapsed one


def test_sparsebridge_loads_it_with_equal_outputs(trained):
    folder, _, expected, _ = trained
    model = SparseEncoder(str(folder), device="cpu")
    ours = model.encode(TEXTS, convert_to_sparse_tensor=False)
    assert (ours - expected).abs().max().item() <= 1e-5
    assert torch.allclose(model.similarity(ours, ours), model.similarity(expected, expected), atol=1e-4)
