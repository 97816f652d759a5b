"""The fast SPLADE pooling path equals the textbook formula and never builds [batch, seq, vocab]."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from sparsebridge.modules import SpladePooling
from sparsebridge.modules import splade_pooling as pooling_module
from torch.utils._python_dispatch import TorchDispatchMode


@pytest.fixture(scope="module")
def texts() -> list[str]:
    docs = read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl", 48)
    return [f"{d['title']} {d['text']}".strip() for d in docs] + ["", "x", "wing"]


def textbook(encoder, texts, strategy, activation):
    """pool_t(act(logits)) over real tokens, from full logits computed one text at a time."""
    rows = []
    with torch.no_grad():
        for text in texts:
            features = encoder.tokenize([text])
            logits = encoder.transformers_model(**features).logits[0]
            act = torch.log1p(torch.relu(logits))
            if activation == "log1p_relu":
                act = torch.log1p(act)
            rows.append(act.amax(0) if strategy == "max" else act.sum(0))
    return torch.stack(rows)


@pytest.mark.parametrize("strategy", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_fast_path_equals_textbook_formula(encoder, texts, strategy, activation):
    assert encoder[0].projects_lazily  # the fast path is the one under test
    pooling = encoder[1]
    old = pooling.pooling_strategy, pooling.activation_function
    pooling.pooling_strategy, pooling.activation_function = strategy, activation
    try:
        got = encoder.encode(texts, batch_size=16, convert_to_sparse_tensor=False)
    finally:
        pooling.pooling_strategy, pooling.activation_function = old
    want = textbook(encoder, texts, strategy, activation)
    # Sums of hundreds of terms differ only by float32 summation order (a few ulps of the total, and
    # the blocks' matmul kernels may order the 128-term dot products differently): rtol 1e-5.
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5 if strategy == "sum" else 0.0)


def test_materialised_logits_path_equals_fast_path(encoder, texts):
    """The textbook path (used for heads that post-process logits) agrees with the fast one."""
    features = encoder.tokenize(texts[:8])
    with torch.no_grad():
        logits = encoder.transformers_model(**features).logits
        slow = SpladePooling(chunk_size=7)({"token_embeddings": logits, "attention_mask": features["attention_mask"]})
    fast = encoder.encode(texts[:8], convert_to_sparse_tensor=False)
    assert torch.allclose(slow["sentence_embedding"], fast, atol=1e-5)


class LargestTensors(TorchDispatchMode):
    """Records the shape of every tensor an op produces while active."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("batch_size", [4, 32])
def test_pooling_memory_does_not_grow_with_batch_times_vocab(encoder, texts, batch_size):
    vocab = encoder.get_sentence_embedding_dimension()
    with LargestTensors() as seen:
        encoder.encode(texts[:batch_size], batch_size=batch_size)
    assert not [s for s in seen.shapes if len(s) == 3 and s[-1] == vocab], "a [batch, seq, vocab] tensor was built"
    # Intermediates over the vocabulary hold at most one chunk of tokens x one vocabulary block,
    # whatever the batch size and document length.
    limit = pooling_module.BLOCK_BYTES // 4  # fp32 logits
    widths = {pooling_module.vocab_block(n, 4) for n in range(1, pooling_module.TOKEN_BUDGET + 1)}
    widths |= {vocab % w for w in widths}
    blocks = [s for s in seen.shapes if len(s) == 2 and s[1] in widths and s[0] > batch_size]
    assert blocks and max(s[0] * s[1] for s in blocks) <= limit


def test_chunks_split_long_texts_and_skip_empty_ones():
    chunks = list(pooling_module._chunks([3, 0, 5, 2], 4))
    assert chunks == [
        (0, 4, [(0, 0, 3, True), (2, 3, 4, False)]),
        (4, 8, [(2, 0, 4, False)]),
        (8, 10, [(3, 0, 2, True)]),
    ]
    assert list(pooling_module._chunks([0, 0], 4)) == []
