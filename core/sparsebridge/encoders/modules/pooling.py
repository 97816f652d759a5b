"""Token embeddings -> one sentence embedding (the pooling of dense sentence-transformers models).

Modes follow sentence-transformers: ``mean``, ``max``, ``cls``, ``mean_sqrt_len_tokens``,
``weightedmean`` (position-weighted mean) and ``lasttoken``; several modes concatenate. Both config
formats load: ``pooling_mode`` (sentence-transformers >= 6) and the older ``pooling_mode_*_tokens``
booleans with ``word_embedding_dimension``. Saving writes the current format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from .base import Module, read_json

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _config_from_legacy(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    if "word_embedding_dimension" in config and "embedding_dimension" not in config:
        config["embedding_dimension"] = config.pop("word_embedding_dimension")
    legacy = [k for k in _LEGACY_KEYS if k in config]
    if legacy and "pooling_mode" not in config:
        modes = [mode for key, mode in _LEGACY_KEYS.items() if config.get(key)]
        config["pooling_mode"] = modes or ["mean"]
    for key in legacy:
        config.pop(key)
    return config


class Pooling(Module):
    """Token embeddings -> one sentence embedding: mean, max, CLS... (sentence-transformers' ``Pooling``)."""

    config_keys: ClassVar[tuple[str, ...]] = ("embedding_dimension", "pooling_mode", "include_prompt")
    st_type: ClassVar[str] = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"

    def __init__(
        self,
        embedding_dimension: int,
        pooling_mode: str | list[str] | tuple[str, ...] = "mean",
        include_prompt: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(pooling_mode, (list, tuple)):
            pooling_mode = pooling_mode[0] if len(pooling_mode) == 1 else tuple(pooling_mode)
        modes = (pooling_mode,) if isinstance(pooling_mode, str) else pooling_mode
        for mode in modes:
            if mode not in POOLING_MODES:
                raise ValueError(f"unknown pooling mode {mode!r}; choose from {POOLING_MODES}")
        self.embedding_dimension = int(embedding_dimension)
        self.pooling_mode = pooling_mode
        self.modes: tuple[str, ...] = tuple(modes)
        self.include_prompt = bool(include_prompt)

    def get_config_dict(self) -> dict[str, Any]:
        mode = self.pooling_mode if isinstance(self.pooling_mode, str) else list(self.pooling_mode)
        return {
            "embedding_dimension": self.embedding_dimension,
            "pooling_mode": mode,
            "include_prompt": self.include_prompt,
        }

    def get_sentence_embedding_dimension(self) -> int:
        return self.embedding_dimension * len(self.modes)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        tokens = features["token_embeddings"]
        mask = features.get("attention_mask")
        if mask is None or mask.shape[-1] != tokens.shape[1]:
            mask = torch.ones(tokens.shape[:-1], dtype=torch.int64, device=tokens.device)
        first_real = mask.to(torch.int32).argmax(dim=1)  # left padding: where each text starts
        pooling_mask = mask
        prompt_length = features.get("prompt_length")
        if not self.include_prompt and prompt_length:
            positions = torch.arange(mask.shape[1], device=mask.device)[None, :]
            pooling_mask = mask * (positions >= (first_real + int(prompt_length))[:, None]).to(mask.dtype)
        outputs = [self._pool(mode, tokens, mask, pooling_mask, first_real) for mode in self.modes]
        features["sentence_embedding"] = torch.cat(outputs, dim=-1)
        return features

    @staticmethod
    def _pool(mode: str, tokens: torch.Tensor, full_mask, mask, first_real) -> torch.Tensor:
        acc = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        if mode == "cls":
            index = mask.to(torch.int32).argmax(dim=1)
            return tokens[torch.arange(tokens.shape[0], device=tokens.device), index]
        if mode == "max":
            return tokens.masked_fill(weights == 0, float("-inf")).max(dim=1).values
        if mode in ("mean", "mean_sqrt_len_tokens"):
            total = (tokens * weights).sum(dim=1, dtype=acc)
            count = weights.sum(dim=1, dtype=acc).clamp(min=1e-9)
            return (total / (count if mode == "mean" else count.sqrt())).to(tokens.dtype)
        if mode == "weightedmean":
            # Position weights 1, 2, ... counted from each text's first real token.
            positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=acc)[None, :, None]
            w = mask.unsqueeze(-1).to(acc) * (positions - first_real.view(-1, 1, 1))
            return ((tokens * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)).to(tokens.dtype)
        # lasttoken: the last real token (right padding) of each text.
        flipped = full_mask.flip(1)
        values, index = flipped.max(dim=1)
        index = torch.where(values == 0, tokens.shape[1] - 1, index)
        last = tokens.shape[1] - 1 - index
        masked = tokens * full_mask.unsqueeze(-1).to(tokens.dtype)
        return masked[torch.arange(tokens.shape[0], device=tokens.device), last]

    @classmethod
    def load(cls, input_path: str | os.PathLike, **kwargs: Any) -> Pooling:
        path = Path(input_path) / cls.config_file_name
        config = read_json(path)
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a JSON object")
        config = _config_from_legacy(config)
        if "embedding_dimension" not in config:
            raise ValueError(f"{path}: missing embedding_dimension (or word_embedding_dimension)")
        return cls(**{k: v for k, v in config.items() if k in cls.config_keys})
