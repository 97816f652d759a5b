"""The transformer runs a large CPU batch in chunks of rows (sparsebridge.modules.token_chunks):
the embeddings are those of the whole batch in one pass, each chunk drops only columns that are
padding in all its rows, and left padding (positions would shift) is never cut."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA_DIR, read_jsonl
from sparsebridge import SparseEncoder
from sparsebridge.modules import token_chunks
from sparsebridge.modules.token_chunks import in_token_chunks, token_budget


def _batch(lengths: list[int], width: int, left: bool = False) -> dict[str, torch.Tensor]:
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        if left:
            mask[row, width - n :] = 1
        else:
            mask[row, :n] = 1
    ids = torch.arange(1, width + 1).repeat(len(lengths), 1) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _recording_run(seen: list[tuple[int, int]]):
    def run(part):
        seen.append(tuple(part["input_ids"].shape))
        return torch.stack([part["input_ids"].float(), part["attention_mask"].float()], dim=-1)

    return run


def test_chunks_are_cut_after_their_longest_text_and_pad_back_with_zeros():
    inputs = _batch([10, 9, 7, 6, 3, 2], width=10)
    seen: list[tuple[int, int]] = []
    out = in_token_chunks(inputs, _recording_run(seen), budget=20)  # 2 rows of 10 per pass
    assert seen == [(2, 10), (2, 7), (2, 3)]
    assert out.shape == (6, 10, 2)
    assert torch.equal(out[..., 0], inputs["input_ids"].float())  # real tokens in place, padding zero
    assert torch.equal(out[..., 1], inputs["attention_mask"].float())


def test_left_padding_is_never_cut():
    inputs = _batch([10, 4, 3, 2], width=10, left=True)
    seen: list[tuple[int, int]] = []
    out = in_token_chunks(inputs, _recording_run(seen), budget=20)
    assert seen == [(2, 10), (2, 10)]  # the last columns hold real tokens in every row
    assert torch.equal(out[..., 0], inputs["input_ids"].float())


def test_a_batch_within_the_budget_is_one_pass():
    inputs = _batch([5, 3], width=5)
    seen: list[tuple[int, int]] = []
    in_token_chunks(inputs, _recording_run(seen), budget=10)
    assert seen == [(2, 5)]


def test_narrow_models_get_more_tokens_per_pass():
    assert token_budget(768) == 2048
    assert token_budget(128) == 12288
    assert token_budget(None) == 2048


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_chunked_encoding_equals_whole_batches(splade_path, monkeypatch, precision):
    """On the packaged model: passes of a few texts give the embeddings of whole batches."""
    from sparsebridge import precision as precision_module

    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    texts = [f"{d['title']} {d['text']}".strip() for d in read_jsonl(DATA_DIR / "cranfield" / "corpus.jsonl", 40)]
    texts[3] = "a"  # lengths from 1 token to the 512-token limit
    texts[5] = " ".join(texts[:12])
    whole = SparseEncoder(str(splade_path), precision=precision).encode(texts, batch_size=20).to_dense()
    monkeypatch.setattr(token_chunks, "STATE_BUDGET", 600 * 128)  # about 600 tokens per pass
    chunked_model = SparseEncoder(str(splade_path), precision=precision)
    assert chunked_model[0]._token_budget == 600
    chunked = chunked_model.encode(texts, batch_size=20).to_dense()
    # Different matmul shapes sum in another order: fp32 rounding, or bf16's (8 significant bits: two
    # bf16 runs differ by about what each differs from fp32, 1-2%; test_precision's bound is 5%).
    if precision == "fp32":
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    else:
        relative = (chunked - whole).norm(dim=1) / whole.norm(dim=1)
        assert relative.max() <= 0.05, relative.max()
