"""Hugging Face transformer modules: the masked-LM transformer of SPLADE models, and the plain
feature-extraction transformer of dense models.

The masked-LM module does not hand the [batch, seq_len, vocab] logits to the pooling: it stops
right before the vocabulary projection (the model's output embeddings) and passes the projection's
input and weights instead, so ``SpladePooling`` can project only real tokens, block by block. A
one-off self-check at load time falls back to full logits for architectures that post-process
their logits after that projection.

Precision (``precision=`` or sentence-transformers' ``model_kwargs={"dtype": torch.bfloat16}``) is
resolved here: bf16 loads bf16 weights, int8 quantizes the Linear layers of the encoder
dynamically (the vocabulary projection runs in bf16 where the CPU has bf16 matmuls, else fp32,
see ``projection_dtype``); both fall back to fp32, with a warning, on a
CPU without the instructions that make them fast (see ``sparsebridge.precision``).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

from ...errors import ModelLoadError
from ..runtime.converting_load import load_converted
from ..runtime.peft_adapters import adapter_base_model, save_adapter
from ..runtime.precision import (
    effective_precision,
    precision_from_kwargs,
    projection_dtype,
    quantize_int8,
    torch_dtype,
)
from .base import Module, read_json, write_json
from .token_chunks import in_token_chunks, token_budget

logger = logging.getLogger(__name__)

ST_CONFIG_FILE = "sentence_bert_config.json"
TASKS = ("fill-mask", "feature-extraction")
# transformers renamed from_pretrained's torch_dtype to dtype in 4.56.
_DTYPE_KEY = "dtype" if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56) else "torch_dtype"
# model_kwargs for the ONNX / OpenVINO backends (as sentence-transformers names them), not for transformers.
_BACKEND_KWARGS = ("file_name", "subfolder", "export", "provider", "ov_config", "session_options")
# How closely projecting the captured states must reproduce the model's own logits, per dtype.
# Relative error allowed between projecting a cut graph's output and the full graph's logits.
CUT_CHECK_TOL = 0.15
_SELF_CHECK_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-3}


class _CaptureInput(nn.Module):
    """Stands in for the vocabulary projection during a forward pass and keeps its input."""

    def __init__(self) -> None:
        super().__init__()
        self.captured: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.captured = hidden
        return hidden


def _projection_copy(projection: nn.Linear, dtype: torch.dtype) -> nn.Linear:
    """A frozen copy of the vocabulary projection in ``dtype`` (its weight is often tied to the input
    embeddings, which keep their own precision)."""
    copy = nn.Linear(projection.in_features, projection.out_features, bias=projection.bias is not None, dtype=dtype)
    copy.load_state_dict(projection.state_dict())
    return copy.requires_grad_(False)


class Transformer(Module):
    """A Hugging Face model plus its tokenizer.

    ``transformer_task="fill-mask"`` loads ``AutoModelForMaskedLM`` (SPLADE document/query
    encoders); ``"feature-extraction"`` loads ``AutoModel`` (dense sentence embeddings).
    """

    config_keys: ClassVar[tuple[str, ...]] = (
        "max_seq_length",
        "do_lower_case",
        "transformer_task",
        "query_length",
        "document_length",
    )
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
        precision: str | None = None,
        backend: str = "torch",
        query_length: int | None = None,
        document_length: int | None = None,
    ) -> None:
        super().__init__()
        if transformer_task not in TASKS:
            raise ValueError(f"transformer_task must be one of {TASKS}, got {transformer_task!r}")
        self.transformer_task = transformer_task
        self.do_lower_case = do_lower_case
        # Per-side token caps (sentence-transformers' names): applied when encode_query /
        # encode_document (task="query" / "document") tokenize; None keeps max_seq_length.
        self.query_length = query_length
        self.document_length = document_length
        model_args = dict(model_args or {})
        tokenizer_args = dict(tokenizer_args or {})
        config_args = dict(config_args or {})
        name = str(model_name_or_path)
        self.backend = model_args.pop("backend", backend)
        backend_options = {k: model_args.pop(k) for k in _BACKEND_KWARGS if k in model_args}
        asked = precision_from_kwargs(model_args, precision)
        self.precision = effective_precision(asked, "cuda" if torch.cuda.is_available() else "cpu")
        # ONNX / OpenVINO export from (and project with) the fp32 torch model.
        model_args[_DTYPE_KEY] = torch_dtype(self.precision if self.backend == "torch" else "fp32")

        # an adapter-only folder (PEFT layout) takes its config from the base model; transformers loads the adapter
        config = AutoConfig.from_pretrained(adapter_base_model(name) or name, cache_dir=cache_dir, **config_args)
        auto_cls = AutoModelForMaskedLM if transformer_task == "fill-mask" else AutoModel
        # Converting the weights' dtype (fp32 file, bf16 asked) reads them tensor by tensor instead.
        self.model = load_converted(auto_cls, name, config, model_args) or auto_cls.from_pretrained(
            name, config=config, cache_dir=cache_dir, **model_args
        )
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_name_or_path or name, cache_dir=cache_dir, **tokenizer_args
        )
        if max_seq_length is None:
            limits = [
                getattr(self.model.config, "max_position_embeddings", None),
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
                logger.info("%s post-processes its logits; using full logits", type(self.model).__name__)
                self._projection_path = None
        self._token_budget = token_budget(getattr(self.model.config, "hidden_size", None))
        self._runner = None
        # The projection SpladePooling applies when it is not the model's own (a backend's cut graph,
        # or an int8 encoder projecting in bf16); None: the model's own.
        self._pooling_projection: nn.Linear | None = None
        if self.backend != "torch":
            self._start_runner(Path(name), backend_options)
        elif self.precision == "int8":
            keep = self.model.get_output_embeddings() if self._projection_path else None
            self.model = quantize_int8(self.model, skip=keep)
            if keep is not None and projection_dtype("int8") != keep.weight.dtype:
                self._pooling_projection = _projection_copy(keep, projection_dtype("int8"))

    def get_config_dict(self) -> dict[str, Any]:
        """The saved settings; the per-side caps only when set (sentence-transformers omits them too)."""
        config = super().get_config_dict()
        for key in ("query_length", "document_length"):
            if config.get(key) is None:
                config.pop(key, None)
        return config

    @property
    def auto_model(self) -> transformers.PreTrainedModel:
        """The Hugging Face model: the older (5.x) name of ``model``, kept so both spellings work."""
        return self.model

    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module.__setattr__ registers modules itself (a property setter is never reached): assigning
        # the 5.x name must replace `model`, not add a second submodule beside it.
        super().__setattr__("model" if name == "auto_model" else name, value)

    def _start_runner(self, folder: Path, options: dict[str, Any]) -> None:
        """Run the transformer with ONNX Runtime / OpenVINO; we keep the projection and pooling."""
        from ..backends import load_runner

        if self.transformer_task != "fill-mask":
            raise ModelLoadError(f"backend {self.backend!r} runs masked-LM (sparse) models only; use 'torch'")
        names = list(self.tokenizer.model_input_names)
        self._runner = load_runner(self.backend, folder, options, self.model, names, self.precision)
        projection = self.model.get_output_embeddings()
        if self._runner.cut and isinstance(projection, nn.Linear):
            self._pooling_projection = _projection_copy(projection, projection_dtype(self.precision))
            if not self._runner_cut_matches(projection):
                logger.warning(
                    "%s: cutting the graph before the projection changed the logits; using full logits",
                    self._runner.path,
                )
                self._runner.drop_cut()
        elif self._runner.cut:
            self._runner.drop_cut()
        self._runner.release_full_graph()

    @torch.no_grad()
    def _runner_cut_matches(self, projection: nn.Linear) -> bool:
        probe = self._model_inputs(self.tokenize(["sparse retrieval check", "a"]))
        hidden, _ = self._runner(probe)
        logits = self._runner.full_logits(probe)
        if hidden.shape[:-1] != logits.shape[:-1] or hidden.shape[-1] != projection.in_features:
            return False
        # Loose on purpose: a quantized file projects int8 activations with int8 weights, we project the
        # fp32 activations with fp32 weights (0.4% apart with dynamic int8 on the packaged model, 6.9%
        # with nncf's static int8); a wrong cut is far off (88% when SmoothQuant's scaling is kept).
        error = float((projection(hidden.float()) - logits).norm() / logits.norm())
        logger.debug("%s: projection of the cut graph vs its logits: relative error %.4f", self._runner.path, error)
        return error <= CUT_CHECK_TOL

    # -- tokenization ---------------------------------------------------------------------
    def tokenize(
        self,
        texts: list[str] | list[tuple[str, str]],
        padding: bool | str = True,
        processing_kwargs: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Token ids and masks of texts, or of text pairs (one ``(a, b)`` tuple each).

        ``processing_kwargs`` overrides the tokenizer arguments for this call, as in
        sentence-transformers: ``{"text": {"max_length": 64, ...}, "common": {...}}``.
        """
        if self.do_lower_case:
            texts = [tuple(x.lower() for x in t) if isinstance(t, tuple) else t.lower() for t in texts]
        call: dict[str, Any] = {"padding": padding, "truncation": "longest_first", "max_length": self.max_seq_length}
        # An explicit max_length wins over the side's cap; processing_kwargs win over both (as in
        # sentence-transformers).
        limit = kwargs.get("max_length")
        if limit is None:
            limit = {"query": self.query_length, "document": self.document_length}.get(kwargs.get("task"))
        if limit is not None:
            call["max_length"] = limit
        for key in ("common", "text"):
            call.update((processing_kwargs or {}).get(key) or {})
        call["return_tensors"] = "pt"
        if texts and isinstance(texts[0], tuple):
            return self.tokenizer([t[0] for t in texts], [t[1] for t in texts], **call)
        return self.tokenizer(texts, **call)

    def preprocess(self, inputs: list[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """``tokenize`` with the prompt before each text, plus ``modality`` (and ``prompt_length``)."""
        if prompt:
            inputs = [(prompt + t[0], t[1]) if isinstance(t, tuple) else prompt + t for t in inputs]
        sides = {k: kwargs[k] for k in ("task", "max_length") if kwargs.get(k) is not None}
        features = dict(self.tokenize(inputs, processing_kwargs=kwargs.get("processing_kwargs"), **sides))
        features["modality"] = "text"
        if prompt:
            ids = self.tokenize([prompt])["input_ids"][0]
            special = set(getattr(self.tokenizer, "all_special_ids", ()))
            features["prompt_length"] = int(ids.shape[-1]) - int(bool(len(ids)) and int(ids[-1]) in special)
        return features

    @property
    def processor(self):
        """The processor of a text model: its tokenizer."""
        return self.tokenizer

    # -- forward --------------------------------------------------------------------------
    @property
    def projects_lazily(self) -> bool:
        """True when forward() hands pooling the pre-projection states instead of logits."""
        return self._projection_path is not None

    def _model_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return {k: features[k] for k in keys if k in features}

    # No **kwargs: a keyword meant for another module is an error here, as in sentence-transformers.
    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        inputs = self._model_inputs(features)
        if self._runner is not None:
            if self._runner.cut:
                run = self._runner
                features["token_hidden"] = in_token_chunks(inputs, lambda part: run(part)[0], self._token_budget)
                features["vocab_projection"] = self._pooling_projection
            else:
                features["token_embeddings"] = self._runner(inputs)[0]
            return features
        if self.transformer_task == "feature-extraction":
            out = self.model(**inputs, return_dict=True)
            features["token_embeddings"] = out.last_hidden_state
            return features
        if self._projection_path is None or self._projection_is_dispatched():
            features["token_embeddings"] = self.model(**inputs, return_dict=True).logits
            return features
        features["token_hidden"] = in_token_chunks(inputs, self._states_before_projection, self._token_budget)
        features["vocab_projection"] = self._pooling_projection or self.model.get_output_embeddings()
        return features

    def _states_before_projection(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The vocabulary projection's input for these tokens (the model runs without the projection)."""
        with self._projection_captured() as (capture, _):
            self.model(**inputs, return_dict=True)
        return capture.captured

    def _projection_is_dispatched(self) -> bool:
        """Whether Accelerate places the vocabulary projection (a hook on it, or its weights offloaded
        to ``meta``): then only its own forward brings the weights in, so pooling cannot apply it."""
        projection = self.model.get_output_embeddings()
        return "_hf_hook" in projection.__dict__ or any(p.device.type == "meta" for p in projection.parameters())

    def _locate_projection(self) -> tuple[str, str] | None:
        projection = self.model.get_output_embeddings()
        if not isinstance(projection, nn.Linear):
            return None
        for name, module in self.model.named_modules():
            if module is projection and name:
                parent, _, attr = name.rpartition(".")
                return parent, attr
        return None

    @contextmanager
    def _projection_captured(self):
        parent_name, attr = self._projection_path  # type: ignore[misc]
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
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
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        logits = self.model(**inputs, return_dict=True).logits
        with self._projection_captured() as (capture, projection):
            self.model(**inputs, return_dict=True)
        if capture.captured is None or capture.captured.shape[:-1] != logits.shape[:-1]:
            return False
        tol = _SELF_CHECK_TOL.get(logits.dtype, 1e-4)
        return torch.allclose(projection(capture.captured), logits, atol=tol, rtol=tol)

    # -- properties -----------------------------------------------------------------------
    def get_word_embedding_dimension(self) -> int:
        if self.transformer_task == "fill-mask":
            return int(self.model.config.vocab_size)
        return int(self.model.config.hidden_size)

    # -- persistence ----------------------------------------------------------------------
    def save(self, output_path: str | os.PathLike, safe_serialization: bool = True) -> None:
        path = Path(output_path)
        path.mkdir(parents=True, exist_ok=True)
        if not save_adapter(self.model, path, safe_serialization):  # with adapters: the PEFT layout
            self.model.save_pretrained(path, safe_serialization=safe_serialization)
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
        precision: str | None = None,
        backend: str = "torch",
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
            query_length=config.get("query_length"),
            document_length=config.get("document_length"),
            model_args=model_args,
            tokenizer_args=tokenizer_args,
            config_args=config_args,
            cache_dir=cache_dir,
            transformer_task=task,
            precision=precision,
            backend=backend,
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
