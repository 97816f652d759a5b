"""Hugging Face transformer modules: the masked-LM transformer of SPLADE models, and the plain
feature-extraction transformer of dense models.

The masked-LM module does not hand the [batch, seq_len, vocab] logits to the pooling: it stops
right before the vocabulary projection (the model's output embeddings) and passes the projection's
input and weights instead, so ``SpladePooling`` can project only real tokens, block by block. A
one-off self-check at load time falls back to full logits for architectures that post-process
their logits after that projection.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

from ..peft_adapters import adapter_base_model, save_adapter
from .base import Module, read_json, write_json

logger = logging.getLogger(__name__)

ST_CONFIG_FILE = "sentence_bert_config.json"
TASKS = ("fill-mask", "feature-extraction")


class _CaptureInput(nn.Module):
    """Stands in for the vocabulary projection during a forward pass and keeps its input."""

    def __init__(self) -> None:
        super().__init__()
        self.captured: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.captured = hidden
        return hidden


class Transformer(Module):
    """A Hugging Face model plus its tokenizer.

    ``transformer_task="fill-mask"`` loads ``AutoModelForMaskedLM`` (SPLADE document/query
    encoders); ``"feature-extraction"`` loads ``AutoModel`` (dense sentence embeddings).
    """

    config_keys: ClassVar[tuple[str, ...]] = ("max_seq_length", "do_lower_case", "transformer_task")
    config_file_name: ClassVar[str] = ST_CONFIG_FILE
    st_type: ClassVar[str] = "sentence_transformers.base.modules.transformer.Transformer"
    save_in_root: ClassVar[bool] = True

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        max_seq_length: int | None = None,
        model_args: dict[str, Any] | None = None,
        tokenizer_args: dict[str, Any] | None = None,
        config_args: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        do_lower_case: bool = False,
        tokenizer_name_or_path: str | None = None,
        transformer_task: str = "feature-extraction",
    ) -> None:
        super().__init__()
        if transformer_task not in TASKS:
            raise ValueError(f"transformer_task must be one of {TASKS}, got {transformer_task!r}")
        self.transformer_task = transformer_task
        self.do_lower_case = do_lower_case
        model_args = dict(model_args or {})
        tokenizer_args = dict(tokenizer_args or {})
        config_args = dict(config_args or {})
        name = str(model_name_or_path)

        # an adapter-only folder (PEFT layout) takes its config from the base model; transformers loads the adapter
        config = AutoConfig.from_pretrained(adapter_base_model(name) or name, cache_dir=cache_dir, **config_args)
        auto_cls = AutoModelForMaskedLM if transformer_task == "fill-mask" else AutoModel
        self.auto_model = auto_cls.from_pretrained(name, config=config, cache_dir=cache_dir, **model_args)
        self.auto_model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_name_or_path or name, cache_dir=cache_dir, **tokenizer_args
        )
        if max_seq_length is None:
            limits = [
                getattr(self.auto_model.config, "max_position_embeddings", None),
                getattr(self.tokenizer, "model_max_length", None),
            ]
            # Tokenizers without a limit report a huge sentinel value; ignore it.
            limits = [x for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
            max_seq_length = min(limits) if limits else None
        self.max_seq_length = max_seq_length
        self._projection_path: tuple[str, str] | None = None
        if transformer_task == "fill-mask":
            self._projection_path = self._locate_projection()
            if self._projection_path is not None and not self._projection_matches_logits():
                logger.info("%s post-processes its logits; using full logits", type(self.auto_model).__name__)
                self._projection_path = None

    # -- tokenization ---------------------------------------------------------------------
    def tokenize(self, texts: list[str], padding: bool | str = True, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        return self.tokenizer(
            texts,
            padding=padding,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_tensors="pt",
        )

    # -- forward --------------------------------------------------------------------------
    @property
    def projects_lazily(self) -> bool:
        """True when forward() hands pooling the pre-projection states instead of logits."""
        return self._projection_path is not None

    def _model_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return {k: features[k] for k in keys if k in features}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        inputs = self._model_inputs(features)
        if self.transformer_task == "feature-extraction":
            out = self.auto_model(**inputs, return_dict=True)
            features["token_embeddings"] = out.last_hidden_state
            return features
        if self._projection_path is None:
            features["token_embeddings"] = self.auto_model(**inputs, return_dict=True).logits
            return features
        with self._projection_captured() as (capture, projection):
            self.auto_model(**inputs, return_dict=True)
        features["token_hidden"] = capture.captured
        features["vocab_projection"] = projection
        return features

    def _locate_projection(self) -> tuple[str, str] | None:
        projection = self.auto_model.get_output_embeddings()
        if not isinstance(projection, nn.Linear):
            return None
        for name, module in self.auto_model.named_modules():
            if module is projection and name:
                parent, _, attr = name.rpartition(".")
                return parent, attr
        return None

    @contextmanager
    def _projection_captured(self):
        parent_name, attr = self._projection_path  # type: ignore[misc]
        parent = self.auto_model.get_submodule(parent_name) if parent_name else self.auto_model
        projection = getattr(parent, attr)
        capture = _CaptureInput()
        # Swapping the submodule for one forward pass skips the [batch, seq, vocab] matmul entirely.
        parent._modules[attr] = capture
        try:
            yield capture, projection
        finally:
            parent._modules[attr] = projection

    @torch.no_grad()
    def _projection_matches_logits(self) -> bool:
        probe = self.tokenize(["sparse retrieval check", "a"])
        inputs = self._model_inputs(probe)
        device = next(self.auto_model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        logits = self.auto_model(**inputs, return_dict=True).logits
        with self._projection_captured() as (capture, projection):
            self.auto_model(**inputs, return_dict=True)
        if capture.captured is None or capture.captured.shape[:-1] != logits.shape[:-1]:
            return False
        return torch.allclose(projection(capture.captured), logits, atol=1e-4, rtol=1e-4)

    # -- properties -----------------------------------------------------------------------
    def get_word_embedding_dimension(self) -> int:
        if self.transformer_task == "fill-mask":
            return int(self.auto_model.config.vocab_size)
        return int(self.auto_model.config.hidden_size)

    # -- persistence ----------------------------------------------------------------------
    def save(self, output_path: str | os.PathLike, safe_serialization: bool = True) -> None:
        path = Path(output_path)
        path.mkdir(parents=True, exist_ok=True)
        if not save_adapter(self.auto_model, path, safe_serialization):  # with adapters: the PEFT layout
            self.auto_model.save_pretrained(path, safe_serialization=safe_serialization)
        self.tokenizer.save_pretrained(path)
        config = self.get_config_dict()
        if self.transformer_task == "fill-mask":
            # What sentence-transformers >= 5.4 writes for a masked-LM transformer.
            config["modality_config"] = {"text": {"method": "forward", "method_output_name": "logits"}}
            config["module_output_name"] = "token_embeddings"
        write_json(path / ST_CONFIG_FILE, config)

    @classmethod
    def load(
        cls,
        input_path: str | os.PathLike,
        transformer_task: str | None = None,
        model_args: dict[str, Any] | None = None,
        tokenizer_args: dict[str, Any] | None = None,
        config_args: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        **_: Any,
    ) -> Transformer:
        path = Path(input_path)
        config: dict[str, Any] = {}
        for name in (ST_CONFIG_FILE, "sentence_roberta_config.json", "sentence_distilbert_config.json"):
            if (path / name).is_file():
                config = read_json(path / name)
                break
        if not isinstance(config, dict):
            raise ValueError(f"{path / ST_CONFIG_FILE}: expected a JSON object")
        task = transformer_task or config.get("transformer_task") or "feature-extraction"
        # Older sentence-transformers versions nest tokenizer/model args in the module config.
        tokenizer_args = {**config.get("tokenizer_args", {}), **(tokenizer_args or {})}
        model_args = {**config.get("model_args", {}), **(model_args or {})}
        config_args = {**config.get("config_args", {}), **(config_args or {})}
        return cls(
            path,
            max_seq_length=config.get("max_seq_length"),
            do_lower_case=bool(config.get("do_lower_case", False)),
            model_args=model_args,
            tokenizer_args=tokenizer_args,
            config_args=config_args,
            cache_dir=cache_dir,
            transformer_task=task,
        )


class MLMTransformer(Transformer):
    """The masked-LM transformer of SPLADE models (``Transformer`` with ``fill-mask``)."""

    def __init__(self, model_name_or_path: str | os.PathLike, **kwargs: Any) -> None:
        kwargs["transformer_task"] = "fill-mask"
        super().__init__(model_name_or_path, **kwargs)

    @classmethod
    def load(cls, input_path: str | os.PathLike, **kwargs: Any) -> Transformer:
        kwargs["transformer_task"] = "fill-mask"
        return super().load(input_path, **kwargs)
