"""The transformer runs a large CPU batch in chunks of rows (sparsebridge.modules.token_chunks):
each chunk keeps the batch's padded width, and the embeddings are bit for bit those of the whole
batch in one pass."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from sparsebridge import SparseEncoder
from sparsebridge.modules import token_chunks
from sparsebridge.modules.token_chunks import in_token_chunks, token_budget


def _batch(lengths: list[int], width: int) -> dict[str, torch.Tensor]:
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    ids = torch.arange(1, width + 1).repeat(len(lengths), 1) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _recording_run(seen: list[tuple[int, int]]):
    def run(part):
        seen.append(tuple(part["input_ids"].shape))
        return torch.stack([part["input_ids"].float(), part["attention_mask"].float()], dim=-1)

    return run


def test_rows_are_split_by_the_budget_at_the_batch_width():
    inputs = _batch([10, 9, 7, 6, 3], width=10)
    seen: list[tuple[int, int]] = []
    out = in_token_chunks(inputs, _recording_run(seen), budget=20)  # 2 rows of 10 per pass
    assert seen == [(2, 10), (2, 10), (1, 10)]
    assert torch.equal(out[..., 0], inputs["input_ids"].float())  # every row back in its place
    assert torch.equal(out[..., 1], inputs["attention_mask"].float())


def test_a_batch_within_the_budget_is_one_pass():
    seen: list[tuple[int, int]] = []
    in_token_chunks(_batch([5, 3], width=5), _recording_run(seen), budget=10)
    assert seen == [(2, 5)]


def test_a_row_longer_than_the_budget_still_runs():
    seen: list[tuple[int, int]] = []
    in_token_chunks(_batch([8, 8, 2], width=8), _recording_run(seen), budget=5)
    assert seen == [(1, 8), (1, 8), (1, 8)]


def test_narrow_models_get_more_tokens_per_pass():
    assert token_budget(768) == 2048
    assert token_budget(128) == 12288
    assert token_budget(None) == 2048


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_chunked_encoding_equals_whole_batches_bit_for_bit(splade_path, monkeypatch, precision):
    """On the packaged model: passes of a few texts give exactly the embeddings of whole batches."""
    from sparsebridge import precision as precision_module

    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    texts = [f"{d['title']} {d['text']}".strip() for d in read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl", 40)]
    texts[3] = "a"  # lengths from 1 token to the 512-token limit
    texts[5] = " ".join(texts[:12])
    monkeypatch.setattr(token_chunks, "STATE_BUDGET", 10**12)  # never chunked
    whole_model = SparseEncoder(str(splade_path), precision=precision)
    whole = whole_model.encode(texts, batch_size=20).to_dense()
    monkeypatch.setattr(token_chunks, "STATE_BUDGET", 600 * 128)  # about 600 tokens per pass
    chunked_model = SparseEncoder(str(splade_path), precision=precision)
    assert chunked_model[0]._token_budget == 600
    assert torch.equal(chunked_model.encode(texts, batch_size=20).to_dense(), whole)
