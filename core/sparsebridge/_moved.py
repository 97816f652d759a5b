"""The module paths of the flat layout before the layers (``sparsebridge.pipeline``,
``sparsebridge.modules``...), kept importable: each old name is the new module itself, so imports,
``isinstance`` checks and ``monkeypatch`` of an old path all reach the same object.

An import finder rather than one stub file per old name keeps the package tree showing the layers
only. Nothing under ``sparsebridge`` imports an old name; the layering test holds that.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# old name (under sparsebridge.) -> new name; an entry also covers the old name's submodules.
MOVED = {
    "backends": "encoders.export",  # the export helpers the README documents
    "base_encoder": "encoders.base_encoder",
    "cache": "vectors.cache",
    "components": "config.builder",
    "converting_load": "encoders.runtime.converting_load",
    "corpus": "index.corpus",
    "dataset": "vectors.dataset",
    "dense_encoder": "encoders.dense_encoder",
    "documents": "index.documents",
    "durability": "connector.durability",
    "encode_arguments": "encoders.encode_arguments",
    "encoder": "encoders.encoder",
    "exact_recall": "index.exact_recall",
    "filters": "connector.filters",
    "heap": "encoders.runtime.heap",
    "kernel_options": "encoders.runtime.kernel_options",
    "hookspecs": "connector.hookspecs",
    "hub": "encoders.hub",
    "loading": "encoders.loading",
    "merging": "encoders.merging",
    "metrics": "index.metrics",
    "model_card": "encoders.model_card",
    "model_card_data": "encoders.model_card_data",
    "modules": "encoders.modules",
    "multiprocess": "encoders.multiprocess",
    "passages": "index.passages",
    "peft_adapters": "encoders.runtime.peft_adapters",
    "pipeline": "index.pipeline",
    "placement": "encoders.runtime.placement",
    "plugins": "connector.plugins",
    "precision": "encoders.runtime.precision",
    "producer": "vectors.producer",
    "provenance": "vectors.provenance",
    "ray": "index.ray_engine",
    "results": "index.results",
    "similarity": "encoders.similarity",
    "threads": "encoders.runtime.threads",
    "transfer": "index.transfer",
    "vocabulary": "vectors.vocabulary",
}
# Submodules whose old parent now maps elsewhere (``backends`` is the export helpers).
SUBMODULES = {"backends": "encoders.backends"}
# Old packages whose names now live in two modules: the alias is a package of the first (its
# submodules import through it) that also gives the second's names.
COMPOSITE = {"backends": ("encoders.backends", "encoders.export")}

PREFIX = "sparsebridge."


def new_name(fullname: str) -> str | None:
    """The current module name for an old ``sparsebridge.*`` name, or None if it did not move."""
    if not fullname.startswith(PREFIX):
        return None
    old = fullname[len(PREFIX) :]
    if old in MOVED:
        return PREFIX + MOVED[old]
    head, _, rest = old.partition(".")
    if rest and head in MOVED:
        return PREFIX + SUBMODULES.get(head, MOVED[head]) + "." + rest
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and loads it as the module now holding that code."""

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None) -> object:
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, loader_state=new)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        old = spec.name[len(PREFIX) :]
        if old in COMPOSITE:
            return _composite(spec.name, *(PREFIX + name for name in COMPOSITE[old]))
        module = importlib.import_module(spec.loader_state)
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias's spec on the module; it gets its own back.
        if isinstance(module.__spec__.loader_state, importlib.machinery.ModuleSpec):
            module.__spec__ = module.__spec__.loader_state


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once: it answers only for the old names, and an
    editable install's finder would otherwise look them up as files of its own checkout."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())


class _Composite(ModuleType):
    """An old package name over two modules: names are read from the first, else the second, and
    set on the first (so a ``monkeypatch`` through the old name reaches the code that uses it)."""

    _parts: tuple[str, str]

    def __getattr__(self, attr: str) -> object:
        for source in self._parts:
            module = importlib.import_module(source)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")

    def __setattr__(self, attr: str, value: object) -> None:
        if attr.startswith("__") or attr == "_parts":
            super().__setattr__(attr, value)
        else:
            setattr(importlib.import_module(self._parts[0]), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(importlib.import_module(self._parts[0]), attr)


def _composite(name: str, package: str, other: str) -> ModuleType:
    """A package module ``name`` whose submodules are ``package``'s and whose names are
    ``package``'s, else ``other``'s."""
    module = _Composite(name, importlib.import_module(package).__doc__)
    module._parts = (package, other)
    module.__path__ = []  # a package; its submodules are found by the finder, as ``package``'s
    return module
