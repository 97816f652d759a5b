"""Merging encoders (``SparseEncoder.merge``) with mergekit's in-memory API, as sentence-transformers does.

The inputs are checked to be the same model up to their weights (module layout, module configs,
transformer config, tokenizer vocabulary), every distinct tensor is merged once by
``mergekit.merge_methods.merge_state_dicts`` (tied weights stay tied), and the result is a copy of
the first model carrying the merged tensors, in eval mode, with a fresh model card. mergekit is an
optional dependency: ``pip install sparsebridge[merge]``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from torch import nn

from ..errors import EncodeInputTypeError, MergeError, MissingDependencyError

__all__ = ["merge_models"]

MIN_MERGEKIT = "0.1.5"
_FLOAT_DTYPES = (None, torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Transformer config keys that record provenance or storage, not the architecture.
_IGNORED_CONFIG_KEYS = {"architectures", "transformers_version", "torch_dtype", "dtype"}


def _mergekit() -> Any:
    """mergekit's merge_methods module, or one clear error naming the extra to install."""
    from packaging.version import Version

    try:
        if Version(version("mergekit")) < Version(MIN_MERGEKIT):
            raise ImportError("mergekit is too old")
        from mergekit import merge_methods

        merge_methods.merge_state_dicts  # noqa: B018  (older releases lack it)
    except (ImportError, PackageNotFoundError, AttributeError) as exc:
        raise MissingDependencyError(
            "Model merging requires mergekit>=0.1.5 with merge_state_dicts. Install sparsebridge[merge]."
        ) from exc
    return merge_methods


def _as_dtype(name: str, value: Any) -> torch.dtype | None:
    dtype = getattr(torch, value, value) if isinstance(value, str) else value
    if dtype not in _FLOAT_DTYPES:
        raise MergeError(f"{name} must be None, float16, bfloat16, float32, or float64.")
    return dtype


def _module_kind(module: nn.Module) -> type:
    """The class a module is compared by: a masked-LM transformer counts as a transformer."""
    from .modules.transformer import MLMTransformer, Transformer

    return Transformer if type(module) is MLMTransformer else type(module)


def _module_config(module: nn.Module) -> dict[str, Any]:
    from .modules.splade_pooling import SpladePooling

    config = dict(module.get_config_dict())
    if isinstance(module, SpladePooling):  # derived from the vocabulary, not a setting
        config.pop("embedding_dimension", None)
    return config


def _config_diff(reference: dict[str, Any], config: dict[str, Any], index: int) -> str:
    """One line per key that differs from model 0's, both values shown (``<missing>`` where absent)."""
    lines = []
    for key in sorted(reference.keys() | config.keys()):
        if key in reference and key in config and reference[key] == config[key]:
            continue
        expected = repr(reference[key]) if key in reference else "<missing>"
        actual = repr(config[key]) if key in config else "<missing>"
        lines.append(f"  {key}: model 0={expected}, model {index}={actual}")
    return "\n".join(lines)


def _hf_config(model: Any) -> dict[str, Any]:
    return {k: v for k, v in model.config.to_dict().items() if k not in _IGNORED_CONFIG_KEYS and not k.startswith("_")}


def _same_tokenizer(first: Any, second: Any) -> bool:
    return (
        second is not None
        and first.get_vocab() == second.get_vocab()
        and getattr(first, "special_tokens_map", None) == getattr(second, "special_tokens_map", None)
    )


def check_mergeable(models: Sequence[Any]) -> None:
    """Raise ``MergeError`` unless every model equals the first one in everything but its weights.

    Checked: the torch backend, no PEFT adapters, no quantized modules, the same named modules of
    the same kinds with the same settings, the same transformer configs and tokenizer vocabularies.
    Prompts, dtypes and saved provenance may differ (the first model's prompts are kept).
    """
    from transformers import PreTrainedModel

    from .modules.base import Module

    reference = dict(models[0].named_modules())
    for index, model in enumerate(models):
        if model.backend != "torch":
            raise MergeError("Model merging requires the torch backend.")
        modules = dict(model.named_modules())
        if any(getattr(m, "peft_config", None) for m in modules.values()):
            raise MergeError(
                "Merging models with PEFT adapters is not supported. "
                "Merge the adapters into the base weights and unload them first."
            )
        if modules.keys() != reference.keys():
            raise MergeError(f"Model {index} has a different module structure from model 0.")
        for name, module in modules.items():
            other = reference[name]
            if _module_kind(module) is not _module_kind(other):
                raise MergeError(f"Module {name!r} has a different type in model {index}.")
            if getattr(module, "is_quantized", False) or getattr(module, "precision", None) == "int8":
                raise MergeError("Merging quantized models is not supported. Load unquantized models first.")
            if isinstance(module, Module):
                # Our modules' extra_repr is their config, derived values included: the config is compared
                # instead, without what a forward pass fills in (SPLADE's embedding_dimension).
                if _module_config(module) != _module_config(other):
                    raise MergeError(
                        f"Module {name!r} has a different configuration in model {index}:\n"
                        + _config_diff(_module_config(other), _module_config(module), index)
                    )
            elif module.extra_repr() != other.extra_repr():
                raise MergeError(
                    f"Module {name!r} has a different configuration in model {index}:\n"
                    f"  model 0: {other.extra_repr()}\n  model {index}: {module.extra_repr()}"
                )
            if isinstance(module, PreTrainedModel) and _hf_config(module) != _hf_config(other):
                raise MergeError(
                    f"Transformer {name!r} has a different configuration in model {index}:\n"
                    + _config_diff(_hf_config(other), _hf_config(module), index)
                )
            tokenizer = getattr(module, "tokenizer", None)
            if hasattr(tokenizer, "get_vocab") and not _same_tokenizer(tokenizer, getattr(other, "tokenizer", None)):
                raise MergeError(f"Tokenizer vocabulary or special tokens differ in model {index}, module {name!r}.")


def distinct_tensors(model: nn.Module, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One detached tensor per distinct parameter or buffer object (keyed by its first state-dict
    name), and for every state-dict name the name of the tensor it shares.

    Merging a tied weight once keeps it tied, whatever the method's randomness.
    """
    tensors: dict[str, torch.Tensor] = {}
    shared_as: dict[str, str] = {}
    first_name: dict[int, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():  # keep_vars: identity shows ties
        if not isinstance(tensor, torch.Tensor) or tensor.is_meta:
            raise MergeError(f"State entry {name!r} must be a materialized tensor.")
        owner = first_name.setdefault(id(tensor), name)
        shared_as[name] = owner
        if owner == name:
            tensors[name] = tensor.detach().to(device)
    return tensors, shared_as


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _base_index(inputs: list[Any], base_model: Any) -> int:
    """Where ``base_model`` is among the inputs (the same object, or the same path); len(inputs) if not."""
    for index, model in enumerate(inputs):
        if model is base_model or (_is_path(model) and _is_path(base_model) and str(model) == str(base_model)):
            return index
    return len(inputs)


@torch.no_grad()
def merge_models(
    cls: type,
    models: Sequence[Any],
    method: str = "linear",
    *,
    base_model: Any = None,
    parameters: dict[str, Any] | None = None,
    dtype: str | torch.dtype | None = torch.float32,
    out_dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    batch_options: Any = None,
    **load_kwargs: Any,
) -> Any:
    """What ``BaseEncoder.merge`` does (see there for the arguments); the inputs are not changed."""
    merge_methods = _mergekit()
    if _is_path(models) or len(models) < 2:
        raise MergeError("At least two models are required for merging.")
    dtype, out_dtype = _as_dtype("dtype", dtype), _as_dtype("out_dtype", out_dtype)
    device = torch.device(device)
    merge_method = merge_methods.get(method)
    if base_model is not None and merge_method.spec.contract.base == merge_methods.BasePolicy.IGNORED:
        raise MergeError(f"Method {method!r} does not use a base_model.")

    inputs = list(models)
    base = None
    if base_model is not None:
        base = _base_index(inputs, base_model)
        if base == len(inputs):  # a separate base gets the next index
            inputs.append(base_model)
    elif method == "slerp":
        base = 0  # SLERP interpolates from the first model
    merge_method.validate_inputs(list(range(len(inputs))), base)

    parameters = dict(parameters or {})
    names = {p.name for p in merge_method.spec.parameters}
    if "weight" in names:
        parameters.setdefault("weight", 1.0)
    if method == "slerp":
        parameters.setdefault("t", 0.5)

    loaded = [cls(str(m), device=device, **load_kwargs) if _is_path(m) else m for m in inputs]
    for model in loaded:
        if not isinstance(model, cls):
            raise EncodeInputTypeError(f"Expected a {cls.__name__} instance or model path, got {type(model).__name__}.")
    check_mergeable(loaded)

    states: dict[int, dict[str, torch.Tensor]] = {}
    ties = None
    for index, model in enumerate(loaded):
        states[index], model_ties = distinct_tensors(model, device)
        if ties is not None and model_ties != ties:
            raise MergeError(f"Model {index} has different state keys or tied weights from model 0.")
        ties = model_ties
    merged_tensors = merge_methods.merge_state_dicts(
        states,
        merge_method,
        base=base,
        parameters=parameters,
        dtype=dtype,
        out_dtype=out_dtype,
        batch_options=batch_options,
    )

    # deepcopy with a memo that maps each of the first model's tensors to its merged value: the copy
    # gets the merged weights without first copying the old ones.
    memo: dict[int, Any] = {}
    for name, tensor in loaded[0].state_dict(keep_vars=True).items():
        if id(tensor) in memo:
            continue
        value = merged_tensors.pop(ties[name]).clone()  # clone: a method may hand back input storage
        memo[id(tensor)] = (
            nn.Parameter(value, requires_grad=tensor.requires_grad)
            if isinstance(tensor, nn.Parameter)
            else value.requires_grad_(tensor.requires_grad)
        )
    merged = copy.deepcopy(loaded[0], memo).to(device=device)
    # The parents' card facts (training data, scores) do not describe the merged model.
    merged.model_card_data = merged.model_card_data_class(local_files_only=True)
    merged.model_card_data.register_model(merged)
    return merged.eval()
