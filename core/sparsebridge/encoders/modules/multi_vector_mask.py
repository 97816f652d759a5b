"""``MultiVectorMask``: the scoring mask of sentence-transformers' late-interaction models, so that a
save listing one loads here and gives the outputs sentence-transformers gives.

It rewrites ``features["attention_mask"]``: tokens of a skip list (resolved with the model's
tokenizer) are dropped for the tasks in ``skiplist_tasks`` (documents by default, where no task
counts as a document), query-expansion positions count for queries, and ``keep_only_token_ids``
restricts documents to those ids. In a sparse encoder placed after the pooling it changes nothing
in the embeddings; placed before it, the pooling skips the masked tokens.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from .base import Module, filter_config, read_json

logger = logging.getLogger(__name__)


class MultiVectorMask(Module):
    """Token masking of multi-vector models (sentence-transformers' ``MultiVectorMask``): skip-listed
    words and tasks, or only the token ids kept."""

    config_keys: ClassVar[tuple[str, ...]] = ("skiplist_words", "skiplist_tasks", "keep_only_token_ids")
    st_type: ClassVar[str] = "sentence_transformers.multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask"
    forward_kwargs: ClassVar[tuple[str, ...]] = ("task",)

    def __init__(
        self,
        skiplist_words: list[str] | None = None,
        *,
        skiplist_tasks: str | list[str] | None = None,
        keep_only_token_ids: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.skiplist_words = list(skiplist_words or [])
        tasks = [skiplist_tasks] if isinstance(skiplist_tasks, str) else skiplist_tasks
        self.skiplist_tasks = ["document"] if tasks is None else list(tasks)
        self.keep_only_token_ids = None if keep_only_token_ids is None else list(keep_only_token_ids)
        self._skip_ids: torch.Tensor | None = None  # set by resolve_with_tokenizer

    def on_model_ready(self, model: Any) -> None:
        """Called once the model is assembled: the skip list becomes token ids of its tokenizer."""
        self.resolve_with_tokenizer(model.tokenizer)

    def resolve_with_tokenizer(self, tokenizer: Any) -> None:
        """Turn ``skiplist_words`` into token ids; words that are no single token (they map to the
        unknown token) are dropped with a warning, so real unknown tokens are not skipped."""
        ids, dropped = [], []
        unk_id, unk_token = getattr(tokenizer, "unk_token_id", None), getattr(tokenizer, "unk_token", None)
        for word in self.skiplist_words:
            token_id = tokenizer.convert_tokens_to_ids(word)
            if unk_id is not None and token_id == unk_id and word != unk_token:
                dropped.append(word)
            else:
                ids.append(token_id)
        if dropped:
            logger.warning(
                "MultiVectorMask: skip-list words %s are not single tokens of this tokenizer; ignored", dropped
            )
        self._skip_ids = torch.tensor(ids, dtype=torch.long) if ids else None

    def forward(self, features: dict[str, Any], task: str | None = None) -> dict[str, Any]:
        input_ids = features.get("input_ids")
        if input_ids is None:  # nothing to match the lists against
            return features
        mask = features["attention_mask"].bool()
        expansion = features.get("query_expansion_positions")
        if task == "query" and expansion is not None:
            mask = mask | expansion.bool()
        if (task or "document") in self.skiplist_tasks and self._skip_ids is not None:
            mask = mask & ~torch.isin(input_ids, self._skip_ids.to(input_ids.device))
        if task != "query" and self.keep_only_token_ids:
            keep = torch.as_tensor(self.keep_only_token_ids, dtype=torch.long, device=input_ids.device)
            mask = mask & torch.isin(input_ids, keep)
        features["attention_mask"] = mask
        return features

    @classmethod
    def load(cls, input_path: str | os.PathLike, **kwargs: Any) -> MultiVectorMask:
        path = Path(input_path) / cls.config_file_name
        return cls(**filter_config(cls, read_json(path), path)) if path.is_file() else cls()
