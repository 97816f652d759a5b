"""What ``SparseEncoder`` and ``DenseEncoder`` share: loading (model folder or Hub id), prompts,
device placement, batching in length order, multi-process pools, similarity, and writing the
sentence-transformers layout."""

from __future__ import annotations

import copy
import enum
import functools
import inspect
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import transformers
from torch import nn
from tqdm.auto import tqdm

from .._version import __version__
from ..errors import EncodeArgumentError, EncodeInputTypeError
from .encode_arguments import check_encode_arguments
from .hub import HubMixin
from .loading import MODULE_KWARGS_KEY, MODULES_FILE, ST_MODEL_CONFIG, load_modules, resolve_model_path
from .model_card_data import SentenceTransformerModelCardData
from .modules.base import Module, kwargs_for, write_json
from .modules.pooling import Pooling
from .modules.router import Router
from .modules.transformer import Transformer
from .runtime.kernel_options import apply_backbone_kernels, plan_kernels
from .runtime.peft_adapters import PeftAdapterMixin
from .runtime.placement import AcceleratePlacementMixin, check_torch_device
from .runtime.threads import cpu_thread_budget
from .similarity import SimilarityFunction

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")


def default_device_name() -> str:
    """The device a model goes to when none is given: this process's CUDA device (``LOCAL_RANK`` under a
    distributed launcher, as sentence-transformers picks it), else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def renamed_kwargs(**renames: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Accept older keyword names (``old="new"``) beside the current ones, e.g. 5.x ``sentences=``.

    The wrapped function keeps its own signature (``inspect.signature`` follows ``__wrapped__``).
    When both names are given, the current one wins.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    value = kwargs.pop(old)
                    kwargs.setdefault(new, value)
            return func(*args, **kwargs)

        return wrapper

    return decorate


def encode_for_task(
    encode: Callable[..., Any], task: str, prompt_names: tuple[str, ...], name: str, doc: str
) -> Callable[..., Any]:
    """``encode`` for one side of retrieval (``encode_query``, ``encode_document``), with ``encode``'s
    full signature (``inspect.signature`` shows it) and the 5.x ``sentences=`` alias.

    It passes ``task=task`` (a router takes that route) and, when neither ``prompt_name`` nor
    ``prompt`` is given, the first of ``prompt_names`` the model has a prompt for. One definition
    serves every encoder class, so the variants cannot drift from ``encode``.
    """
    signature = inspect.signature(encode)
    var_keyword = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)

    def encode_side(self: BaseEncoder, *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(self, *args, **kwargs).arguments
        arguments.pop(next(iter(signature.parameters)))  # self
        extra = arguments.pop(var_keyword, {}) if var_keyword else {}
        if arguments.get("prompt_name") is None and arguments.get("prompt") is None:
            arguments["prompt_name"] = next((n for n in prompt_names if n in self.prompts), None)
        return self.encode(**arguments, task=task, **extra)

    encode_side.__signature__ = signature  # type: ignore[attr-defined]
    encode_side.__name__, encode_side.__module__ = name, encode.__module__
    encode_side.__qualname__ = f"{encode.__qualname__.rpartition('.')[0]}.{name}".lstrip(".")
    encode_side.__doc__ = doc
    return renamed_kwargs(sentences="inputs")(encode_side)


def is_singular_input(inputs: Any) -> bool:
    """True when ``inputs`` is one example rather than a batch (sentence-transformers' rule).

    Lists, tuples, ``datasets`` columns and 1-D+ numpy arrays of strings are batches; anything else
    (a string above all) is a single example.
    """
    if isinstance(inputs, (list, tuple)):
        return False
    if type(inputs).__name__ == "Column" and type(inputs).__module__.startswith("datasets"):
        return False
    return not (isinstance(inputs, np.ndarray) and inputs.ndim >= 1 and inputs.dtype.kind in ("U", "O"))


def _is_text_pair(item: Any) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)


def _check_texts(inputs: Any) -> tuple[list[str | tuple[str, str]], bool]:
    """The inputs as a list of texts or text pairs, and whether a single example was given.

    A text pair is a tuple or list of two strings (a numpy array of shape [n, 2] is n pairs).
    Every other item is refused with a ``TypeError`` naming its position.
    """
    if inputs is None:
        raise EncodeInputTypeError("inputs must be a string, a text pair or a list of them, got None")
    if isinstance(inputs, str):
        _check_encodable(inputs, "inputs")
        return [inputs], True
    single = False
    if isinstance(inputs, np.ndarray):
        single = inputs.ndim == 0
        items = [inputs.item()] if single else inputs.tolist()
    elif is_singular_input(inputs) and (not isinstance(inputs, Iterable) or isinstance(inputs, (bytes, dict))):
        raise EncodeInputTypeError(
            f"inputs must be a string, a text pair or a list of them, got {type(inputs).__name__}"
        )
    else:  # lists, tuples, datasets columns, and (leniently) any other iterable of texts
        items = list(inputs)
    texts: list[str | tuple[str, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            _check_encodable(item, f"inputs[{i}]")
            texts.append(item)
        elif _is_text_pair(item):
            _check_encodable(item[0], f"inputs[{i}][0]")
            _check_encodable(item[1], f"inputs[{i}][1]")
            texts.append((item[0], item[1]))
        else:
            raise EncodeInputTypeError(f"inputs[{i}] is {type(item).__name__}, expected str or a pair of str")
    if texts and any(isinstance(t, tuple) for t in texts) and not all(isinstance(t, tuple) for t in texts):
        raise EncodeArgumentError("inputs mix single texts and text pairs; pass one kind per call")
    return texts, single


def _check_encodable(text: str, where: str) -> None:
    # Lone surrogates are legal in a Python str but not in UTF-8; tokenizers fail on them obscurely.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeArgumentError(
            f"{where} contains a lone surrogate {text[exc.start]!r} at position {exc.start}, which is not valid "
            f"Unicode text; decode your input with errors='replace' or remove it"
        ) from None


def _with_prompt(text: str | tuple[str, str], prompt: str) -> str | tuple[str, str]:
    """The prompt goes before the text, or before the first text of a pair."""
    return (prompt + text[0], text[1]) if isinstance(text, tuple) else prompt + text


def _input_length(text: str | tuple[str, str]) -> int:
    return sum(map(len, text)) if isinstance(text, tuple) else len(text)


@dataclass
class EncodeCall:
    """An ``encode`` call past the checks every encoder class starts with (``_start_encode``)."""

    texts: list[str | tuple[str, str]]
    single: bool
    prompt: str | None
    prompt_name: str | None
    batch_size: int
    show_progress_bar: bool | None
    device: Any
    pool: Any
    chunk_size: int | None
    resolved_prompt: str | None = None  # the prompt the texts get in this process

    @property
    def in_pool(self) -> bool:
        """Whether the call runs in a pool of processes: ``pool=``, or a non-empty list of devices."""
        return self.pool is not None or (isinstance(self.device, (list, tuple)) and len(self.device) > 0)


def first_module(model: nn.Module, cls: type) -> Any:
    """The first module of type ``cls`` in ``model`` (nested ones included), or None: how the
    exports and the checkpointing switches find the Hugging Face transformer of any encoder.

    A function, not a method, so that the encoders' public names stay sentence-transformers' own.
    """
    for module in model.modules():
        if isinstance(module, cls):
            return module
    return None


class BaseEncoder(AcceleratePlacementMixin, PeftAdapterMixin, HubMixin, nn.Sequential):
    """A sequence of modules loaded from a model folder or Hub id, or assembled from ``modules``."""

    model_type: ClassVar[str] = ""
    default_similarity: ClassVar[SimilarityFunction] = SimilarityFunction.DOT_PRODUCT
    # Single-vector similarities; multi-vector scores (MaxSim) need a MultiVectorEncoder.
    SUPPORTED_SIMILARITY_FN_NAMES: ClassVar[tuple[str, ...]] = (
        SimilarityFunction.COSINE.value,
        SimilarityFunction.DOT_PRODUCT.value,
        SimilarityFunction.EUCLIDEAN.value,
        SimilarityFunction.MANHATTAN.value,
    )
    # What a model without model_card_data= gets (sentence-transformers' attribute name).
    model_card_data_class: ClassVar[type[SentenceTransformerModelCardData]] = SentenceTransformerModelCardData
    # Prompt names every model has (empty unless set), as in sentence-transformers.
    _default_prompts: ClassVar[dict[str, str | None]] = {"query": None, "document": None}

    @renamed_kwargs(tokenizer_kwargs="processor_kwargs")
    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        *,
        modules: Sequence[nn.Module] | OrderedDict[str, nn.Module] | None = None,
        device: str | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        cache_folder: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        local_files_only: bool = False,
        token: bool | str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        use_kernels: bool = False,
        kernel_config: transformers.KernelConfig | None = None,
        model_card_data: SentenceTransformerModelCardData | None = None,
        backend: str = "torch",
        similarity_fn_name: str | SimilarityFunction | None = None,
        precision: str | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise EncodeArgumentError(f"backend {backend!r} is not supported; choose one of {', '.join(BACKENDS)}")
        if device is not None:
            check_torch_device(device)  # before seconds go into loading the weights
        # A device_map hands placement to transformers/Accelerate; `device` is then not used.
        device_map = (model_kwargs or {}).get("device_map") if backend == "torch" and model_name_or_path else None
        if device is not None and device_map is not None:
            logger.warning(f"Ignoring `device={device}` because `model_kwargs['device_map']` takes priority.")
        # Runtime-only, as in sentence-transformers: never saved with the model.
        self.use_kernels = bool(use_kernels or kernel_config is not None)
        self.kernel_config = copy.deepcopy(kernel_config)
        kernels = plan_kernels(
            backend,
            model_kwargs,
            self.use_kernels,
            self.kernel_config,
            loads_from_path=model_name_or_path is not None,
            device_map=device_map,
        )
        model_kwargs = kernels.model_kwargs
        # The transformer module resolves both (see modules/transformer.py and precision.py).
        model_kwargs = {**(model_kwargs or {}), "backend": backend, **({"precision": precision} if precision else {})}
        model_config: dict[str, Any] = {}
        if model_name_or_path is not None:
            if modules is not None:
                raise ValueError("pass either model_name_or_path or modules, not both")
            path = resolve_model_path(model_name_or_path, cache_folder, revision, token, local_files_only)
            module_list, model_config = load_modules(
                path,
                trust_remote_code=trust_remote_code,
                model_kwargs=model_kwargs,
                tokenizer_kwargs=processor_kwargs,
                config_kwargs=config_kwargs,
                cache_folder=cache_folder,
                bare_checkpoint=self._bare_checkpoint_modules,
                model_type=self.model_type,
                convert=self._converted_modules,
            )
            modules = OrderedDict((str(i), m) for i, m in enumerate(module_list))
        elif modules is not None and not isinstance(modules, OrderedDict):
            modules = OrderedDict((str(i), m) for i, m in enumerate(modules))
        super().__init__(modules or OrderedDict())
        for module in self.modules():  # modules that need the assembled model (a tokenizer...)
            if module is not self and callable(getattr(module, "on_model_ready", None)):
                module.on_model_ready(self)
        self.model_name_or_path = None if model_name_or_path is None else str(model_name_or_path)
        self.backend = backend
        self.trust_remote_code = trust_remote_code
        # Extra keyword arguments per module name, from modules.json "kwargs" entries ({} for a
        # loaded model without any, None for one assembled from modules, as in sentence-transformers).
        self.module_kwargs: dict[str, list[str]] | None = (
            None if model_name_or_path is None else model_config.pop(MODULE_KWARGS_KEY, {})
        )

        # User prompts first, then saved ones fill what the user left unset (sentence-transformers' order).
        self.prompts: dict[str, str] = {**self._default_prompts, **(prompts or {})}  # type: ignore[dict-item]
        self.default_prompt_name = default_prompt_name
        self._similarity_fn_name: str | None = None
        if similarity_fn_name is not None:
            self.similarity_fn_name = similarity_fn_name
        self._parse_model_config(model_config)
        self.prompts = {name: "" if text is None else text for name, text in self.prompts.items()}
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(
                f"Default prompt name '{self.default_prompt_name}' not found in the configured prompts "
                f"dictionary with keys {list(self.prompts.keys())!r}."
            )
        self._prompt_lengths: dict[str, int] = {}
        self._device_map = device_map
        self._modules_placed = False
        if self._placement_is_delegated:
            self._place_modules()
        else:
            self.to(device or self.get_device_name())
        apply_backbone_kernels(self, kernels)
        # Habana Gaudi graph mode (sentence-transformers' attribute): sparsebridge has no HPU support,
        # so it is always False here.
        self.is_hpu_graph_enabled = False
        self.model_card_data = model_card_data or self.model_card_data_class(local_files_only=local_files_only)
        if model_name_or_path is not None and not Path(model_name_or_path).expanduser().is_dir():
            self.model_card_data.set_base_model(str(model_name_or_path), revision=revision)
        self.model_card_data.register_model(self)

    # Subclasses say how a bare Hugging Face checkpoint (no modules.json) becomes modules, and how
    # the modules of another model family's save are adapted (None: loaded as they are).
    _bare_checkpoint_modules: ClassVar[Callable[..., list[Module]] | None] = None
    _converted_modules: ClassVar[Callable[[list[Module]], list[Module]] | None] = None

    def _parse_model_config(self, model_config: dict[str, Any]) -> None:
        """Merge a saved ``config_sentence_transformers.json`` under what the caller passed.

        Saved prompts fill only names the caller left unset; a saved default prompt name and
        similarity apply only when the caller gave none (a multi-vector similarity such as
        ``maxsim`` from another family's save is ignored).
        """
        for name, text in (model_config.get("prompts") or {}).items():
            if self.prompts.get(name) is None:
                self.prompts[name] = text
        if self.default_prompt_name is None:
            self.default_prompt_name = model_config.get("default_prompt_name")
        saved = model_config.get("similarity_fn_name")
        if self._similarity_fn_name is None and saved in self.SUPPORTED_SIMILARITY_FN_NAMES:
            self.similarity_fn_name = saved

    # -- properties ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model runs: its Accelerate execution device if hooks place it, else where its
        first parameter (or buffer) is, else the CPU."""
        execution_device = self._execution_device()
        if execution_device is not None:
            return execution_device
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of the model's parameters (of the first one), or None without parameters."""
        for tensor in self.parameters():
            return tensor.dtype
        return None

    @property
    def similarity_fn_name(self) -> str:
        """The similarity function name; the class default unless set otherwise."""
        return self._similarity_fn_name or self.default_similarity.value

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str | SimilarityFunction | None) -> None:
        if isinstance(value, enum.Enum):  # ours, or sentence-transformers' own SimilarityFunction
            value = value.value
        if value is not None and value not in self.SUPPORTED_SIMILARITY_FN_NAMES:
            hint = " Use MultiVectorEncoder for MaxSim late-interaction scoring." if value == "maxsim" else ""
            raise ValueError(
                f"{type(self).__name__} only supports similarity_fn_name in "
                f"{self.SUPPORTED_SIMILARITY_FN_NAMES}, got {value!r}.{hint}"
            )
        self._similarity_fn_name = value

    def _input_module(self) -> Module:
        if not len(self):
            raise ValueError(f"this {type(self).__name__} has no modules")
        return self[0]

    @property
    def tokenizer(self):
        """The input module's tokenizer (sentence-transformers' attribute)."""
        module = self._input_module()
        tokenizer = getattr(module, "tokenizer", None)
        if tokenizer is None:
            transformer = first_module(self, Transformer)
            tokenizer = getattr(transformer, "tokenizer", None)
        return tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._input_module().tokenizer = value

    @property
    def processor(self):
        """The input module's processor; for text models that is the tokenizer."""
        return getattr(self._input_module(), "processor", None) or self.tokenizer

    @property
    def max_seq_length(self) -> int | None:
        """The longest input in tokens the input module takes (longer texts are truncated)."""
        return getattr(self._input_module(), "max_seq_length", None)

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self._input_module().max_seq_length = value

    def get_max_seq_length(self) -> int | None:
        """``max_seq_length`` (sentence-transformers' method)."""
        return self.max_seq_length

    @property
    def transformers_model(self) -> transformers.PreTrainedModel | None:
        """The transformers model inside the first Transformer module, if any."""
        transformer = first_module(self, Transformer)
        return None if transformer is None else transformer.model

    @property
    def config(self) -> transformers.PretrainedConfig | None:
        """The Hugging Face config of the underlying transformer (None without one), which
        integrations such as ``transformers.Trainer`` read as ``model.config``."""
        return getattr(self.transformers_model, "config", None)

    @config.setter
    def config(self, value: transformers.PretrainedConfig) -> None:
        model = self.transformers_model
        if model is not None:
            model.config = value

    @property
    def modalities(self) -> list[str]:
        """What the model takes as input: ``["text"]`` for every model sparsebridge loads."""
        return list(getattr(self._input_module(), "modalities", ["text"]))

    def supports(self, modality: str | tuple[str, ...]) -> bool:
        """Whether the model takes this modality (a tuple of them needs ``"message"`` support)."""
        supported = self.modalities
        if modality in supported:
            return True
        return isinstance(modality, tuple) and "message" in supported and all(m in supported for m in modality)

    def get_device_name(self) -> str:
        """The device this model goes to when no ``device`` is given (see ``default_device_name``).

        sparsebridge runs on CUDA, MPS or the CPU; Neuron and HPU are never picked (sentence-transformers'
        SparseEncoder falls back to the CPU on them too).
        """
        return default_device_name()

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """Recompute activations in the backward pass instead of keeping them (less memory when
        fine-tuning the model with your own training loop); each submodule that supports it is switched.

        ``activation_checkpointing_kwargs`` go to ``torch.utils.checkpoint.checkpoint``; ``kwargs`` to the
        submodules' own ``gradient_checkpointing_enable``. A submodule that declares no support is skipped
        with a warning. Inference (``encode``) is not affected.
        """
        for module in self.modules():
            if module is self:
                continue
            enable = getattr(module, "activation_checkpointing_enable", None) or getattr(
                module, "gradient_checkpointing_enable", None
            )
            if enable is None:
                continue
            if getattr(module, "supports_gradient_checkpointing", True) is False:
                # e.g. a wrapper that does not declare support while a model inside it does
                logger.warning("%s does not support activation checkpointing, skipping it.", type(module).__name__)
                continue
            enable(activation_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """The older name of ``activation_checkpointing_enable`` (the same switch)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def get_backend(self) -> str:
        """The inference backend: ``"torch"``."""
        return self.backend

    def is_singular_input(self, inputs: Any) -> bool:
        """Whether ``inputs`` is one example (a string, a text pair as tuple is a batch) or a batch."""
        return is_singular_input(inputs)

    def get_embedding_dimension(self) -> int | None:
        """The size of ``encode``'s output vectors (the vocabulary for SPLADE models), or None if unknown."""
        for module in reversed(list(self._modules.values())):
            for attr in ("get_embedding_dimension", "get_sentence_embedding_dimension", "get_word_embedding_dimension"):
                if hasattr(module, attr):
                    dim = getattr(module, attr)()
                    if dim:
                        return int(dim)
            dim = getattr(module, "embedding_dimension", None)
            if dim:
                return int(dim)
        return None

    def get_sentence_embedding_dimension(self) -> int | None:
        """The 5.x name of ``get_embedding_dimension``."""
        return self.get_embedding_dimension()

    def get_model_kwargs(self) -> list[str]:
        """Keyword arguments that ``encode`` passes on to the modules (e.g. ``task`` for routers)."""
        names: set[str] = set()
        for module in self.modules():  # routers' routes included
            names.update(getattr(module, "forward_kwargs", ()) if module is not self else ())
        for declared in (self.module_kwargs or {}).values():
            names.update(declared)
        return sorted(names)

    def set_pooling_include_prompt(self, include_prompt: bool) -> None:
        """Whether the first ``Pooling`` module pools over the prompt's tokens too."""
        for module in self._modules.values():
            if isinstance(module, Pooling):
                module.include_prompt = include_prompt
                break

    # -- forward ---------------------------------------------------------------------------
    def tokenize(self, texts: list[str], **kwargs: Any) -> dict[str, Any]:
        """Tokenize ``texts`` with the input module (sentence-transformers' method)."""
        return self._input_module().tokenize(texts, **kwargs)

    def preprocess(self, inputs: Any, prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Model-ready features of a batch (``input_ids``, ``attention_mask``... as tensors, plus
        ``modality``), from the input module; a router picks the route from ``task=``.

        ``prompt`` goes before each text; ``processing_kwargs`` (``{"text": {"max_length": 8}}``)
        overrides the tokenizer settings for this call.
        """
        if inputs is None or (not isinstance(inputs, np.ndarray) and not inputs):
            return {}
        texts, _ = _check_texts(inputs)
        if not texts:
            return {}
        return self._input_module().preprocess(texts, prompt=prompt, **kwargs)

    def forward(self, input: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Run the modules in order; each gets only the keyword arguments it declares, a router all."""
        for name, module in self._modules.items():
            if isinstance(module, Router):
                passed = kwargs
            else:
                declared = (self.module_kwargs or {}).get(name, ())
                passed = {**kwargs_for(module, kwargs), **{k: v for k, v in kwargs.items() if k in declared}}
            input = module(input, **passed)
        return input

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``torch.compile`` the forward pass; ``encode`` calls the model, so it runs compiled."""
        return super().compile(*args, **kwargs)

    # -- encoding --------------------------------------------------------------------------
    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None:
            if prompt_name is not None:
                logger.warning(
                    "Provide either a `prompt`, a `prompt_name`, or neither, but not both. "
                    "Ignoring the `prompt_name` in favor of `prompt`."
                )
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return None
        if name not in self.prompts:
            raise ValueError(
                f"Prompt name '{name}' not found in the configured prompts dictionary with keys "
                f"{list(self.prompts.keys())!r}."
            )
        return self.prompts[name]

    def _start_encode(
        self,
        inputs: Any,
        kwargs: dict[str, Any],
        prompt: str | None,
        prompt_name: str | None,
        batch_size: int,
        show_progress_bar: bool | None,
        device: Any,
        pool: Any,
        chunk_size: int | None,
    ) -> EncodeCall:
        """The start every ``encode`` shares: the inputs as a list (and whether one text was given),
        a positive batch size, a ``pool`` that ``start_multi_process_pool`` made, keywords some module
        takes; whether the call runs in a pool of processes (``pool=``, or a non-empty list of
        devices, as in sentence-transformers); and, in this process, the device (checked, the model
        moved to it) and the prompt."""
        texts, single = _check_texts(inputs)
        if batch_size <= 0:
            raise EncodeArgumentError(f"batch_size must be a positive integer, got {batch_size}.")
        check_encode_arguments(pool=pool)
        self._check_encode_kwargs(kwargs)
        call = EncodeCall(texts, single, prompt, prompt_name, batch_size, show_progress_bar, device, pool, chunk_size)
        if not call.in_pool:
            self._resolve_inference_device(device)
            call.resolved_prompt = self._resolve_prompt(prompt, prompt_name)
        return call

    def _check_encode_kwargs(self, kwargs: dict[str, Any]) -> None:
        """Refuse keywords no module takes (``task`` and ``processing_kwargs`` are always allowed)."""
        model_kwargs = self.get_model_kwargs()
        unused = [key for key in kwargs if key not in model_kwargs and key not in ("task", "processing_kwargs")]
        if unused:
            name = type(self).__name__
            allowed = (
                f"the valid additional keyword arguments are: {model_kwargs}."
                if model_kwargs
                else "this model does not accept any additional keyword arguments."
            )
            raise EncodeArgumentError(
                f"{name}.encode() has been called with additional keyword arguments that this model does not "
                f"use: {unused}. As per {name}.get_model_kwargs(), {allowed}"
            )

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
        texts: list[str | tuple[str, str]],
        prompt: str | None,
        batch_size: int,
        show_progress_bar: bool | None,
        finish: Callable[[torch.Tensor], torch.Tensor],
        forward_kwargs: dict[str, Any],
    ) -> tuple[np.ndarray, list[torch.Tensor]]:
        """Sentence embeddings batch by batch, longest texts first; returns the order and batches.

        Row k of the concatenated batches belongs to input ``order[k]``. ``finish`` post-processes
        each batch (top-k, sparse conversion, moving to CPU...). ``processing_kwargs`` and ``task``
        in ``forward_kwargs`` also reach the tokenizer.
        """
        if batch_size <= 0:
            raise EncodeArgumentError(f"batch_size must be a positive integer, got {batch_size}.")
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        forward_kwargs = dict(forward_kwargs)
        processing_kwargs = forward_kwargs.pop("processing_kwargs", None)
        tokenize_kwargs = {k: v for k, v in forward_kwargs.items() if k == "task"}
        if processing_kwargs:
            tokenize_kwargs["processing_kwargs"] = processing_kwargs
        prompt_length = None
        if prompt:
            texts = [_with_prompt(t, prompt) for t in texts]
            if any(getattr(m, "include_prompt", True) is False for m in self.modules()):
                prompt_length = self._prompt_length(prompt, tokenize_kwargs)
        # Longest first: batches of similar length waste little padding, and the first batch
        # shows the peak memory right away.
        order = np.argsort([-_input_length(t) for t in texts], kind="stable")
        batches: list[torch.Tensor] = []
        self.eval()
        device = self.device
        starts = range(0, len(texts), batch_size)
        # One intra-op thread per free CPU core, re-measured between batches (see threads.py).
        with cpu_thread_budget(device, getattr(self, "num_threads", None)) as budget:
            for start in tqdm(starts, desc="Batches") if show_progress_bar else starts:
                if budget is not None:
                    budget.tick()
                batch = [texts[i] for i in order[start : start + batch_size]]
                features = self.tokenize(batch, **tokenize_kwargs)
                features = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
                features.setdefault("modality", "text")
                if prompt_length:
                    features["prompt_length"] = prompt_length
                with torch.inference_mode():
                    # Through __call__, so forward hooks and torch.compile apply.
                    out = self(features, **forward_kwargs)["sentence_embedding"]
                batches.append(finish(out))
        return order, batches

    def _encode_in_pool(self, call: EncodeCall, kwargs: dict[str, Any], **options: Any) -> Any:
        """``call`` spread over the processes of its pool, with the class's own output ``options``."""
        from .multiprocess import encode_multi_process

        placement = {"pool": call.pool, "devices": call.device, "chunk_size": call.chunk_size}
        # Each worker runs ``encode`` with the call's own arguments: it resolves the prompt itself.
        arguments = {"prompt_name": call.prompt_name, "prompt": call.prompt, "batch_size": call.batch_size}
        arguments["show_progress_bar"] = call.show_progress_bar
        return encode_multi_process(self, call.texts, single=call.single, **placement, **arguments, **options, **kwargs)

    def encode(self, inputs: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        """Encode ``inputs``; each encoder class defines it."""
        raise NotImplementedError

    # -- multi-process pools ------------------------------------------------------------------
    def start_multi_process_pool(self, target_devices: list[str] | None = None) -> dict[str, Any]:
        """Worker processes (torch spawn context), one per target device, e.g. ``["cpu", "cpu"]``.

        A model dispatched by Accelerate cannot be: each worker places the model itself.
        """
        from .multiprocess import start_pool

        if self._accelerate_placement_hook is not None:
            raise EncodeArgumentError(
                "Multi-process encoding places the model on each target device itself, which a model "
                "dispatched by accelerate does not allow. Load it without a `device_map` to encode "
                "with a pool."
            )
        return start_pool(self, target_devices)

    @staticmethod
    def stop_multi_process_pool(pool: dict[str, Any]) -> None:
        """Stop the worker processes of a pool from :meth:`start_multi_process_pool`."""
        from .multiprocess import stop_pool

        stop_pool(pool)

    # -- similarity ------------------------------------------------------------------------------
    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        """The model's similarity (``similarity_fn_name``) of every pair: a [n1, n2] matrix."""
        return SimilarityFunction.to_similarity_fn(self.similarity_fn_name)(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1, embeddings2) -> torch.Tensor:
        """The model's similarity of ``embeddings1[i]`` and ``embeddings2[i]``: one score per row."""
        return SimilarityFunction.to_similarity_pairwise_fn(self.similarity_fn_name)(embeddings1, embeddings2)

    def evaluate(self, evaluator: Callable[..., Any], output_path: str | None = None) -> dict[str, float] | float:
        """Run an evaluator (e.g. ``sparsebridge.evaluation.SparseInformationRetrievalEvaluator``) on this model."""
        if output_path is not None:
            os.makedirs(output_path, exist_ok=True)
        return evaluator(self, output_path)

    # -- merging ---------------------------------------------------------------------------------
    @classmethod
    def merge(
        cls,
        models: Sequence[str | Path | BaseEncoder],
        method: str = "linear",
        *,
        base_model: str | Path | BaseEncoder | None = None,
        parameters: dict[str, Any] | None = None,
        dtype: str | torch.dtype | None = torch.float32,
        out_dtype: str | torch.dtype | None = None,
        device: str | torch.device = "cpu",
        batch_options: Any = None,
        **load_kwargs: Any,
    ) -> BaseEncoder:
        """Merge fine-tunes of one model into a new model, with mergekit (``pip install sparsebridge[merge]``).

        ``models``: two or more models or paths / Hub ids (loaded with ``load_kwargs``), all alike
        but for their weights (same modules, configs and vocabulary; checked first). ``method``: a
        mergekit method such as ``"linear"``, ``"slerp"``, ``"ties"``, ``"task_arithmetic"``;
        ``parameters`` its settings, e.g. ``{"weight": [0.6, 0.4]}`` (linear) or ``{"t": 0.4}``
        (slerp; ``t`` defaults to 0.5, its base to the first model; ``weight`` to 1 where taken).
        ``base_model``: the reference of task-vector methods (one of the inputs or another model,
        which then has index ``len(models)``). ``dtype``: what floating-point tensors are merged in
        (float32 by default); ``out_dtype``: what the result is cast to. ``batch_options``:
        ``mergekit.merge_methods.BatchOptions``. Returns a new model in eval mode, on ``device``,
        with the first model's prompts and settings and a fresh model card; the inputs are not changed.
        """
        from .merging import merge_models

        return merge_models(
            cls,
            models,
            method,
            base_model=base_model,
            parameters=parameters,
            dtype=dtype,
            out_dtype=out_dtype,
            device=device,
            batch_options=batch_options,
            **load_kwargs,
        )

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(
        self,
        path: str | os.PathLike,
        model_name: str | None = None,
        create_model_card: bool = True,
        train_datasets: list[str] | None = None,
        safe_serialization: bool = True,
    ) -> None:
        """Write the sentence-transformers layout: modules.json, config, one folder per module.

        ``train_datasets`` (dataset ids) is accepted for sentence-transformers' signature; it only
        feeds the model card.
        """
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        entries = []
        for idx, (name, module) in enumerate(self._modules.items()):
            if not isinstance(module, Module) or not module.st_type:
                raise TypeError(f"module {idx} ({type(module).__name__}) cannot be saved: not a sparsebridge Module")
            rel = "" if idx == 0 and module.save_in_root else f"{idx}_{type(module).__name__}"
            module.save(root / rel, safe_serialization=safe_serialization)
            entry = {"idx": idx, "name": name, "path": rel, "type": module.st_type}
            if self.module_kwargs and name in self.module_kwargs:
                entry["kwargs"] = list(self.module_kwargs[name])
            entries.append(entry)
        write_json(root / MODULES_FILE, entries)
        write_json(root / ST_MODEL_CONFIG, self._get_model_config())
        if create_model_card:
            from .model_card import write_model_card

            write_model_card(self, root, model_name=model_name, train_datasets=train_datasets)

    def _get_model_config(self) -> dict[str, Any]:
        """What ``config_sentence_transformers.json`` holds."""
        return {
            "__version__": {
                "sparsebridge": __version__,
                "transformers": transformers.__version__,
                "pytorch": torch.__version__,
            },
            "model_type": self.model_type,
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": self._similarity_fn_name,
        }

    save = save_pretrained
