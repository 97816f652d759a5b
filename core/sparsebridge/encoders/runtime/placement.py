"""Accelerate placement: models loaded with ``model_kwargs={"device_map": ...}`` or dispatched with
Accelerate hooks are placed by transformers / Accelerate, not by ``device=``.

Such a model runs its inputs on the execution device of its first placement hook (found once and
cached; ``clear_placement_cache`` forgets it after hooks are attached, replaced or removed), and
``encode(device=...)`` does not move it. The small modules around the backbone (pooling, sparse
heads) are aligned to that device and the backbone's dtype, as sentence-transformers does.
"""

from __future__ import annotations

import logging
from functools import cached_property
from itertools import chain
from typing import Any

import torch
from torch import nn

__all__ = ["AcceleratePlacementMixin", "check_torch_device", "device_problem"]

logger = logging.getLogger(__name__)


def device_problem(device: str | torch.device) -> str | None:
    """Why this torch build cannot use ``device`` (None: it can), found before torch fails deep
    inside a move or a forward pass with a bare AssertionError or RuntimeError."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        return f"not a torch device ({' '.join(str(exc).split())}); use e.g. 'cpu' or 'cuda:0'"
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None), "mps": torch.backends.mps}.get(dev.type)
    if dev.type != "cpu" and (backend is None or not backend.is_available()):
        return (
            f"this torch build ({torch.__version__}) cannot use {dev.type} here; use 'cpu' "
            f"or install a torch with {dev.type} support"
        )
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        return f"there are {count()} {dev.type} devices (0 to {count() - 1})"
    return None


def check_torch_device(device: str | torch.device) -> None:
    """Raise :class:`DeviceError` naming ``device`` when this torch build cannot use it."""
    from ...errors import DeviceError

    problem = device_problem(device)
    if problem is not None:
        raise DeviceError(f"device {str(device)!r}: {problem}")


def _placement_hook(hook: Any) -> Any:
    """The hook with an ``execution_device``: ``hook`` itself or one inside a ``SequentialHook``."""
    if getattr(hook, "execution_device", None) is not None:
        return hook
    for child in getattr(hook, "hooks", ()):
        if (found := _placement_hook(child)) is not None:
            return found
    return None


class AcceleratePlacementMixin:
    """Device placement delegated to a ``device_map`` or to Accelerate hooks (for ``BaseEncoder``)."""

    # The device_map the model was loaded with, if any (set per instance by the constructor).
    _device_map: str | dict[str, Any] | None = None
    _modules_placed: bool = False

    def clear_placement_cache(self) -> None:
        """Forget the cached Accelerate hook and align the auxiliary modules again on the next encode.

        Call it after attaching, replacing or removing Accelerate hooks on a loaded model, or after
        adding modules to a model placed by a ``device_map``.
        """
        self.__dict__.pop("_accelerate_placement_hook", None)
        self._modules_placed = False

    @cached_property
    def _accelerate_placement_hook(self) -> Any:
        """The first Accelerate hook (module order) that names an execution device, or None."""
        for module in self.modules():
            hook = module.__dict__.get("_hf_hook")
            if hook is not None and (found := _placement_hook(hook)) is not None:
                return found
        return None

    @property
    def _placement_is_delegated(self) -> bool:
        return self._device_map is not None or self._accelerate_placement_hook is not None

    def _execution_device(self) -> torch.device | None:
        """Where a hooked model runs: its first placement hook's execution device (None without hooks)."""
        device = getattr(self._accelerate_placement_hook, "execution_device", None)
        return None if device is None else torch.device(device)

    def _place_modules(self) -> None:
        """Move the modules no hook or device map controls to the model's device and the dtype of its
        first module; the backbone and dispatched submodules stay where Accelerate put them."""
        from transformers import PreTrainedModel

        device = self.device
        first = next(self[0].parameters(), None)
        dtype = first.dtype if first is not None else None
        protected: set[nn.Module] = set()

        def protect(module: nn.Module, hook: Any) -> None:
            if getattr(hook, "execution_device", None) is not None:
                protected.update(module.modules() if getattr(hook, "place_submodules", True) else [module])
            for child in getattr(hook, "hooks", ()):
                protect(module, child)

        modules = list(self.modules())
        for module in modules:
            if self._device_map is not None and isinstance(module, PreTrainedModel):
                protected.update(module.modules())
            protect(module, module.__dict__.get("_hf_hook"))

        def convert(tensor: torch.Tensor) -> torch.Tensor:
            floating = tensor.is_floating_point() or tensor.is_complex()
            return tensor.to(device=device, dtype=dtype if floating else None)

        for module in reversed(modules):
            if module not in protected:
                # recurse=False: each module moves only its own tensors; children are visited themselves
                nn.Module._apply(module, convert, recurse=False)

    @torch.inference_mode(False)
    def _resolve_inference_device(self, device: str | torch.device | None) -> torch.device:
        """The device inputs go to. A delegated model is never moved: ``device`` is ignored with a
        warning, and the auxiliary modules are aligned once. Otherwise the model moves to ``device``."""
        if self._placement_is_delegated:
            if device is not None:
                logger.warning(
                    "Ignoring `device=%s`, as a device map or Accelerate hooks control this model's placement. %s",
                    device,
                    "To choose the device yourself, reload the model without a `device_map` or Accelerate hooks."
                    if self._accelerate_placement_hook is not None
                    else "Use `model.to(device)` to override it.",
                )
            if not self._modules_placed:
                self._place_modules()
                self._modules_placed = True
            return self.device
        if device is not None:
            check_torch_device(device)
        if device is not None and torch.device(device) != self.device:
            self.to(device)
        return self.device

    def _check_movable(self) -> None:
        """Refuse to move a hooked model whose weights Accelerate offloaded (they live on ``meta``)."""
        if self._accelerate_placement_hook is not None and any(
            t.device.type == "meta" for t in chain(self.parameters(), self.buffers())
        ):
            raise RuntimeError("You can't move a model that has some modules offloaded to cpu or disk.")

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """``nn.Module.to``; moving to a device overrides the ``device_map`` the model was loaded with."""
        target = args[0] if args else kwargs.get("device", kwargs.get("tensor"))
        moves = target is not None and not isinstance(target, torch.dtype)
        if moves and self._accelerate_placement_hook is not None:
            logger.warning("You shouldn't move a model that is dispatched using accelerate hooks.")
        result = super().to(*args, **kwargs)
        if moves:
            self._device_map = None
        return result

    def cpu(self) -> Any:
        """Move the model to the CPU (overriding its ``device_map``)."""
        result = super().cpu()
        self._device_map = None
        return result

    def cuda(self, device: int | torch.device | None = None) -> Any:
        """Move the model to a CUDA device (overriding its ``device_map``)."""
        result = super().cuda(device=device)
        self._device_map = None
        return result

    def _apply(self, *args: Any, **kwargs: Any) -> Any:
        # Every mover (to, cpu, half...) ends here, past the guards Accelerate puts on the backbone.
        self._check_movable()
        return super()._apply(*args, **kwargs)
