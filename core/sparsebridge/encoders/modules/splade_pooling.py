"""SPLADE pooling: token logits over the vocabulary -> one sparse weight per vocabulary entry.

The textbook formula is ``pool_t(log(1 + relu(logits[t, v])))`` over the real tokens t of a text,
with ``pool`` = max or sum (``activation_function="log1p_relu"`` applies log1p twice).

When the transformer hands over the projection's input instead of logits (see
``transformer.Transformer``), the projection runs here on real tokens only, one block of
vocabulary columns and a bounded group of tokens at a time, so peak memory is
``token_budget x vocab_block`` floats whatever the batch size. For max pooling the monotone
activation is applied once per (row, vocabulary entry) after taking the max of raw logits.

In bf16 the projection runs in bf16 (AMX / AVX-512 BF16 matmuls accumulate in fp32 inside) and the
max is taken on bf16 logits, which is exact; the bias, the activation and any sum are fp32, and the
output is fp32 whatever the model's precision.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import nn

from .base import Module

POOLING_STRATEGIES = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")
# Real tokens projected per matmul when no chunk_size is set.
TOKEN_BUDGET = 1024
# Bytes of logits one matmul writes: a block of 1024 tokens x 1024 (fp32) or 2048 (bf16) vocabulary
# columns stays within L2/L3. Fewer, larger kernels than 512 x 512 blocks: every kernel is a
# synchronisation point of the intra-op threads, which is what collapses under foreign load.
BLOCK_BYTES = 4 << 20


class SpladePooling(Module):
    """SPLADE pooling: the masked LM's vocabulary logits, activated and pooled over tokens (max or sum),
    without building the [batch, seq_len, vocab] tensor."""

    config_keys: ClassVar[tuple[str, ...]] = (
        "pooling_strategy",
        "activation_function",
        "embedding_dimension",
    )
    st_type: ClassVar[str] = "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling"

    def __init__(
        self,
        pooling_strategy: Literal["max", "sum"] = "max",
        activation_function: Literal["relu", "log1p_relu"] = "relu",
        embedding_dimension: int | None = None,
        chunk_size: int | None = None,
        word_embedding_dimension: int | None = None,
    ) -> None:
        super().__init__()
        if pooling_strategy not in POOLING_STRATEGIES:
            raise ValueError(f"pooling_strategy must be one of {POOLING_STRATEGIES}, got {pooling_strategy!r}")
        if activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function must be one of {ACTIVATIONS}, got {activation_function!r}")
        if chunk_size is not None and chunk_size <= 0:
            chunk_size = None
        self.pooling_strategy = pooling_strategy
        self.activation_function = activation_function
        # Older configs call it word_embedding_dimension.
        self.embedding_dimension = embedding_dimension or word_embedding_dimension
        self.chunk_size = chunk_size

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.log1p(torch.relu(x))
        if self.activation_function == "log1p_relu":
            x = torch.log1p(x)
        return x

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "attention_mask" not in features and "cu_seq_lens_q" in features:
            # Unpadded input (flash-attention style): all texts' logits in one row, split at cu_seq_lens_q.
            pooled = self._pool_flat(features["token_embeddings"], features["cu_seq_lens_q"])
            if self.embedding_dimension is None:
                self.embedding_dimension = pooled.shape[-1]
            features["sentence_embedding"] = pooled
            return features
        mask = features["attention_mask"]
        if "vocab_projection" in features:
            pooled = self._pool_projected(features["token_hidden"], mask, features.pop("vocab_projection"))
            features.pop("token_hidden")
        else:
            pooled = self._pool_logits(features["token_embeddings"], mask)
        if self.embedding_dimension is None:
            self.embedding_dimension = pooled.shape[-1]
        features["sentence_embedding"] = pooled
        return features

    def _pool_flat(self, logits: torch.Tensor, cu_seq_lens: torch.Tensor) -> torch.Tensor:
        """Pool [1, total_tokens, vocab] logits whose text i spans tokens cu[i]:cu[i+1].

        Works on slices (views) of the caller's tensor, so nothing here is in-place.
        """
        flat = logits.reshape(-1, logits.shape[-1])
        bounds = [int(x) for x in cu_seq_lens.tolist()]
        rows = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            if end <= start:
                rows.append(flat.new_zeros(flat.shape[-1]))
                continue
            act = self.activate(flat[start:end])
            rows.append(act.amax(dim=0) if self.pooling_strategy == "max" else act.sum(dim=0))
        return torch.stack(rows) if rows else flat.new_zeros(0, flat.shape[-1])

    # The textbook path, for models whose logits arrive materialised.
    def _pool_logits(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, seq_len, vocab = logits.shape
        step = self.chunk_size or seq_len
        pooled = logits.new_zeros(batch, vocab, dtype=torch.float32)
        for start in range(0, seq_len, max(step, 1)):
            chunk = logits[:, start : start + step].float() * mask[:, start : start + step, None].float()
            act = self.activate(chunk)
            if self.pooling_strategy == "max":
                pooled = torch.maximum(pooled, act.amax(dim=1))
            else:
                pooled = pooled + act.sum(dim=1)
        return pooled

    def _pool_projected(self, hidden: torch.Tensor, mask: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
        weight = projection.weight
        bias = None if projection.bias is None else projection.bias.float()
        vocab = weight.shape[0]
        lengths = mask.sum(dim=1).tolist()
        real = hidden[mask.bool()].to(weight.dtype)  # [real tokens, hidden]; one text's rows are contiguous
        is_max = self.pooling_strategy == "max"
        budget = self.chunk_size or TOKEN_BUDGET
        block = vocab_block(min(budget, len(real)), weight.element_size())
        # Max pooling keeps raw logit maxima (exact in the weights' dtype); -inf marks texts without
        # tokens (they pool to 0). Sums accumulate in fp32.
        out_dtype = weight.dtype if is_max else torch.float32
        out = hidden.new_full((len(lengths), vocab), float("-inf") if is_max else 0.0, dtype=out_dtype)
        for tok0, tok1, segments in _chunks(lengths, budget):
            tokens = real[tok0:tok1]
            for v0 in range(0, vocab, block):
                v1 = min(vocab, v0 + block)
                logits = tokens @ weight[v0:v1].t()
                if not is_max:
                    logits = logits.float()
                    if bias is not None:
                        logits += bias[v0:v1]
                    logits = self.activate(logits)
                reduce = torch.amax if is_max else torch.sum
                combine = torch.maximum if is_max else torch.add
                for row, s0, s1, whole in segments:
                    target = out[row, v0:v1]
                    if whole:  # the text lies in this chunk alone: write its result directly
                        reduce(logits[s0:s1], dim=0, out=target)
                    else:  # a long text spans chunks: fold this chunk into its running result
                        combine(target, reduce(logits[s0:s1], dim=0), out=target)
        if is_max:
            out = out.float()
            if bias is not None:
                # max_t(x_t.w + b) = max_t(x_t.w) + b: the bias is added once, after the max.
                out += bias
            return self.activate(out)
        return out


def vocab_block(tokens: int, itemsize: int) -> int:
    """Vocabulary columns per matmul for a chunk of ``tokens`` rows: ``BLOCK_BYTES`` of logits."""
    return max(256, BLOCK_BYTES // (max(tokens, 1) * itemsize))


def _chunks(lengths: list[int], budget: int):
    """Split the concatenated real tokens into chunks of at most ``budget`` rows.

    Yields (start, end, segments) where each segment (row, s0, s1, whole) is the part of text
    ``row`` inside the chunk, relative to its start; ``whole`` says the text has no other part.
    """
    spans, start = [], 0
    for row, n in enumerate(lengths):
        spans.append((row, start, start + n))
        start += n
    total, pos, i = start, 0, 0
    while pos < total:
        end = min(pos + budget, total)
        segments = []
        while i < len(spans) and spans[i][1] < end:
            row, s, e = spans[i]
            if e > s:
                lo, hi = max(s, pos), min(e, end)
                segments.append((row, lo - pos, hi - pos, lo == s and hi == e))
            if e <= end:
                i += 1
            else:
                break
        yield pos, end, segments
        pos = end
