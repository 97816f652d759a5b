"""L2 normalisation of an embedding (``sentence_embedding`` by default)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch.nn.functional as F

from .base import Module, filter_config, read_json


class Normalize(Module):
    """Scales each embedding to unit length (sentence-transformers' ``Normalize``)."""

    config_keys: ClassVar[tuple[str, ...]] = ("module_input_name", "module_output_name")
    st_type: ClassVar[str] = "sentence_transformers.base.modules.normalize.Normalize"
    # Older sentence-transformers versions list a Normalize module without writing its folder.
    needs_folder: ClassVar[bool] = False

    def __init__(self, module_input_name: str = "sentence_embedding", module_output_name: str | None = None) -> None:
        super().__init__()
        self.module_input_name = module_input_name
        self.module_output_name = module_output_name or module_input_name

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        x = features.get(self.module_input_name)
        if x is not None:
            features[self.module_output_name] = F.normalize(x, p=2, dim=-1)
        return features

    @classmethod
    def load(cls, input_path: str | os.PathLike, **kwargs: Any) -> Normalize:
        path = Path(input_path) / cls.config_file_name
        return cls(**filter_config(cls, read_json(path), path)) if path.is_file() else cls()
