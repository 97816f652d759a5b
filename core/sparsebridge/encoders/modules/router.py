"""``Router``: different module sequences per task, e.g. an inference-free query route
(``SparseStaticEmbedding``) next to a masked-LM document route (``Transformer`` + ``SpladePooling``).

``encode_query`` / ``encode_document`` pass ``task="query"`` / ``"document"``; plain ``encode`` uses
the default route. On disk it follows sentence-transformers: ``router_config.json`` with ``types``
(module id -> class), ``structure`` (route -> module ids) and ``parameters``, and one folder per
module id (``query_0_SparseStaticEmbedding/``...). The legacy ``Asym`` layout (the same JSON in
``config.json``) loads too.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from ..layout import ROUTER_CONFIG
from .base import Module, kwargs_for, read_json, write_json
from .registry import module_class


class Router(Module):
    """Routes each input to a sub-model by task (``query`` / ``document``): inference-free models run
    a static embedding on queries and the transformer on documents (sentence-transformers' ``Router``)."""

    config_keys: ClassVar[tuple[str, ...]] = ("default_route", "allow_empty_key", "route_mappings")
    config_file_name: ClassVar[str] = ROUTER_CONFIG
    st_type: ClassVar[str] = "sentence_transformers.base.modules.router.Router"
    forward_kwargs: ClassVar[tuple[str, ...]] = ("task", "modality")
    # An input module: as the first module of a model it lives in the model root, as in sentence-transformers.
    save_in_root: ClassVar[bool] = True

    def __init__(
        self,
        sub_modules: dict[str, list[nn.Module]],
        default_route: str | None = None,
        allow_empty_key: bool = True,
        route_mappings: dict[tuple[str | None, Any], str] | None = None,
    ) -> None:
        super().__init__()
        if not sub_modules:
            raise ValueError("a Router needs at least one route")
        if default_route is not None and default_route not in sub_modules:
            raise ValueError(f"default route {default_route!r} is not among the routes {list(sub_modules)}")
        for target in (route_mappings or {}).values():
            if target not in sub_modules:
                raise ValueError(f"route_mappings points to unknown route {target!r}; routes: {list(sub_modules)}")
        self.sub_modules = nn.ModuleDict({name: nn.Sequential(*mods) for name, mods in sub_modules.items()})
        if allow_empty_key and default_route is None:
            default_route = next(iter(sub_modules))
        self.default_route = default_route
        self.allow_empty_key = allow_empty_key
        self.route_mappings = dict(route_mappings or {})

    @classmethod
    def for_query_document(
        cls,
        query_modules: list[nn.Module],
        document_modules: list[nn.Module],
        default_route: str | None = "document",
        allow_empty_key: bool = True,
    ) -> Router:
        return cls({"query": query_modules, "document": document_modules}, default_route, allow_empty_key)

    # -- routing --------------------------------------------------------------------------------
    def route(self, task: str | None = None, modality: Any = None) -> str:
        """The route for a task: route_mappings first, then a route named like the task, then the default."""
        for key in ((task, modality), (task, None), (None, modality), (None, None)):
            if key in self.route_mappings:
                return self.route_mappings[key]
        if task is not None:
            if task in self.sub_modules:
                return task
            raise ValueError(f"no route for task {task!r}; routes: {list(self.sub_modules)}")
        if self.default_route is None:
            raise ValueError(f"no task given and no default route; pass task= one of {list(self.sub_modules)}")
        return self.default_route

    def tokenize(self, texts: list[str], task: str | None = None, **kwargs: Any) -> dict[str, Any]:
        features = self.sub_modules[self.route(task)][0].tokenize(texts, **kwargs)
        features["task"] = task
        return features

    def preprocess(
        self, inputs: list[Any], prompt: str | None = None, task: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The features of the route's input module for ``task`` (see ``route``)."""
        features = self.sub_modules[self.route(task)][0].preprocess(inputs, prompt=prompt, **kwargs)
        features["task"] = task
        return features

    def forward(self, features: dict[str, Any], task: str | None = None, **kwargs: Any) -> dict[str, Any]:
        task = task if task is not None else features.get("task")
        modality = kwargs.get("modality") or features.get("modality")
        route_kwargs = {**kwargs, "task": task}
        for module in self.sub_modules[self.route(task, modality)]:
            # Each module of the route gets the keywords it declares; a nested router gets them all.
            passed = route_kwargs if isinstance(module, Router) else kwargs_for(module, route_kwargs)
            features = module(features, **passed)
        return features

    # -- properties ------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        for modules in self.sub_modules.values():
            tokenizer = getattr(modules[0], "tokenizer", None)
            if tokenizer is not None:
                return tokenizer
        return None

    @property
    def max_seq_length(self) -> int | None:
        limits = [getattr(m[0], "max_seq_length", None) for m in self.sub_modules.values()]
        limits = [x for x in limits if x]
        return max(limits) if limits else None

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        for modules in self.sub_modules.values():
            if hasattr(modules[0], "max_seq_length"):
                modules[0].max_seq_length = value

    def get_sentence_embedding_dimension(self) -> int | None:
        for modules in self.sub_modules.values():
            for module in reversed(list(modules)):
                for attr in ("get_sentence_embedding_dimension", "get_word_embedding_dimension"):
                    if hasattr(module, attr) and getattr(module, attr)():
                        return int(getattr(module, attr)())
                if getattr(module, "embedding_dimension", None):
                    return int(module.embedding_dimension)
        return None

    # -- persistence ----------------------------------------------------------------------------
    def get_config_dict(self) -> dict[str, Any]:
        mappings = {str(key): value for key, value in self.route_mappings.items()}
        return {
            "default_route": self.default_route,
            "allow_empty_key": self.allow_empty_key,
            "route_mappings": mappings,
        }

    def save(self, output_path: str | os.PathLike, safe_serialization: bool = True) -> None:
        root = Path(output_path)
        root.mkdir(parents=True, exist_ok=True)
        ids: dict[int, str] = {}
        types: dict[str, str] = {}
        structure: dict[str, list[str]] = {}
        for name, modules in self.sub_modules.items():
            structure[name] = []
            for idx, module in enumerate(modules):
                if id(module) not in ids:  # a module shared by several routes is saved once
                    if not isinstance(module, Module) or not module.st_type:
                        raise TypeError(f"route {name!r}: {type(module).__name__} is not a sparsebridge Module")
                    module_id = f"{name}_{idx}_{type(module).__name__}"
                    ids[id(module)] = module_id
                    types[module_id] = module.st_type
                    module.save(root / module_id, safe_serialization=safe_serialization)
                structure[name].append(ids[id(module)])
        write_json(root / ROUTER_CONFIG, {"types": types, "structure": structure, "parameters": self.get_config_dict()})

    @classmethod
    def load(cls, input_path: str | os.PathLike, **kwargs: Any) -> Router:
        root = Path(input_path)
        config_file = root / ROUTER_CONFIG if (root / ROUTER_CONFIG).is_file() else root / "config.json"
        config = read_json(config_file)
        if not isinstance(config, dict) or not isinstance(config.get("types"), dict) or "structure" not in config:
            raise ValueError(f"{config_file}: expected a router config with 'types' and 'structure'")
        loaded: dict[str, nn.Module] = {}
        for idx, (module_id, type_name) in enumerate(config["types"].items()):
            if Path(module_id).is_absolute() or ".." in Path(module_id).parts:
                raise ValueError(f"{config_file}: module id {module_id!r} is not a plain folder name")
            module_cls = module_class(type_name, config_file, idx)
            loaded[module_id] = module_cls.load(root / module_id, **kwargs)
        routes = {name: [loaded[i] for i in ids] for name, ids in config["structure"].items()}
        params = dict(config.get("parameters") or {})
        mappings = {}
        for key, value in (params.pop("route_mappings", None) or {}).items():
            mappings[ast.literal_eval(key) if isinstance(key, str) else key] = value
        params = {k: v for k, v in params.items() if k in ("default_route", "allow_empty_key")}
        return cls(routes, route_mappings=mappings, **params)

    def extra_repr(self) -> str:
        return f"default_route={self.default_route!r}"
