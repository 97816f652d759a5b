"""What ``SparseEncoder`` and ``DenseEncoder`` share: loading (model folder or Hub id), prompts,
device placement, batching in length order, multi-process pools, similarity, and writing the
sentence-transformers layout."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import transformers
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .hub import HubMixin
from .loading import MODULES_FILE, ST_MODEL_CONFIG, load_modules, resolve_model_path
from .modules.base import Module, write_json
from .modules.transformer import Transformer
from .peft_adapters import PeftAdapterMixin
from .similarity import SimilarityFunction

logger = logging.getLogger(__name__)

QUERY_PROMPT_NAMES = ("query",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


def _default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _check_texts(sentences: Any) -> tuple[list[str], bool]:
    """The inputs as a list of strings, and whether a single string was given."""
    if isinstance(sentences, str):
        _check_encodable(sentences, "sentences")
        return [sentences], True
    if sentences is None:
        raise TypeError("sentences must be a string or a list of strings, got None")
    if not isinstance(sentences, Iterable) or isinstance(sentences, (bytes, dict)):
        raise TypeError(f"sentences must be a string or a list of strings, got {type(sentences).__name__}")
    texts = list(sentences)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"sentences[{i}] is {type(text).__name__}, expected str")
        _check_encodable(text, f"sentences[{i}]")
    return texts, False


def _check_encodable(text: str, where: str) -> None:
    # Lone surrogates are legal in a Python str but not in UTF-8; tokenizers fail on them obscurely.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where} contains a lone surrogate {text[exc.start]!r} at position {exc.start}, which is not valid "
            f"Unicode text; decode your input with errors='replace' or remove it"
        ) from None


class BaseEncoder(PeftAdapterMixin, HubMixin, nn.Sequential):
    """A sequence of modules loaded from a model folder or Hub id, or assembled from ``modules``."""

    model_type: ClassVar[str] = ""
    default_similarity: ClassVar[SimilarityFunction] = SimilarityFunction.DOT_PRODUCT

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        modules: Sequence[nn.Module] | OrderedDict[str, nn.Module] | None = None,
        device: str | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: str | SimilarityFunction | None = None,
        cache_folder: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        local_files_only: bool = False,
        token: bool | str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        backend: str = "torch",
    ) -> None:
        if backend != "torch":
            raise ValueError(f"backend {backend!r} is not supported; sparsebridge runs models with 'torch'")
        model_config: dict[str, Any] = {}
        if model_name_or_path is not None:
            if modules is not None:
                raise ValueError("pass either model_name_or_path or modules, not both")
            path = resolve_model_path(model_name_or_path, cache_folder, revision, token, local_files_only)
            module_list, model_config = load_modules(
                path,
                trust_remote_code=trust_remote_code,
                model_kwargs=model_kwargs,
                tokenizer_kwargs=tokenizer_kwargs,
                config_kwargs=config_kwargs,
                cache_folder=cache_folder,
                bare_checkpoint=self._bare_checkpoint_modules,
            )
            modules = OrderedDict((str(i), m) for i, m in enumerate(module_list))
        elif modules is not None and not isinstance(modules, OrderedDict):
            modules = OrderedDict((str(i), m) for i, m in enumerate(modules))
        super().__init__(modules or OrderedDict())
        self.model_name_or_path = None if model_name_or_path is None else str(model_name_or_path)

        self.prompts: dict[str, str] = {"query": "", "document": ""}
        self.prompts.update(model_config.get("prompts") or {})
        self.prompts.update(prompts or {})
        self.default_prompt_name = default_prompt_name or model_config.get("default_prompt_name")
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(
                f"default prompt name {self.default_prompt_name!r} is not among the prompts: {sorted(self.prompts)}"
            )
        self._similarity_fn_name: str | None = None
        self.similarity_fn_name = similarity_fn_name or model_config.get("similarity_fn_name")
        self._prompt_lengths: dict[str, int] = {}
        self.to(device or _default_device())

    # Subclasses say how a bare Hugging Face checkpoint (no modules.json) becomes modules.
    _bare_checkpoint_modules: ClassVar[Callable[..., list[Module]] | None] = None

    # -- properties ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def similarity_fn_name(self) -> str:
        """The similarity function name; the class default unless set otherwise."""
        return self._similarity_fn_name or self.default_similarity.value

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str | SimilarityFunction | None) -> None:
        if value is None:
            self._similarity_fn_name = None
            return
        try:
            self._similarity_fn_name = SimilarityFunction(value).value
        except ValueError:
            raise ValueError(
                f"unknown similarity function {value!r}; choose one of {SimilarityFunction.possible_values()}"
            ) from None

    def _first(self, cls: type) -> Any:
        for module in self.modules():
            if isinstance(module, cls):
                return module
        return None

    def _input_module(self) -> Module:
        if not len(self):
            raise ValueError(f"this {type(self).__name__} has no modules")
        return self[0]

    @property
    def tokenizer(self):
        module = self._input_module()
        tokenizer = getattr(module, "tokenizer", None)
        if tokenizer is None:
            transformer = self._first(Transformer)
            tokenizer = getattr(transformer, "tokenizer", None)
        return tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._input_module().tokenizer = value

    @property
    def max_seq_length(self) -> int | None:
        return getattr(self._input_module(), "max_seq_length", None)

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self._input_module().max_seq_length = value

    def get_max_seq_length(self) -> int | None:
        return self.max_seq_length

    @property
    def transformers_model(self) -> transformers.PreTrainedModel | None:
        transformer = self._first(Transformer)
        return None if transformer is None else transformer.auto_model

    def get_sentence_embedding_dimension(self) -> int | None:
        for module in reversed(list(self._modules.values())):
            for attr in ("get_sentence_embedding_dimension", "get_word_embedding_dimension"):
                if hasattr(module, attr):
                    dim = getattr(module, attr)()
                    if dim:
                        return int(dim)
            dim = getattr(module, "embedding_dimension", None)
            if dim:
                return int(dim)
        return None

    def get_model_kwargs(self) -> list[str]:
        """Keyword arguments that ``forward`` passes on to the modules (e.g. ``task`` for routers)."""
        names: set[str] = set()
        for module in self.modules():  # routers' routes included
            if isinstance(module, Module):
                names.update(getattr(module, "forward_kwargs", ()))
        return sorted(names)

    # -- forward ---------------------------------------------------------------------------
    def tokenize(self, texts: list[str], **kwargs: Any) -> dict[str, Any]:
        return self._input_module().tokenize(texts, **kwargs)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for module in self._modules.values():
            features = module(features, **kwargs)
        return features

    # -- encoding --------------------------------------------------------------------------
    def _resolve_prompt(self, prompt_name: str | None, prompt: str | None) -> str | None:
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return None
        if name not in self.prompts:
            raise ValueError(f"unknown prompt name {name!r}; known prompt names: {sorted(self.prompts)}")
        return self.prompts[name]

    def _prompt_length(self, prompt: str, tokenize_kwargs: dict[str, Any]) -> int:
        """Tokens of the prompt at the start of each text (a trailing special token excluded)."""
        if prompt not in self._prompt_lengths:
            ids = self.tokenize([prompt], **tokenize_kwargs)["input_ids"][0]
            length = int(ids.shape[-1])
            tokenizer = self.tokenizer
            if length and tokenizer is not None and int(ids[-1]) in set(getattr(tokenizer, "all_special_ids", ())):
                length -= 1
            self._prompt_lengths[prompt] = length
        return self._prompt_lengths[prompt]

    def _embed_batches(
        self,
        texts: list[str],
        prompt: str | None,
        batch_size: int,
        show_progress_bar: bool | None,
        finish: Callable[[torch.Tensor], torch.Tensor],
        forward_kwargs: dict[str, Any],
    ) -> tuple[np.ndarray, list[torch.Tensor]]:
        """Sentence embeddings batch by batch, longest texts first; returns the order and batches.

        Row k of the concatenated batches belongs to input ``order[k]``. ``finish`` post-processes
        each batch (top-k, sparse conversion, moving to CPU...).
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        tokenize_kwargs = {k: v for k, v in forward_kwargs.items() if k == "task"}
        prompt_length = None
        if prompt:
            texts = [prompt + t for t in texts]
            if any(getattr(m, "include_prompt", True) is False for m in self.modules()):
                prompt_length = self._prompt_length(prompt, tokenize_kwargs)
        # Longest first: batches of similar length waste little padding, and the first batch
        # shows the peak memory right away.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches: list[torch.Tensor] = []
        self.eval()
        device = self.device
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="Batches") if show_progress_bar else starts:
            batch = [texts[i] for i in order[start : start + batch_size]]
            features = self.tokenize(batch, **tokenize_kwargs)
            features = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
            if prompt_length:
                features["prompt_length"] = prompt_length
            with torch.inference_mode():
                out = self.forward(features, **forward_kwargs)["sentence_embedding"]
            batches.append(finish(out))
        return order, batches

    def _encode_in_pool(self, texts: list[str], single: bool, **kwargs: Any) -> Any:
        from .multiprocess import encode_multi_process

        return encode_multi_process(self, texts, single=single, **kwargs)

    def encode_query(self, sentences: str | Sequence[str], prompt_name: str | None = None, **kwargs: Any):
        """Encode queries: the ``query`` prompt (if the model has one) and the ``query`` route."""
        if prompt_name is None and kwargs.get("prompt") is None:
            prompt_name = next((n for n in QUERY_PROMPT_NAMES if n in self.prompts), None)
        kwargs.setdefault("task", "query")
        return self.encode(sentences, prompt_name=prompt_name, **kwargs)

    def encode_document(self, sentences: str | Sequence[str], prompt_name: str | None = None, **kwargs: Any):
        """Encode documents: the ``document`` prompt (if the model has one) and the ``document`` route."""
        if prompt_name is None and kwargs.get("prompt") is None:
            prompt_name = next((n for n in DOCUMENT_PROMPT_NAMES if n in self.prompts), None)
        kwargs.setdefault("task", "document")
        return self.encode(sentences, prompt_name=prompt_name, **kwargs)

    def encode(self, sentences: str | Sequence[str], **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- multi-process pools ------------------------------------------------------------------
    def start_multi_process_pool(self, target_devices: list[str] | None = None) -> dict[str, Any]:
        """Worker processes (torch spawn context), one per target device, e.g. ``["cpu", "cpu"]``."""
        from .multiprocess import start_pool

        return start_pool(self, target_devices)

    @staticmethod
    def stop_multi_process_pool(pool: dict[str, Any]) -> None:
        from .multiprocess import stop_pool

        stop_pool(pool)

    # -- similarity ------------------------------------------------------------------------------
    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        return SimilarityFunction.to_similarity_fn(self.similarity_fn_name)(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1, embeddings2) -> torch.Tensor:
        return SimilarityFunction.to_similarity_pairwise_fn(self.similarity_fn_name)(embeddings1, embeddings2)

    def evaluate(self, evaluator: Callable[..., Any], output_path: str | None = None) -> dict[str, float] | float:
        """Run an evaluator (e.g. ``sparsebridge.evaluation.SparseInformationRetrievalEvaluator``) on this model."""
        if output_path is not None:
            os.makedirs(output_path, exist_ok=True)
        return evaluator(self, output_path)

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(
        self,
        path: str | os.PathLike,
        model_name: str | None = None,
        create_model_card: bool = True,
        train_datasets: list[str] | None = None,
        safe_serialization: bool = True,
        **_: Any,
    ) -> None:
        """Write the sentence-transformers layout: modules.json, config, one folder per module."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        entries = []
        for idx, (name, module) in enumerate(self._modules.items()):
            if not isinstance(module, Module) or not module.st_type:
                raise TypeError(f"module {idx} ({type(module).__name__}) cannot be saved: not a sparsebridge Module")
            rel = "" if idx == 0 and module.save_in_root else f"{idx}_{type(module).__name__}"
            module.save(root / rel, safe_serialization=safe_serialization)
            entries.append({"idx": idx, "name": name, "path": rel, "type": module.st_type})
        write_json(root / MODULES_FILE, entries)
        write_json(
            root / ST_MODEL_CONFIG,
            {
                "__version__": {
                    "sparsebridge": __version__,
                    "transformers": transformers.__version__,
                    "pytorch": torch.__version__,
                },
                "model_type": self.model_type,
                "prompts": self.prompts,
                "default_prompt_name": self.default_prompt_name,
                "similarity_fn_name": self._similarity_fn_name,
            },
        )
        if create_model_card:
            from .model_card import write_model_card

            write_model_card(self, root, model_name=model_name, train_datasets=train_datasets)

    save = save_pretrained
