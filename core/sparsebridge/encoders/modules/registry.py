"""The module classes by the names ``modules.json`` gives them, and the one rule for a name that is
not ours. The classes register themselves in ``sparsebridge.encoders.modules``; a module that loads
sub-modules (``Router``) looks them up here without importing the loader.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import ModuleImportError, UntrustedModuleError
from .base import Module

# Filled by the package's __init__: class names (sentence-transformers' or ours, current and
# legacy) -> the classes implementing them.
MODULE_CLASSES: dict[str, type[Module]] = {}
# Package prefixes whose module classes we implement ourselves (matched on the class name).
_KNOWN_PREFIXES = ("sentence_transformers.", "sparsebridge.")


def module_class(
    type_name: str, source: Path, idx: int, model_path: str | os.PathLike | None = None, trust_remote_code: bool = False
) -> type[Module]:
    """The class implementing a modules.json ``type`` (``source`` is that file, ``idx`` the entry).

    A sentence-transformers (or sparsebridge) class we implement is ours, whatever its module path.
    Anything else fails as sentence-transformers fails: a class outside sentence-transformers
    without ``trust_remote_code`` with its ``ValueError`` wording; a class it cannot import with
    its ``ImportError`` wording (sparsebridge never imports third-party module code).
    """
    module_path, _, class_name = type_name.rpartition(".")
    if type_name.startswith(_KNOWN_PREFIXES) and class_name in MODULE_CLASSES:
        return MODULE_CLASSES[class_name]
    model = str(model_path if model_path is not None else source.parent)
    if not type_name.startswith(_KNOWN_PREFIXES) and not trust_remote_code:
        raise UntrustedModuleError(
            f"The model {model} references the module class {type_name!r}, which is not part of Sentence "
            f"Transformers. Importing it executes third-party code. You can inspect the repository content at "
            f"{model}. Please pass the argument `trust_remote_code=True` to allow custom code to be run. "
            f"({source.name}, module {idx})"
        )
    known = ", ".join(sorted(MODULE_CLASSES))
    if not module_path:
        cause = f"{type_name} doesn't look like a module path"
    else:
        cause = f'Module "{module_path}" does not define a "{class_name}" attribute/class'
    raise ModuleImportError(
        f"{cause} ({source}, module {idx}); sparsebridge runs no custom module code and implements these "
        f"module classes: {known}"
    )
