"""The base of every model module: a torch module that saves and loads its own config.

A model is a sequence of these modules (see ``SparseEncoder``). On disk each module lives in its
own folder (``1_SpladePooling/``...) holding ``config.json`` plus whatever weights it has; the
folder layout and the ``modules.json`` index follow sentence-transformers' so that either library
loads what the other saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import nn

from ..layout import CONFIG_FILE, LEGACY_WEIGHTS_FILE, WEIGHTS_FILE


class Module(nn.Module):
    """A model module with a JSON config.

    Subclasses list the constructor arguments that make up their config in ``config_keys`` and
    name the class sentence-transformers knows them by in ``st_type`` (written to modules.json).
    """

    config_keys: ClassVar[tuple[str, ...]] = ()
    config_file_name: ClassVar[str] = CONFIG_FILE
    st_type: ClassVar[str] = ""
    # The first module of a sentence-transformers model lives in the model's root folder.
    save_in_root: ClassVar[bool] = False

    def get_config_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.config_keys}

    def save(self, output_path: str | os.PathLike, safe_serialization: bool = True) -> None:
        path = Path(output_path)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / self.config_file_name, self.get_config_dict())
        state = self.state_dict()
        if state:
            save_module_weights(self, path, safe_serialization)

    @classmethod
    def load(cls, input_path: str | os.PathLike, **kwargs: Any) -> Module:
        path = Path(input_path)
        config = read_json(path / cls.config_file_name)
        module = cls(**filter_config(cls, config, path / cls.config_file_name))
        if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
            load_module_weights(module, path)
        return module

    def extra_repr(self) -> str:
        return json.dumps(self.get_config_dict())

    def get_embedding_dimension(self) -> int | None:
        """The size of this module's output embedding, if it changes it (sentence-transformers 6 name)."""
        for name in ("get_sentence_embedding_dimension", "get_word_embedding_dimension"):
            method = getattr(self, name, None)
            if callable(method):
                return method()
        return None


def kwargs_for(module: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a model-level call that ``module`` declares in ``forward_kwargs``.

    A module gets only what it asks for, as in sentence-transformers, so a keyword meant for one
    module (``max_active_dims``, ``task``) never reaches another whose ``forward`` does not take it.
    """
    wanted = getattr(module, "forward_kwargs", ())
    return {key: value for key, value in kwargs.items() if key in wanted}


def filter_config(cls: type[Module], config: dict[str, Any], source: Path) -> dict[str, Any]:
    """Keep the keys the class understands; unknown keys written by newer versions are ignored,
    but a config that is not a JSON object is an error naming the file."""
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
    return {k: v for k, v in config.items() if k in cls.config_keys}


def read_json(path: Path) -> Any:
    """A module's JSON config file, read (a missing file is a FileNotFoundError naming it)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing model file: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def write_json(path: Path, data: Any) -> None:
    """Write a module's JSON config file (sentence-transformers' indentation)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=4, ensure_ascii=False)
        fh.write("\n")


def save_module_weights(module: nn.Module, path: Path, safe_serialization: bool = True) -> None:
    """Write a module's weights (safetensors, or torch's format when ``safe_serialization`` is off)."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    if safe_serialization:
        save_safetensors(state, str(path / WEIGHTS_FILE))
    else:
        torch.save(state, path / LEGACY_WEIGHTS_FILE)


def load_module_weights(module: nn.Module, path: Path) -> None:
    """Load weights saved by either library; pickle files only with ``weights_only=True``."""
    if (path / WEIGHTS_FILE).is_file():
        state = load_safetensors(str(path / WEIGHTS_FILE))
    elif (path / LEGACY_WEIGHTS_FILE).is_file():
        state = torch.load(path / LEGACY_WEIGHTS_FILE, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(
            f"missing weights for module {type(module).__name__} in {path}: "
            f"expected {WEIGHTS_FILE} (or {LEGACY_WEIGHTS_FILE})"
        )
    module.load_state_dict(state)
