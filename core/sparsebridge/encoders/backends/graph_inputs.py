"""The arrays an exported graph (ONNX, OpenVINO) is fed from the tokenizer's tensors.

sentence-transformers' exports take int64 ``input_ids``, ``attention_mask`` and, for BERT-style
models, ``token_type_ids``; a tokenizer that gives no token types means all zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import ModelLoadError


def graph_feed(path: Path, input_names: list[str], inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """One int64 array per input the graph at ``path`` names; a missing input is one clear error."""
    feed = {}
    for name in input_names:
        if name in inputs:
            feed[name] = inputs[name].cpu().numpy().astype(np.int64, copy=False)
        elif name == "token_type_ids":
            feed[name] = np.zeros_like(inputs["input_ids"].cpu().numpy(), dtype=np.int64)
        else:
            raise ModelLoadError(f"{path}: the model needs input {name!r}, which the tokenizer does not give")
    return feed
