"""A linear layer with an activation over an embedding (sentence-transformers' ``Dense``).

The activation is stored as its class path (``torch.nn.modules.activation.Tanh``); only torch.nn
activation classes are resolved, never arbitrary import paths.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .base import Module, load_module_weights, read_json

logger = logging.getLogger(__name__)


def activation_from_name(name: str | None) -> nn.Module:
    """The activation module a ``Dense`` config names (sentence-transformers' class paths; none: identity)."""
    if not name:
        return nn.Identity()
    class_name = name.rsplit(".", 1)[-1]
    cls = getattr(nn, class_name, None)
    if not name.startswith("torch.") or not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        logger.warning("activation %r is not a torch.nn module class; using Tanh", name)
        return nn.Tanh()
    return cls()


def activation_name(activation: nn.Module) -> str:
    """The class path a ``Dense`` config records for ``activation``."""
    cls = type(activation)
    return f"{cls.__module__}.{cls.__qualname__}"


class Dense(Module):
    """A linear layer with an activation on the sentence embedding (sentence-transformers' ``Dense``)."""

    config_keys: ClassVar[tuple[str, ...]] = (
        "in_features",
        "out_features",
        "bias",
        "activation_function",
        "module_input_name",
        "module_output_name",
        "use_residual",
    )
    st_type: ClassVar[str] = "sentence_transformers.base.modules.dense.Dense"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation_function: nn.Module | str | None = "torch.nn.modules.activation.Tanh",
        init_weight: torch.Tensor | None = None,
        init_bias: torch.Tensor | None = None,
        module_input_name: str = "sentence_embedding",
        module_output_name: str | None = None,
        use_residual: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.bias = bool(bias)
        if activation_function is None or isinstance(activation_function, str):
            activation_function = activation_from_name(activation_function)
        self.activation = activation_function
        self.linear = nn.Linear(self.in_features, self.out_features, bias=self.bias)
        self.module_input_name = module_input_name
        self.module_output_name = module_output_name or module_input_name
        self.use_residual = bool(use_residual)
        if self.use_residual and self.in_features != self.out_features:
            self.residual = nn.Linear(self.in_features, self.out_features, bias=False)
        if init_weight is not None:
            self.linear.weight = nn.Parameter(init_weight)
        if init_bias is not None and self.bias:
            self.linear.bias = nn.Parameter(init_bias)

    @property
    def activation_function(self) -> str:
        return activation_name(self.activation)

    def get_config_dict(self) -> dict[str, Any]:
        config = super().get_config_dict()
        if not self.use_residual:  # as sentence-transformers writes it, so older versions load it
            config.pop("use_residual")
        return config

    def get_sentence_embedding_dimension(self) -> int:
        return self.out_features

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        x = features[self.module_input_name]
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.in_features == self.out_features else self.residual(x))
        features[self.module_output_name] = out
        return features

    @classmethod
    def load(cls, input_path: str | os.PathLike, **kwargs: Any) -> Dense:
        path = Path(input_path)
        config = read_json(path / cls.config_file_name)
        if not isinstance(config, dict):
            raise ValueError(f"{path / cls.config_file_name}: expected a JSON object")
        accepted = set(inspect.signature(cls).parameters)
        module = cls(**{k: v for k, v in config.items() if k in accepted})
        load_module_weights(module, path)
        return module
