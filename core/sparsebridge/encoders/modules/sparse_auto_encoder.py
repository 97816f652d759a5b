"""CSR (Contrastive Sparse Representation, "Beyond Matryoshka", arXiv 2503.01776): a top-k sparse
auto-encoder over a dense sentence embedding. Only the encoder half runs at inference:

    x' = LayerNorm-like standardisation of x        (only when ``normalize=True``)
    z  = W_enc (x' - pre_bias) + latent_bias          ([batch, hidden_dim])
    out = relu(top_k(z))                              (the k largest entries kept, the rest 0)

``k`` is ``max_active_dims`` when ``encode`` passes one, else the configured ``k``. The weights and
config are those of sentence-transformers' ``SparseAutoEncoder`` (the tied decoder shares the
encoder's weight, so a file may name it either way); ``k_aux`` and ``dead_threshold`` only matter
for training and are kept for the config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file as load_safetensors
from torch import nn

from .base import LEGACY_WEIGHTS_FILE, WEIGHTS_FILE, Module, filter_config, read_json

_TIED_DECODER_KEY = "decoder.linear.weight"


class SparseAutoEncoder(Module):
    """A k-sparse autoencoder over a dense embedding: CSR models (sentence-transformers' ``SparseAutoEncoder``)."""

    config_keys: ClassVar[tuple[str, ...]] = ("input_dim", "hidden_dim", "k", "k_aux", "normalize", "dead_threshold")
    st_type: ClassVar[str] = "sentence_transformers.sparse_encoder.modules.sparse_auto_encoder.SparseAutoEncoder"
    forward_kwargs: ClassVar[tuple[str, ...]] = ("max_active_dims",)

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 512,
        k: int = 8,
        k_aux: int = 512,
        normalize: bool = False,
        dead_threshold: int = 30,
    ) -> None:
        super().__init__()
        if not 0 < k <= hidden_dim:
            raise ValueError(f"k must be in 1..hidden_dim ({hidden_dim}), got {k}")
        self.input_dim = int(input_dim)
        self.hidden_dim = int(hidden_dim)
        self.k = int(k)
        self.k_aux = int(k_aux)
        self.normalize = bool(normalize)
        self.dead_threshold = int(dead_threshold)
        self.pre_bias = nn.Parameter(torch.zeros(self.input_dim))
        self.encoder = nn.Linear(self.input_dim, self.hidden_dim, bias=False)
        self.latent_bias = nn.Parameter(torch.zeros(self.hidden_dim))
        # Training statistics (steps since each latent last fired); saved for compatibility.
        self.register_buffer("stats_last_nonzero", torch.zeros(self.hidden_dim, dtype=torch.long))

    def standardise(self, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        x = x - x.mean(dim=-1, keepdim=True)
        return x / (x.std(dim=-1, keepdim=True) + eps)

    def encode_pre_act(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = self.standardise(x)
        return F.linear(x - self.pre_bias, self.encoder.weight, self.latent_bias)

    def _top_k(self, latents: torch.Tensor, k: int) -> torch.Tensor:
        top = latents.topk(min(k, self.hidden_dim), dim=-1)
        return F.relu(torch.zeros_like(latents).scatter(-1, top.indices, top.values))

    def forward(self, features: dict[str, Any], max_active_dims: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """``sentence_embedding`` -> its k sparsest latents. Outside inference mode (training) the
        reconstructions that CSR's losses need come along, under sentence-transformers' keys."""
        k = max_active_dims if max_active_dims is not None else self.k
        x = features["sentence_embedding"]
        if torch.is_inference_mode_enabled():
            features["sentence_embedding"] = self._top_k(self.encode_pre_act(x), k)
            return features
        prepared = self.standardise(x) if self.normalize else x
        mu = x.mean(dim=-1, keepdim=True)
        std = (x - mu).std(dim=-1, keepdim=True)
        latents = F.linear(prepared - self.pre_bias, self.encoder.weight, self.latent_bias)
        top = latents.topk(min(k, self.hidden_dim), dim=-1)
        latents_k = F.relu(torch.zeros_like(latents).scatter(-1, top.indices, top.values))
        if self.training and torch.is_grad_enabled():
            # Steps since each latent last fired; "dead" latents feed the auxiliary loss.
            fired = torch.zeros_like(self.stats_last_nonzero)
            fired.scatter_add_(0, top.indices.reshape(-1), (top.values > 1e-5).to(fired.dtype).reshape(-1))
            self.stats_last_nonzero *= 1 - fired.clamp(max=1)
            self.stats_last_nonzero += 1
        latents_aux = None
        if self.k_aux:
            dead = latents * (self.stats_last_nonzero > self.dead_threshold)
            latents_aux = self._top_k(dead, self.k_aux)
        latents_4k = self._top_k(latents, 4 * k)

        def decode(z: torch.Tensor) -> torch.Tensor:  # the tied decoder: the encoder weight, transposed
            out = z @ self.encoder.weight + self.pre_bias
            return out * std + mu if self.normalize else out

        recons_k = decode(latents_k)
        recons_aux = None
        if latents_aux is not None:
            recons_aux = latents_aux @ self.encoder.weight + self.pre_bias
            if self.normalize:
                recons_aux = recons_aux * std
        decoder_bias = self.pre_bias * std if self.normalize else self.pre_bias
        features.update(
            {
                "sentence_embedding_backbone": x,
                "sentence_embedding_encoded": latents,
                "sentence_embedding_encoded_4k": latents_4k,
                "auxiliary_embedding": latents_aux,
                "decoded_embedding_k": recons_k,
                "decoded_embedding_4k": decode(latents_4k),
                "decoded_embedding_aux": recons_aux,
                "decoded_embedding_k_pre_bias": recons_k - decoder_bias,
                "sentence_embedding": latents_k,
            }
        )
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.hidden_dim

    @classmethod
    def load(cls, input_path: str | os.PathLike, **kwargs: Any) -> SparseAutoEncoder:
        path = Path(input_path)
        config_file = path / cls.config_file_name
        module = cls(**filter_config(cls, read_json(config_file), config_file))
        if (path / WEIGHTS_FILE).is_file():
            state = load_safetensors(str(path / WEIGHTS_FILE))
        elif (path / LEGACY_WEIGHTS_FILE).is_file():
            state = torch.load(path / LEGACY_WEIGHTS_FILE, map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"missing weights for SparseAutoEncoder in {path}: expected {WEIGHTS_FILE}")
        tied = state.pop(_TIED_DECODER_KEY, None)
        if "encoder.weight" not in state and tied is not None:
            state["encoder.weight"] = tied
        module.load_state_dict(state)
        return module
