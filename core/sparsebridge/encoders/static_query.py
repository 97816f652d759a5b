"""The query side of an inference-free model, read and run without torch.

An inference-free model is a ``Router`` whose query route is one ``SparseStaticEmbedding``: a query
becomes the static weight of each distinct token it holds (no special tokens, truncated at the
tokenizer's ``model_max_length``), with no transformer pass. That is a tokenizer and a table
lookup, so :class:`StaticQueryEncoder` does it from the model folder with ``tokenizers``,
``safetensors`` (numpy) and numpy: searching such an index loads neither torch, nor transformers,
nor the document-side transformer. Its vectors, vocabulary and producer fingerprint are those of
the loaded model's query side (``tests/test_index_side.py`` compares them on a saved model).

Only the folder layout sparsebridge and sentence-transformers save is read (``modules.json`` with a
single Router, ``router_config.json``, the route's module folder with ``tokenizer.json`` and
``model.safetensors``); anything else (an ``idf.json`` query side, a Hub id, more modules on the
query route, a saved ``max_active_dims``) gives None, and the caller loads the model.
``max_active_dims`` is left to the model: keeping the k strongest breaks ties as ``torch.topk``
does, which no rule here reproduces (IDF weights tie often).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncodeArgumentError
from ..vectors.convert import SparseRows
from .layout import (
    CONFIG_FILE,
    MODULES_FILE,
    QUERY_PROMPT_NAMES,
    ROUTER_CONFIG,
    ST_MODEL_CONFIG,
    TOKENIZER_CONFIG,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    truncation_limit,
)

_ROUTER = "Router"
_STATIC = "SparseStaticEmbedding"
# SparseStaticEmbedding.config_keys and their defaults: the module's config in its fingerprint.
_STATIC_CONFIG = {"frozen": False}


class _TokenNames:
    """The two calls of a tokenizer that :class:`~sparsebridge.vectors.vocabulary.Vocabulary` makes."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str | None]:
        return [self._tokenizer.id_to_token(i) for i in ids]


class StaticQueryEncoder:
    """The query side of an inference-free model folder: ``encode_query`` without torch.

    It has the attributes the index side reads of an encoder (``model_name_or_path``, ``prompts``,
    ``max_active_dims`` (None), ``tokenizer`` for the vocabulary, ``get_embedding_dimension``); it
    cannot encode documents.
    """

    max_active_dims = None

    def __init__(
        self,
        folder: str | Path,
        tokenizer: Any,
        weight: np.ndarray,
        *,
        prompts: dict[str, str] | None = None,
        module_config: dict[str, Any] | None = None,
    ) -> None:
        self.model_name_or_path = str(folder)
        self._tokenizer = tokenizer
        self.weight = np.asarray(weight, dtype=np.float32)
        self.prompts = dict(prompts or {})
        self._module_config = {**_STATIC_CONFIG, **(module_config or {})}

    @classmethod
    def from_folder(cls, folder: str | Path) -> StaticQueryEncoder | None:
        """The query side of the inference-free model saved in ``folder``; None when the folder is
        not one this class reads (see the module docstring)."""
        root = Path(folder)
        try:
            modules = _json(root / MODULES_FILE)
            if not (isinstance(modules, list) and len(modules) == 1 and _type_name(modules[0].get("type")) == _ROUTER):
                return None
            router_root = root / str(modules[0].get("path") or "")
            router = _json(router_root / ROUTER_CONFIG)
            route = (router.get("structure") or {}).get("query")
            if not isinstance(route, list) or len(route) != 1:
                return None
            module_id = str(route[0])
            if _type_name((router.get("types") or {}).get(module_id)) != _STATIC or "/" in module_id:
                return None
            module_dir = router_root / module_id
            module_config = _json(module_dir / CONFIG_FILE) if (module_dir / CONFIG_FILE).is_file() else {}
            if not isinstance(module_config, dict) or "path" in module_config:
                return None  # weights in an idf.json: read by the model loader
            if not (module_dir / WEIGHTS_FILE).is_file() or not (module_dir / TOKENIZER_FILE).is_file():
                return None
            st_config = _json(root / ST_MODEL_CONFIG) if (root / ST_MODEL_CONFIG).is_file() else {}
            if st_config.get("max_active_dims") is not None:
                return None
            tokenizer_config = _json(module_dir / TOKENIZER_CONFIG) if (module_dir / TOKENIZER_CONFIG).is_file() else {}
        except (OSError, ValueError, AttributeError):
            return None  # unreadable: the model loader says what is wrong with it
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights = load_file(str(module_dir / WEIGHTS_FILE))
        if set(weights) != {"weight"}:
            return None
        tokenizer = Tokenizer.from_file(str(module_dir / TOKENIZER_FILE))
        tokenizer.no_padding()
        limit = truncation_limit(tokenizer_config.get("model_max_length"))
        if limit:
            tokenizer.enable_truncation(max_length=limit)
        else:
            tokenizer.no_truncation()
        return cls(
            root,
            tokenizer,
            weights["weight"],
            prompts=st_config.get("prompts") or {},
            module_config={k: module_config[k] for k in _STATIC_CONFIG if k in module_config},
        )

    # -- what the index side reads of an encoder

    @property
    def tokenizer(self) -> _TokenNames:
        """The token names by id (for the vocabulary); not a transformers tokenizer."""
        return _TokenNames(self._tokenizer)

    def get_embedding_dimension(self) -> int:
        """The output dimension: one per vocabulary token."""
        return int(self.weight.shape[0])

    def fingerprint_modules(self, side: str) -> list[dict[str, Any]]:
        """The modules of ``side`` as a producer fingerprint records them (the query route only)."""
        if side != "query":
            raise EncodeArgumentError("a StaticQueryEncoder encodes queries only")
        return [{"type": _STATIC, "config": dict(self._module_config)}]

    # -- encoding

    def encode_query(
        self,
        inputs: str | Sequence[str],
        *,
        max_active_dims: int | None = None,
        **_: Any,
    ) -> SparseRows:
        """The query vectors of ``inputs``, as the loaded model's ``encode_query`` gives them: the
        ``query`` prompt, then the static weight of each distinct token. ``max_active_dims`` is
        refused (see the module docstring); batch size and progress bar keywords are accepted and
        not needed."""
        if max_active_dims is not None:
            raise EncodeArgumentError("max_active_dims needs the loaded model (torch.topk's order of ties)")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        prompt = next((self.prompts[n] for n in QUERY_PROMPT_NAMES if n in self.prompts), None)
        if prompt:
            texts = [prompt + t for t in texts]
        rows, cols = [], []
        for row, encoding in enumerate(self._tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids = np.unique(np.asarray(encoding.ids, dtype=np.int64))
            ids = ids[self.weight[ids] != 0]  # as a dense row's to_sparse() drops them
            rows.append(np.full(len(ids), row, dtype=np.int64))
            cols.append(ids)
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        row_ids = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return SparseRows(row_ids, col, self.weight[col], (len(texts), self.get_embedding_dimension()))

    def encode_document(self, *_: Any, **__: Any) -> Any:
        """Refused: the document side needs the model's transformer."""
        raise EncodeArgumentError(
            f"{self.model_name_or_path}: this query-only encoder cannot encode documents; load the model to do so"
        )


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _type_name(value: Any) -> str:
    return str(value or "").rpartition(".")[2]
