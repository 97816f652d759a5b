"""Running the transformer on a large CPU batch in row chunks of bounded size.

A batch of 32 texts of 256 tokens keeps the activations of 8,192 tokens alive in every layer (the
4x-wide feed-forward states, the attention scores): a few hundred MB on a BERT-base model, more
than the bf16 weights. In chunks of a bounded number of padded tokens (``token_budget``) the
working set is a fraction of that while the matmuls stay large enough for a CPU: as fast per
token in the benchmark's own processes, 20% faster within one long-running process. Chunks keep
the batch's padded width: a text's states are then bit for bit those of the whole batch (cutting
each chunk after its longest text gained under 3% and changed a text's states in the last bits,
depending on its neighbours).

Before each pass the freed activations go back to the OS (``sparsebridge.heap``). GPUs run the batch
whole: there the larger kernels are what pays, and memory is the user's batch size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..runtime.heap import release_free_memory

# Padded tokens x hidden size per transformer pass on CPU: on BERT-base (hidden 768) passes of 2,048
# tokens run as fast as one of 8,192 and need a sixth of its working set (45 vs 282 MB, bf16).
# Narrower models take more tokens per pass (splade-tiny, hidden 128: 12,288): their kernels are
# small already.
STATE_BUDGET = 2048 * 768


def token_budget(hidden_size: int | None) -> int:
    """Padded tokens per pass for a model of this hidden size."""
    return max(1, STATE_BUDGET // max(int(hidden_size or 768), 1))


def in_token_chunks(
    inputs: dict[str, torch.Tensor],
    run: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    budget: int,
) -> torch.Tensor:
    """``run(inputs)`` (token states [batch, seq_len, dim]) computed in chunks of rows of at most
    ``budget`` padded tokens (at least one row)."""
    ids = inputs["input_ids"]
    rows, width = int(ids.shape[0]), int(ids.shape[1])
    step = max(1, budget // max(width, 1))
    if ids.device.type != "cpu":
        return run(inputs)
    # Before each pass, not after: what the previous pass and the pooling freed is then given back
    # when this pass starts, so its working set is the only one resident.
    if rows <= step:
        release_free_memory()
        return run(inputs)
    out: torch.Tensor | None = None
    for start in range(0, rows, step):
        release_free_memory()
        states = run({key: value[start : start + step] for key, value in inputs.items()})
        if out is None:
            out = states.new_empty((rows, *states.shape[1:]))
        out[start : start + states.shape[0]] = states
    return out
