"""PEFT adapters (LoRA, IA3...) on an encoder's Hugging Face model, with sentence-transformers' method names.

sentence-transformers forwards each call to the same-named method of the transformers model. This
mixin does the same work with peft's integration API (``peft.functional``) instead, because
transformers 5 refuses those methods unless peft >= 0.22 is installed, a version the package index
here does not have. The adapter state lives where transformers keeps it (``peft_config`` and
``_hf_peft_config_loaded`` on the transformers model), so an adapter that transformers loaded (a
saved adapter folder) and one added here are the same thing, and a folder saved here is the PEFT
layout sentence-transformers writes: ``adapter_config.json`` + ``adapter_model.safetensors``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers.integrations.peft import PeftAdapterMixin as TransformersPeftAdapterMixin

from ...errors import AdapterError

__all__ = ["PeftAdapterMixin", "adapter_base_model", "save_adapter"]

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# transformers and peft prefix adapter keys this way on disk (the PeftModel wrapper's path)
PEFT_PREFIX = "base_model.model."


def _peft_functional():
    try:
        from peft import functional
    except ImportError:
        raise AdapterError(
            "PEFT adapters need the peft package: pip install 'sparsebridge[peft]' (or pip install peft)"
        ) from None
    return functional


def _tuner_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    return [m for m in model.modules() if isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))]


def _loaded(model: torch.nn.Module) -> dict[str, Any]:
    """The adapters' configs, by name; raises when the model has none."""
    if not getattr(model, "_hf_peft_config_loaded", False) or not getattr(model, "peft_config", None):
        raise AdapterError("No adapter loaded. Please load an adapter first.")
    return model.peft_config


def _active(model: torch.nn.Module) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    _loaded(model)
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            active = module.active_adapter
            return [active] if isinstance(active, str) else list(active)
    return []


def adapter_base_model(name_or_path: str | os.PathLike) -> str | None:
    """The base model an adapter folder was trained on, or None if the folder is a whole model.

    A folder with an ``adapter_config.json`` and no ``config.json`` holds only adapter weights;
    its base model is named in the adapter config (as sentence-transformers and transformers read it).
    """
    path = Path(name_or_path)
    config = path / ADAPTER_CONFIG
    if not path.is_dir() or not config.is_file() or (path / "config.json").is_file():
        return None
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{config}: cannot read the adapter config ({exc})") from exc
    if not base:
        raise AdapterError(f"{config}: the adapter config names no base_model_name_or_path")
    return str(base)


def save_adapter(model: torch.nn.Module, path: str | os.PathLike, safe_serialization: bool = True) -> bool:
    """Save the active adapter of ``model`` into ``path`` in the PEFT layout; False if it has no adapter.

    This is what transformers' ``save_pretrained`` writes for a model with adapters: the adapter
    config and the adapter weights only, keys prefixed ``base_model.model.``.
    """
    if not getattr(model, "_hf_peft_config_loaded", False) or not getattr(model, "peft_config", None):
        return False
    active = _active(model)
    if len(active) != 1:
        raise AdapterError(
            f"cannot save {len(active)} active adapters ({', '.join(active)}) at once; "
            "call set_adapter(name) and save each adapter on its own"
        )
    functional = _peft_functional()
    state = functional.get_peft_model_state_dict(model, adapter_name=active[0])
    state = {PEFT_PREFIX + key: value.detach().contiguous() for key, value in state.items()}
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(state, str(folder / ADAPTER_WEIGHTS[0]), metadata={"format": "pt"})
    else:
        torch.save(state, folder / ADAPTER_WEIGHTS[1])
    model.peft_config[active[0]].save_pretrained(str(folder))
    return True


class PeftAdapterMixin:
    """Adapter methods of sentence-transformers' models, on the encoder's transformers model.

    The methods take the arguments of the transformers methods of the same name (see each
    docstring); ``has_peft_compatible_model`` says whether the encoder has a transformers model.
    """

    transformers_model: Any  # provided by the encoder

    def has_peft_compatible_model(self) -> bool:
        """True if the encoder's first transformer is a transformers model that can hold adapters."""
        return isinstance(self.transformers_model, TransformersPeftAdapterMixin)

    def check_peft_compatible_model(self) -> None:
        """Raise unless adapters can be added to this encoder."""
        if not self.has_peft_compatible_model():
            raise AdapterError(
                "PEFT methods are only supported for Sentence Transformer models that use the Transformer module."
            )

    def _peft_model(self) -> torch.nn.Module:
        self.check_peft_compatible_model()
        return self.transformers_model

    def add_adapter(self, *args: Any, **kwargs: Any) -> None:
        """Add a fresh adapter for training: ``add_adapter(adapter_config, adapter_name="default")``.

        ``adapter_config`` is a ``peft.PeftConfig`` (e.g. ``LoraConfig``); the new adapter becomes
        the active one.
        """
        _add_adapter(self._peft_model(), *args, **kwargs)

    def load_adapter(self, *args: Any, **kwargs: Any) -> None:
        """Load saved adapter weights: ``load_adapter(peft_model_id, adapter_name="default", ...)``.

        ``peft_model_id`` is a folder or Hub id holding ``adapter_config.json`` and the adapter
        weights; or pass ``peft_config`` and ``adapter_state_dict`` directly. Also takes
        ``is_trainable``, ``local_files_only``, ``token``, ``revision``, ``cache_dir`` and
        ``adapter_kwargs`` (passed to the adapter config's ``from_pretrained``).
        """
        _load_adapter(self._peft_model(), *args, **kwargs)

    def set_adapter(self, *args: Any, **kwargs: Any) -> None:
        """Use only the named adapter(s): ``set_adapter(adapter_name)`` (a name or a list of names)."""
        _set_adapter(self._peft_model(), *args, **kwargs)

    def disable_adapters(self) -> None:
        """Run the base model only, keeping the adapters attached."""
        model = self._peft_model()
        _loaded(model)
        for module in _tuner_layers(model):
            module.enable_adapters(False)

    def enable_adapters(self) -> None:
        """Run the active adapters again after ``disable_adapters``."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        model = self._peft_model()
        _loaded(model)
        for module in model.modules():
            if isinstance(module, BaseTunerLayer):
                module.enable_adapters(True)

    def active_adapters(self) -> list[str]:
        """The names of the active adapters."""
        return _active(self._peft_model())

    def active_adapter(self) -> str:
        """The name of the (first) active adapter."""
        active = self.active_adapters()
        if not active:
            raise AdapterError("No adapter is active. Call set_adapter(name) first.")
        return active[0]

    def get_adapter_state_dict(self, *args: Any, **kwargs: Any) -> dict:
        """The weights of one adapter: ``get_adapter_state_dict(adapter_name=None, state_dict=None)``.

        Without a name, the active adapter's; keys as peft saves them, without the adapter name.
        """
        return _adapter_state_dict(self._peft_model(), *args, **kwargs)

    def delete_adapter(self, *args: Any, **kwargs: Any) -> None:
        """Remove adapter(s) and their layers: ``delete_adapter(adapter_names)`` (a name or a list)."""
        _delete_adapter(self._peft_model(), *args, **kwargs)


# The argument lists below are transformers' (the methods above take *args, **kwargs as
# sentence-transformers' do), so a wrong call fails with Python's own TypeError.


def _add_adapter(model: torch.nn.Module, adapter_config: Any, adapter_name: str | None = None) -> None:
    functional = _peft_functional()
    from peft import PeftConfig

    name = adapter_name or "default"
    if not isinstance(adapter_config, PeftConfig):
        raise AdapterError(f"adapter_config should be an instance of PeftConfig. Got {type(adapter_config)} instead.")
    if getattr(model, "_hf_peft_config_loaded", False) and name in getattr(model, "peft_config", {}):
        raise AdapterError(f"Adapter with name {name} already exists. Please use a different name.")
    # what transformers and peft record as the adapter's base model
    adapter_config.base_model_name_or_path = model.__dict__.get("name_or_path", None)
    functional.inject_adapter_in_model(adapter_config, model, name)
    model._hf_peft_config_loaded = True
    _set_adapter(model, name)


def _load_adapter(
    model: torch.nn.Module,
    peft_model_id: str | os.PathLike | None = None,
    adapter_name: str | None = None,
    peft_config: Any = None,
    adapter_state_dict: dict[str, torch.Tensor] | None = None,
    low_cpu_mem_usage: bool = False,
    is_trainable: bool = False,
    hotswap: bool | str = "auto",
    local_files_only: bool = False,
    adapter_kwargs: dict[str, Any] | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    **_: Any,
) -> None:
    functional = _peft_functional()
    from peft import PeftConfig, get_peft_config
    from peft.utils import load_peft_weights

    if hotswap is True:
        raise AdapterError("hotswapping adapters is not supported; load the adapter under a new name")
    name = adapter_name or "default"
    if getattr(model, "_hf_peft_config_loaded", False) and name in getattr(model, "peft_config", {}):
        raise AdapterError(f"Adapter with name {name} already exists. Please use a different name.")
    if peft_model_id is None and (adapter_state_dict is None or peft_config is None):
        raise AdapterError(
            "You should either pass a `peft_model_id` or a `peft_config` and `adapter_state_dict` to load an adapter."
        )
    hub = {"token": token, "revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only}
    hub = {k: v for k, v in hub.items() if v not in (None, False)}
    source = str(peft_model_id) if peft_model_id is not None else "the given state dict"
    if peft_config is None:
        try:
            peft_config = PeftConfig.from_pretrained(str(peft_model_id), **hub, **(adapter_kwargs or {}))
        except (OSError, ValueError) as exc:
            raise AdapterError(f"no adapter config ({ADAPTER_CONFIG}) could be read from {source}: {exc}") from exc
    elif isinstance(peft_config, dict):
        peft_config = get_peft_config(peft_config)
    if adapter_state_dict is None:
        try:
            adapter_state_dict = load_peft_weights(str(peft_model_id), device="cpu", **hub)
        except (OSError, ValueError) as exc:
            raise AdapterError(f"no adapter weights could be read from {source}: {exc}") from exc
    state = {key.removeprefix(PEFT_PREFIX): value for key, value in adapter_state_dict.items()}
    peft_config.inference_mode = not is_trainable
    functional.inject_adapter_in_model(peft_config, model, name, low_cpu_mem_usage=low_cpu_mem_usage)
    model._hf_peft_config_loaded = True
    try:
        result = functional.set_peft_model_state_dict(model, state, adapter_name=name)
    except RuntimeError as exc:  # shapes that do not match this model
        _delete_adapter(model, name)
        raise AdapterError(f"adapter {source} does not fit this model: {str(exc).splitlines()[0]}") from exc
    # the state holds adapter weights only: every unexpected key is one, and the missing keys that
    # matter are this adapter's (the base model's own weights are never in it)
    unexpected = list(getattr(result, "unexpected_keys", []))
    missing = [k for k in getattr(result, "missing_keys", []) if f".{name}." in k]
    if unexpected or missing:
        _delete_adapter(model, name)
        example = (unexpected or missing)[0]
        raise AdapterError(
            f"adapter {source} does not fit this model ({len(missing)} adapter weights missing, "
            f"{len(unexpected)} unexpected, e.g. {example}); was it trained on another base model?"
        )
    if peft_config.inference_mode:
        model.eval()
        for module in _tuner_layers(model):
            module.requires_grad_(False)


def _set_adapter(model: torch.nn.Module, adapter_name: str | list[str]) -> None:
    configs = _loaded(model)
    names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
    missing = [n for n in names if n not in configs]
    if missing:
        raise AdapterError(f"Adapter(s) not found: {', '.join(missing)}; loaded adapters: {', '.join(configs)}")
    layers = _tuner_layers(model)
    if not layers:
        raise AdapterError("Did not succeed in setting the adapter: the model has no adapter layers.")
    for module in layers:
        module.set_adapter(adapter_name)


def _adapter_state_dict(
    model: torch.nn.Module, adapter_name: str | None = None, state_dict: dict | None = None
) -> dict[str, torch.Tensor]:
    functional = _peft_functional()
    _loaded(model)
    name = adapter_name if adapter_name is not None else _active(model)[0]
    return functional.get_peft_model_state_dict(model, state_dict=state_dict, adapter_name=name)


def _delete_adapter(model: torch.nn.Module, adapter_names: str | list[str]) -> None:
    functional = _peft_functional()
    configs = _loaded(model)
    names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
    missing = [n for n in names if n not in configs]
    if missing:
        raise AdapterError(f"The following adapter(s) are not present and cannot be deleted: {', '.join(missing)}")
    for name in names:
        prefix = f"{configs[name].peft_type.value.lower()}_"
        functional.delete_adapter(model, adapter_name=name, prefix=prefix)
        model.peft_config.pop(name, None)
    if not model.peft_config:
        del model.peft_config
        model._hf_peft_config_loaded = False
