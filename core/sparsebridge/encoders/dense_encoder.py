"""``DenseEncoder``: text -> dense sentence embeddings (sentence-transformers models such as
all-MiniLM-L6-v2), the dense half of hybrid search.

Same loading, prompts, batching, multi-process pools and on-disk layout as ``SparseEncoder`` (both
build on ``BaseEncoder``); the output is a numpy array by default, as in sentence-transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base_encoder import BaseEncoder, encode_for_task, renamed_kwargs
from .layout import DOCUMENT_PROMPT_NAMES, QUERY_PROMPT_NAMES
from .modules.base import Module
from .modules.pooling import Pooling
from .modules.transformer import Transformer
from .similarity import SimilarityFunction


def _mean_pooling_model(path: Path, hf_kwargs: dict[str, Any]) -> list[Module]:
    """A bare Hugging Face checkpoint becomes transformer + mean pooling, as in sentence-transformers."""
    transformer = Transformer(path, transformer_task="feature-extraction", **hf_kwargs)
    return [transformer, Pooling(transformer.get_word_embedding_dimension(), "mean")]


class DenseEncoder(BaseEncoder):
    """A dense sentence encoder: feature-extraction ``Transformer`` + ``Pooling`` (+ ``Dense``,
    ``Normalize``), loaded from a model folder or Hub id, or assembled from ``modules``.

    Takes the same constructor arguments as ``SparseEncoder`` (less ``max_active_dims``).
    Similarity defaults to cosine.
    """

    model_type = "SentenceTransformer"
    default_similarity = SimilarityFunction.COSINE
    _bare_checkpoint_modules = staticmethod(_mean_pooling_model)

    @renamed_kwargs(sentences="inputs")
    def encode(
        self,
        inputs: str | tuple[str, str] | Sequence[str | tuple[str, str]],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str = "sentence_embedding",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | list[str] | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        pool: dict[str, Any] | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
        """Encode texts into dense embeddings.

        A list gives a [n, dim] float32 numpy array (``convert_to_tensor=True``: a tensor;
        ``convert_to_numpy=False``: a list of 1-D tensors); a single string gives one row.
        ``normalize_embeddings`` scales rows to unit length (after ``truncate_dim``).
        """
        if output_value != "sentence_embedding":
            raise ValueError(f"output_value {output_value!r} is not supported; use 'sentence_embedding'")
        call = self._start_encode(
            inputs, kwargs, prompt, prompt_name, batch_size, show_progress_bar, device, pool, chunk_size
        )
        if call.in_pool:
            return self._encode_in_pool(
                call,
                kwargs,
                convert_to_numpy=convert_to_numpy,
                convert_to_tensor=convert_to_tensor,
                normalize_embeddings=normalize_embeddings,
                truncate_dim=truncate_dim,
            )
        to_cpu = convert_to_numpy and not convert_to_tensor

        def finish(out: torch.Tensor) -> torch.Tensor:
            out = out.detach()
            if truncate_dim is not None:
                out = out[..., :truncate_dim]
            if normalize_embeddings:
                out = F.normalize(out, p=2, dim=-1)
            return out.cpu() if to_cpu else out

        order, batches = self._embed_batches(
            call.texts, call.resolved_prompt, batch_size, show_progress_bar, finish, kwargs
        )
        if batches:
            stacked = torch.cat(batches).clone()
            result = torch.empty_like(stacked)
            result[torch.from_numpy(np.asarray(order, dtype=np.int64)).to(stacked.device)] = stacked
        else:
            dim = self.get_embedding_dimension() or 0
            result = torch.zeros(0, truncate_dim or dim, device="cpu" if to_cpu else self.device)
        if convert_to_tensor:
            out: Any = result
        elif convert_to_numpy:
            out = result.float().numpy() if result.dtype in (torch.bfloat16, torch.float16) else result.numpy()
        else:
            out = list(result.unbind(0))
        return out[0] if call.single else out

    encode_query = encode_for_task(
        encode,
        "query",
        QUERY_PROMPT_NAMES,
        "encode_query",
        """``encode`` for queries: the ``query`` prompt unless another is given, and ``task="query"``.""",
    )
    encode_document = encode_for_task(
        encode,
        "document",
        DOCUMENT_PROMPT_NAMES,
        "encode_document",
        """``encode`` for documents: the ``document``/``passage``/``corpus`` prompt unless another is
        given, and ``task="document"``.""",
    )
