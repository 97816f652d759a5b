"""``SparseEncoder``: text -> learned sparse vectors, with sentence-transformers' public API."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .loading import MODULES_FILE, ST_MODEL_CONFIG, load_modules, resolve_model_path
from .modules.base import Module, write_json
from .modules.splade_pooling import SpladePooling
from .modules.transformer import Transformer
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
        return [sentences], True
    if sentences is None:
        raise TypeError("sentences must be a string or a list of strings, got None")
    if not isinstance(sentences, Iterable) or isinstance(sentences, (bytes, dict)):
        raise TypeError(f"sentences must be a string or a list of strings, got {type(sentences).__name__}")
    texts = list(sentences)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"sentences[{i}] is {type(text).__name__}, expected str")
    return texts, False


def _keep_top_k(embeddings: torch.Tensor, k: int | None) -> torch.Tensor:
    if k is None or k <= 0 or k >= embeddings.shape[-1]:
        return embeddings
    values, indices = embeddings.topk(k, dim=-1)
    return torch.zeros_like(embeddings).scatter_(-1, indices, values)


class SparseEncoder(nn.Sequential):
    """A sparse encoder: a sequence of modules such as a masked-LM transformer + ``SpladePooling``.

    Load one from a local folder or the Hugging Face Hub (sentence-transformers layout, or a bare
    masked-LM checkpoint), or assemble it from ``modules``.
    """

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
        max_active_dims: int | None = None,
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
        self.max_active_dims = max_active_dims
        self.to(device or _default_device())

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
        """The similarity function name; ``"dot"`` unless set otherwise (sparse models score by dot)."""
        return self._similarity_fn_name or SimilarityFunction.DOT_PRODUCT.value

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
            raise ValueError("this SparseEncoder has no modules")
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

    @property
    def splade_pooling_chunk_size(self) -> int | None:
        pooling = self._first(SpladePooling)
        return None if pooling is None else pooling.chunk_size

    @splade_pooling_chunk_size.setter
    def splade_pooling_chunk_size(self, value: int | None) -> None:
        pooling = self._first(SpladePooling)
        if pooling is None:
            raise ValueError("this model has no SpladePooling module")
        pooling.chunk_size = value if value and value > 0 else None

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
        names: list[str] = []
        for module in self._modules.values():
            for name in getattr(module, "forward_kwargs", ()):
                if name not in names:
                    names.append(name)
        return names

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

    def encode(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_tensor: bool = True,
        convert_to_sparse_tensor: bool = True,
        save_to_cpu: bool = False,
        device: str | list[str] | None = None,
        max_active_dims: int | None = None,
        pool: dict[str, Any] | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Encode texts into sparse vectors over the vocabulary.

        A single string gives a 1-D tensor, a list a 2-D one (sparse COO unless
        ``convert_to_sparse_tensor=False``); ``convert_to_tensor=False`` gives a list of 1-D tensors.
        ``max_active_dims`` keeps the k largest weights of each row.
        """
        texts, single = _check_texts(sentences)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if pool is not None or isinstance(device, (list, tuple)):
            from .multiprocess import encode_multi_process

            return encode_multi_process(
                self,
                texts,
                single=single,
                pool=pool,
                devices=device,
                chunk_size=chunk_size,
                prompt_name=prompt_name,
                prompt=prompt,
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
                convert_to_tensor=convert_to_tensor,
                convert_to_sparse_tensor=convert_to_sparse_tensor,
                save_to_cpu=save_to_cpu,
                max_active_dims=max_active_dims,
                **kwargs,
            )
        if device is not None and torch.device(device) != self.device:
            self.to(device)
        resolved_prompt = self._resolve_prompt(prompt_name, prompt)
        if resolved_prompt:
            texts = [resolved_prompt + t for t in texts]
        max_active_dims = max_active_dims if max_active_dims is not None else self.max_active_dims
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)

        dim = self.get_sentence_embedding_dimension() or 0
        # Longest first: batches of similar length waste little padding, and the first batch
        # shows the peak memory right away.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches: list[torch.Tensor] = []
        self.eval()
        for start in tqdm(range(0, len(texts), batch_size), desc="Batches", disable=not show_progress_bar):
            batch = [texts[i] for i in order[start : start + batch_size]]
            features = self.tokenize(batch, **{k: v for k, v in kwargs.items() if k == "task"})
            features = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
            with torch.inference_mode():
                out = self.forward(features, **kwargs)["sentence_embedding"]
            out = _keep_top_k(out, max_active_dims)
            if convert_to_sparse_tensor:
                out = out.to_sparse()
            if save_to_cpu:
                out = out.cpu()
            batches.append(out)
            dim = out.shape[-1]

        result = _assemble(batches, order, len(texts), dim, convert_to_sparse_tensor, self.device, save_to_cpu)
        if not convert_to_tensor:
            rows = list(result.unbind(0)) if len(texts) else []
            return rows[0] if single else rows
        return result[0] if single else result

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

    # -- multi-process pools ------------------------------------------------------------------
    def start_multi_process_pool(self, target_devices: list[str] | None = None) -> dict[str, Any]:
        from .multiprocess import start_pool

        return start_pool(self, target_devices)

    @staticmethod
    def stop_multi_process_pool(pool: dict[str, Any]) -> None:
        from .multiprocess import stop_pool

        stop_pool(pool)

    # -- similarity and inspection -----------------------------------------------------------
    def similarity(self, embeddings1: torch.Tensor, embeddings2: torch.Tensor) -> torch.Tensor:
        return SimilarityFunction.to_similarity_fn(self.similarity_fn_name)(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: torch.Tensor, embeddings2: torch.Tensor) -> torch.Tensor:
        return SimilarityFunction.to_similarity_pairwise_fn(self.similarity_fn_name)(embeddings1, embeddings2)

    def decode(
        self, embeddings: torch.Tensor, top_k: int | None = None
    ) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """(token, weight) pairs of the active dimensions, largest weight first."""
        if not isinstance(embeddings, torch.Tensor):
            raise TypeError(f"decode expects a torch.Tensor, got {type(embeddings).__name__}")
        if embeddings.dim() not in (1, 2):
            raise ValueError(f"decode expects a 1-D or 2-D tensor, got {embeddings.dim()}-D")
        single = embeddings.dim() == 1
        rows = embeddings.unsqueeze(0) if single else embeddings
        rows = rows.coalesce() if rows.is_sparse else rows.to_sparse()
        idx, vals = rows.indices().cpu(), rows.values().cpu()
        decoded: list[list[tuple[str, float]]] = [[] for _ in range(rows.shape[0])]
        for r in range(rows.shape[0]):
            sel = (idx[0] == r) & (vals != 0)
            cols, weights = idx[1][sel], vals[sel]
            sort = torch.argsort(weights, descending=True, stable=True)
            if top_k is not None:
                sort = sort[:top_k]
            tokens = self.tokenizer.convert_ids_to_tokens(cols[sort].tolist())
            decoded[r] = list(zip(tokens, weights[sort].tolist()))
        return decoded[0] if single else decoded

    @staticmethod
    def intersection(embeddings_1: torch.Tensor, embeddings_2: torch.Tensor) -> torch.Tensor:
        """Element-wise product of a 1-D embedding with each row of another, keeping dims active in both."""
        if embeddings_1.dim() != 1:
            raise ValueError(f"embeddings_1 must be 1-D, got shape {tuple(embeddings_1.shape)}")
        if embeddings_2.dim() not in (1, 2):
            raise ValueError(f"embeddings_2 must be 1-D or 2-D, got shape {tuple(embeddings_2.shape)}")
        if embeddings_1.shape[-1] != embeddings_2.shape[-1]:
            raise ValueError(f"vocabulary size mismatch: {embeddings_1.shape[-1]} vs {embeddings_2.shape[-1]}")
        first = embeddings_1.to_dense() if embeddings_1.is_sparse else embeddings_1
        second = (embeddings_2 if embeddings_2.is_sparse else embeddings_2.to_sparse()).coalesce()
        idx = second.indices()
        values = second.values() * first[idx[-1]]
        keep = values > 0
        return torch.sparse_coo_tensor(idx[:, keep], values[keep], second.shape, check_invariants=False).coalesce()

    @staticmethod
    def sparsity(embeddings: torch.Tensor) -> dict[str, float]:
        """Mean number of active dimensions per row and the mean share of inactive ones."""
        if not isinstance(embeddings, torch.Tensor):
            raise TypeError("embeddings must be a torch.Tensor")
        if embeddings.dim() not in (1, 2):
            raise ValueError(f"expected a 1-D or 2-D tensor, got {embeddings.dim()}-D")
        rows = embeddings.unsqueeze(0) if embeddings.dim() == 1 else embeddings
        n, dim = rows.shape
        if n == 0:
            return {"active_dims": 0.0, "sparsity_ratio": 1.0}
        if rows.is_sparse:
            rows = rows.coalesce()
            active = torch.zeros(n).index_add_(0, rows.indices()[0].cpu(), (rows.values() != 0).float().cpu())
        else:
            active = (rows != 0).sum(dim=1).float().cpu()
        mean_active = float(active.mean())
        return {"active_dims": mean_active, "sparsity_ratio": float((1 - active / dim).mean())}

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(
        self,
        path: str | os.PathLike,
        model_name: str | None = None,
        create_model_card: bool = True,
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
                "model_type": "SparseEncoder",
                "prompts": self.prompts,
                "default_prompt_name": self.default_prompt_name,
                "similarity_fn_name": self._similarity_fn_name,
            },
        )
        if create_model_card:
            (root / "README.md").write_text(self._model_card(model_name), encoding="utf-8")

    save = save_pretrained

    def _model_card(self, model_name: str | None) -> str:
        title = model_name or self.model_name_or_path or "sparse encoder"
        modules = "\n".join(f"- `{type(m).__name__}`: {m.extra_repr()}" for m in self._modules.values())
        return (
            f"---\nlibrary_name: sentence-transformers\npipeline_tag: feature-extraction\ntags:\n"
            f"- sparse-encoder\n- sparse\n- splade\n---\n\n# {title}\n\n"
            f"A sparse encoder saved by sparsebridge {__version__} in the sentence-transformers layout.\n"
            f"Output dimension: {self.get_sentence_embedding_dimension()}; similarity: "
            f"{self.similarity_fn_name}.\n\nModules:\n{modules}\n"
        )


def _assemble(
    batches: list[torch.Tensor],
    order: np.ndarray,
    n: int,
    dim: int,
    sparse: bool,
    device: torch.device,
    save_to_cpu: bool,
) -> torch.Tensor:
    """Concatenate the per-batch results and put rows back in input order."""
    target = torch.device("cpu") if save_to_cpu else device
    if n == 0:
        empty = torch.zeros(0, dim, device=target)
        return empty.to_sparse() if sparse else empty
    # Row k of the concatenated batches is input row order[k].
    original_row = torch.from_numpy(np.asarray(order, dtype=np.int64))
    if not sparse:
        stacked = torch.cat(batches)
        result = torch.empty_like(stacked)
        result[original_row.to(stacked.device)] = stacked
        return result
    indices, values, offset = [], [], 0
    for part in batches:
        part = part.coalesce()
        idx = part.indices().clone()
        idx[0] += offset
        indices.append(idx)
        values.append(part.values())
        offset += part.shape[0]
    idx = torch.cat(indices, dim=1)
    idx[0] = original_row.to(idx.device)[idx[0]]
    return torch.sparse_coo_tensor(idx, torch.cat(values), (n, dim), check_invariants=False).coalesce()
