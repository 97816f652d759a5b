"""Finding a model (local folder or Hugging Face Hub) and building its modules.

Two layouts are understood:

* the sentence-transformers layout: ``modules.json`` lists the modules in order with their folder
  and class, ``config_sentence_transformers.json`` holds prompts and the similarity function;
* a bare Hugging Face checkpoint: a masked LM (``*ForMaskedLM`` in ``config.json``) becomes a
  masked-LM transformer followed by ``SpladePooling(max, relu)``, any other model a CSR model
  (transformer + mean pooling + ``SparseAutoEncoder``), as in sentence-transformers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import ModelLoadError
from .layout import MODULES_FILE, ST_MODEL_CONFIG
from .modules import Module
from .modules.base import read_json
from .modules.pooling import Pooling
from .modules.registry import module_class
from .modules.sparse_auto_encoder import SparseAutoEncoder
from .modules.sparse_static_embedding import SparseStaticEmbedding
from .modules.splade_pooling import SpladePooling
from .modules.transformer import MLMTransformer, Transformer

logger = logging.getLogger(__name__)

# Where load_modules hands the modules.json "kwargs" entries over (in memory only, never saved).
MODULE_KWARGS_KEY = "_module_kwargs"
# Weights in formats this library never reads; skipping them keeps Hub downloads small.
_IGNORED_ON_HUB = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "flax_model*", "tf_model*"]


def default_cache_folder() -> str | None:
    """SENTENCE_TRANSFORMERS_HOME if set, else huggingface_hub's own default (HF_HOME/hub)."""
    return os.environ.get("SENTENCE_TRANSFORMERS_HOME") or None


def resolve_model_path(
    model_name_or_path: str | os.PathLike,
    cache_folder: str | None = None,
    revision: str | None = None,
    token: bool | str | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local folder as is; otherwise a Hub repository id, downloaded (or found in the cache)."""
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(model_name_or_path)
    if path.exists():
        raise ModelLoadError(f"model path {name!r} is a file; expected a model folder or a Hub id")
    if name.startswith((".", "/", "~")) or os.sep in name.replace("/", "", 1):
        raise ModelLoadError(f"model folder {name!r} does not exist")
    try:
        local = snapshot_download(
            repo_id=name,
            revision=revision,
            cache_dir=cache_folder or default_cache_folder(),
            token=token,
            local_files_only=local_files_only,
            ignore_patterns=_IGNORED_ON_HUB,
        )
    except HFValidationError as exc:
        raise ModelLoadError(f"{name!r} is neither a model folder nor a valid Hub id: {exc}") from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(f"model {name!r} not found on the Hub (or it is private: pass token=)") from exc
    except RevisionNotFoundError as exc:
        raise ModelLoadError(f"model {name!r} has no revision {revision!r}") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelLoadError(
            f"model {name!r} is not in the cache and downloading is off (local_files_only or "
            f"HF_HUB_OFFLINE=1), or the Hub is unreachable"
        ) from exc
    except OSError as exc:  # network errors surface as OSError subclasses
        raise ModelLoadError(f"could not download model {name!r}: {exc}") from exc
    return Path(local)


def load_modules(
    path: Path,
    *,
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    tokenizer_kwargs: dict[str, Any] | None = None,
    config_kwargs: dict[str, Any] | None = None,
    cache_folder: str | None = None,
    bare_checkpoint: Callable[[Path, dict[str, Any]], list[Module]] | None = None,
    model_type: str = "",
    convert: Callable[[list[Module]], list[Module]] | None = None,
) -> tuple[list[Module], dict[str, Any]]:
    """Build the module list of the model in ``path`` and return it with the model config.

    ``bare_checkpoint(path, hf_kwargs)`` builds the modules of a folder without modules.json; by
    default a masked-LM checkpoint becomes a SPLADE model.

    With ``convert``, a save of another model family is adapted as sentence-transformers does: a
    ``SentenceTransformer`` save (the default for saves that name no ``model_type``) keeps its
    modules and settings and goes through ``convert`` (a sparse encoder appends a CSR head);
    any other family's save (``CrossEncoder``, ``MultiVectorEncoder``...) is rebuilt from its
    checkpoint with ``bare_checkpoint``, and its prompts and similarity are dropped, since they
    described a different model.
    """
    hf_kwargs = {
        "model_args": {**(model_kwargs or {}), "trust_remote_code": trust_remote_code},
        "tokenizer_args": {**(tokenizer_kwargs or {}), "trust_remote_code": trust_remote_code},
        "config_args": {**(config_kwargs or {}), "trust_remote_code": trust_remote_code},
        "cache_dir": cache_folder,
    }
    model_config: dict[str, Any] = {}
    if (path / ST_MODEL_CONFIG).is_file():
        model_config = read_json(path / ST_MODEL_CONFIG)
        if not isinstance(model_config, dict):
            raise ValueError(f"{path / ST_MODEL_CONFIG}: expected a JSON object")

    modules_file = path / MODULES_FILE
    saved_type = model_config.get("model_type") or "SentenceTransformer"
    foreign = bool(model_type) and convert is not None and saved_type != model_type
    if modules_file.is_file() and foreign and saved_type != "SentenceTransformer" and bare_checkpoint is not None:
        return bare_checkpoint(path, hf_kwargs), {}
    if modules_file.is_file():
        entries = read_json(modules_file)
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{modules_file}: expected a non-empty JSON list of modules")
        modules = []
        # Per-module keyword arguments some sentence-transformers saves declare ("kwargs" entries).
        module_kwargs = {
            str(entry.get("name", idx)): list(entry["kwargs"])
            for idx, entry in enumerate(entries)
            if isinstance(entry, dict) and isinstance(entry.get("kwargs"), list)
        }
        if module_kwargs:
            model_config = {**model_config, MODULE_KWARGS_KEY: module_kwargs}
        for idx, entry in enumerate(entries):
            if not isinstance(entry, dict) or "type" not in entry:
                raise ValueError(f"{modules_file}: module {idx} has no 'type'")
            cls = module_class(entry["type"], modules_file, idx, path, trust_remote_code)
            module_path = path / entry.get("path", "")
            if not module_path.is_dir() and getattr(cls, "needs_folder", True):
                raise FileNotFoundError(
                    f"{modules_file}: module {idx} ({entry['type']}) points to missing folder {module_path}"
                )
            modules.append(cls.load(module_path, **hf_kwargs))
        if foreign:
            modules = convert(modules)  # type: ignore[misc]
        return modules, model_config

    return (bare_checkpoint or sparse_checkpoint_modules)(path, hf_kwargs), model_config


# sentence-transformers' CSR head for a bare non-masked-LM checkpoint: 4x the hidden size, k=256.
CSR_EXPANSION, CSR_DEFAULT_K, CSR_DEFAULT_K_AUX = 4, 256, 512


def sparse_checkpoint_modules(path: Path, hf_kwargs: dict[str, Any]) -> list[Module]:
    """The modules of a sparse encoder built on a bare Hugging Face checkpoint.

    A masked-LM checkpoint (``*ForMaskedLM`` in ``config.json``) becomes SPLADE: the masked-LM
    transformer + ``SpladePooling(max, relu)``. Any other checkpoint becomes CSR, as in
    sentence-transformers: transformer + mean ``Pooling`` + an (untrained) ``SparseAutoEncoder``
    with 4x the hidden size and k=256 (capped at that size for very small models).
    """
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{path} holds neither {MODULES_FILE} (sentence-transformers layout) nor config.json "
            f"(a Hugging Face checkpoint)"
        )
    architectures = read_json(config_file).get("architectures") or []
    if any(str(a).endswith("ForMaskedLM") for a in architectures):
        transformer = MLMTransformer(path, **hf_kwargs)
        pooling = SpladePooling("max", "relu", embedding_dimension=transformer.get_word_embedding_dimension())
        return [transformer, pooling]
    logger.info("%s: no masked-LM architecture in %s, building a CSR model", path, architectures)
    transformer = Transformer(path, transformer_task="feature-extraction", **hf_kwargs)
    dim = transformer.get_word_embedding_dimension()
    pooling = Pooling(dim, "mean")
    hidden = CSR_EXPANSION * dim
    sae = SparseAutoEncoder(dim, hidden_dim=hidden, k=min(CSR_DEFAULT_K, hidden), k_aux=CSR_DEFAULT_K_AUX)
    return [transformer, pooling, sae]


def append_csr_head(modules: list[Module]) -> list[Module]:
    """A dense sentence-transformers model loaded as a sparse encoder gets a ``SparseAutoEncoder``
    on top (4x its output size, k = a quarter of it), as sentence-transformers does.

    Modules that already produce sparse vectors are left alone (a sparse save without
    ``model_type``, as some older tools wrote).
    """
    sparse_types = (SpladePooling, SparseStaticEmbedding, SparseAutoEncoder)
    if any(isinstance(sub, sparse_types) for module in modules for sub in module.modules()):
        return modules
    dim = next((d for m in reversed(modules) if (d := m.get_embedding_dimension())), None)
    if not dim:
        raise ValueError(
            "Cannot determine the embedding dimension from the loaded modules. "
            "At least one module must have a `get_embedding_dimension` method."
        )
    logger.info("dense sentence-transformers model: appending a SparseAutoEncoder (CSR)")
    return [*modules, SparseAutoEncoder(dim, hidden_dim=4 * dim, k=dim // 4, k_aux=dim // 2)]


__all__ = [
    "ModelLoadError",
    "Transformer",
    "append_csr_head",
    "sparse_checkpoint_modules",
    "default_cache_folder",
    "load_modules",
    "module_class",
    "resolve_model_path",
]
