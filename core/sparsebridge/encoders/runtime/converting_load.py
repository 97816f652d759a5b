"""Loading a safetensors checkpoint into another dtype without mapping the whole file.

``from_pretrained`` memory-maps the checkpoint and converts tensor by tensor, but every page it
reads stays mapped (and counted in the process's memory) until the load ends: a BERT-base fp32
file loaded as bf16 peaks at the fp32 file plus the bf16 copy, 1.6x what the model needs. With
safetensors' ``pread`` backend each tensor is read into memory of its own, converted, and freed,
so the peak is the converted model plus one source tensor. transformers still does the loading
(key renames, tied weights, missing keys): we only hand it lazily read tensors as its
``state_dict``, the way it loads from its own file pointers.

Only the plain case takes this path: a local folder of safetensors files whose dtype differs from
the one asked for, no Accelerate placement, quantization, adapter or remote code. Everything else,
and a checkpoint already in the asked dtype (mapped without any copy), goes through the usual
``from_pretrained``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import transformers

logger = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
# model_kwargs this path passes on as they are; any other key sends the load to from_pretrained.
PASSED_KWARGS = frozenset({"dtype", "torch_dtype", "attn_implementation"})
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder (one file, or the shards its index lists), or []."""
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    if (folder / SHARD_INDEX).is_file():
        weight_map = json.loads((folder / SHARD_INDEX).read_text(encoding="utf-8")).get("weight_map", {})
        shards = sorted({folder / name for name in weight_map.values()})
        if shards and all(p.is_file() for p in shards):
            return shards
    return []


def load_converted(auto_cls: Any, folder: str | Path, config: Any, model_args: dict[str, Any]) -> Any | None:
    """``auto_cls.from_pretrained(folder, config=config, **model_args)`` with a peak of the converted
    model plus one tensor, or None where this case is not one we take (then call from_pretrained)."""
    folder = Path(folder)
    if model_args.get("trust_remote_code"):
        return None
    model_args = {k: v for k, v in model_args.items() if k != "trust_remote_code"}
    dtype = model_args.get("dtype", model_args.get("torch_dtype"))
    if not isinstance(dtype, torch.dtype) or not set(model_args) <= PASSED_KWARGS:
        return None
    if int(transformers.__version__.split(".")[0]) < 5:  # 4.x wants materialised tensors as state_dict
        return None
    if getattr(config, "quantization_config", None) is not None or getattr(config, "auto_map", None):
        return None
    # transformers loads an adapter_config.json next to the weights by itself; that stays its job
    if not folder.is_dir() or (folder / ADAPTER_CONFIG).is_file():
        return None
    files = checkpoint_files(folder)
    if not files:
        return None
    try:
        model_cls = auto_cls._model_mapping[type(config)]
    except (KeyError, AttributeError):
        return None
    from safetensors import safe_open

    try:
        handles = [safe_open(str(f), framework="pt", backend="pread") for f in files]
    except TypeError:  # safetensors older than its pread backend
        return None
    try:
        # safe_open is not iterable: keys() it is
        state_dict = {key: handle.get_slice(key) for handle in handles for key in handle.keys()}  # noqa: SIM118
        stored = {_SAFETENSORS_DTYPES.get(s.get_dtype()) for s in state_dict.values()}
        if stored == {dtype}:  # nothing to convert: mapping the file shares its pages, no copy at all
            return None
        logger.debug("%s: reading %d tensors one by one into %s", folder, len(state_dict), dtype)
        model = model_cls.from_pretrained(None, config=config, state_dict=state_dict, **model_args)
    finally:
        for handle in handles:
            handle.__exit__(None, None, None)
    # With no name given, from_pretrained records None: PEFT and saved configs read it as the base model.
    model.name_or_path = model.config._name_or_path = str(folder)
    return model
