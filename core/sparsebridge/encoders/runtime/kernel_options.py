"""``use_kernels`` / ``kernel_config``: Hugging Face Hub compute kernels for the transformer backbone.

sentence-transformers 6.3 added both constructor options; they mean what they mean there. Kernels
are a transformers feature (``PreTrainedModel.set_use_kernels``, backed by the ``kernels``
package): we only route the options to it, at the same moments sentence-transformers does, so a
model behaves the same with either library in every situation, including the ones where no kernel
can be had (then transformers decides: it keeps the model's own layers, or raises where the
``kernels`` package is missing). The settings are runtime-only: nothing of them is saved.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from ...errors import ConfigError, MissingDependencyError

__all__ = ["KernelPlan", "apply_backbone_kernels", "plan_kernels"]


@dataclass
class KernelPlan:
    """What loading passes to transformers, and what is applied once the model is placed."""

    model_kwargs: dict[str, Any] | None
    # Enable kernels on every Hugging Face backbone after placement (with ``pending_config``).
    after_placement: bool
    pending_config: Any = None


def plan_kernels(
    backend: str,
    model_kwargs: dict[str, Any] | None,
    use_kernels: bool,
    kernel_config: Any,
    *,
    loads_from_path: bool,
    device_map: Any,
) -> KernelPlan:
    """Work out the load-time ``model_kwargs`` and the after-placement step for the kernel options.

    The top-level options fill ``model_kwargs["use_kernels"]`` / ``["kernel_config"]`` unless the
    caller set those there (the caller's dict is never changed). A custom ``kernel_config`` is applied
    after the model is placed, since transformers picks kernels for the device the model is on;
    with a ``device_map`` the placement happens during loading, so it goes to the load instead.
    """
    if use_kernels:
        if backend != "torch":
            raise ConfigError("use_kernels and kernel_config require the torch backend")
        _require_kernel_support()
        if kernel_config is not None:
            from transformers import KernelConfig

            if not isinstance(kernel_config, KernelConfig):
                raise TypeError("kernel_config must be a transformers.KernelConfig")
        model_kwargs = dict(model_kwargs or {})
        model_kwargs.setdefault("use_kernels", True)
        if kernel_config is not None and model_kwargs["use_kernels"]:
            model_kwargs.setdefault("kernel_config", kernel_config)
    pending = (model_kwargs or {}).get("kernel_config")
    after_placement = bool((model_kwargs or {}).get("use_kernels", False) or pending is not None)
    if loads_from_path and pending is not None:
        model_kwargs = dict(model_kwargs or {})
        if device_map is None:
            # No kernels during the load (transformers would otherwise pick its defaults for the CPU the
            # weights load on); the asked ones come once the model is placed.
            model_kwargs.update(use_kernels=False, kernel_config=None)
        else:
            model_kwargs["kernel_config"] = copy.deepcopy(pending)
            pending = None
    return KernelPlan(model_kwargs, after_placement, pending)


def _require_kernel_support() -> None:
    from transformers import PreTrainedModel, __version__

    if not hasattr(PreTrainedModel, "set_use_kernels"):
        raise MissingDependencyError(
            f"use_kernels / kernel_config need a transformers release with kernel support (this is {__version__}); "
            "upgrade transformers"
        )


def apply_backbone_kernels(model: nn.Module, plan: KernelPlan) -> None:
    """Enable kernels on every Hugging Face model inside ``model``, as the plan says."""
    if not plan.after_placement:
        return
    _require_kernel_support()
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.set_use_kernels(True, copy.deepcopy(plan.pending_config))
