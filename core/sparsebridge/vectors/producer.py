"""What produced a set of vectors: the model (name and a hash of its weights), its pooling, the
``max_active_dims`` cut and the side (document or query), as one plain JSON dict.

The same dict goes into a vector dataset's file metadata and, hashed, into the encode cache's keys:
vectors are reused only where this dict is equal. (An index records and checks the per-side
fingerprints of :mod:`sparsebridge.provenance`; a dataset carries those too, as ``index_producer``.)
It is built in one place, :func:`producer_info`.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@lru_cache(maxsize=16)
def _weights_hash(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for rel, _size, _mtime in stamp:
        h.update(rel.encode() + b"\0")
        with open(os.path.join(folder, rel), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def weights_hash(folder: str | os.PathLike | None) -> str | None:
    """sha256 over the weight files of a model folder (names and bytes, sorted), or None when the
    model is not a local folder. Computed once per process for unchanged files."""
    if folder is None or not os.path.isdir(folder):
        return None
    folder = os.path.abspath(folder)
    stamp = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith(WEIGHT_SUFFIXES):
                full = os.path.join(root, name)
                st = os.stat(full)
                stamp.append((os.path.relpath(full, folder), st.st_size, st.st_mtime_ns))
    if not stamp:
        return None
    return _weights_hash(folder, tuple(sorted(stamp)))


def pooling_of(encoder: Any) -> str:
    """The pooling the encoder applies, as a short string (``splade-max-relu``...)."""
    names = []
    modules = encoder.modules() if hasattr(encoder, "modules") else ()
    for module in modules:
        strategy = getattr(module, "pooling_strategy", None)
        activation = getattr(module, "activation_function", None)
        if strategy is not None:
            names.append(f"splade-{strategy}-{activation}" if activation else f"{type(module).__name__}-{strategy}")
    return ",".join(dict.fromkeys(names)) or type(encoder).__name__


def producer_info(
    encoder: Any, model_name: str, *, max_active_dims: int | None, side: str = "document"
) -> dict[str, Any]:
    """The producer dict of vectors made by ``encoder`` (see the module docstring)."""
    from .._version import __version__

    path = getattr(encoder, "model_name_or_path", None)
    return {
        "model": model_name,
        "weights_sha256": weights_hash(path),
        "pooling": pooling_of(encoder),
        "max_active_dims": max_active_dims,
        "side": side,
        "sparsebridge": __version__,
    }


def producer_key(info: dict[str, Any]) -> str:
    """A stable key for a producer dict: sha256 of its canonical JSON, without the sparsebridge
    version (a new release of the same model and settings makes the same vectors) and, when the
    weights hash is known, without the model's name (``packaged:splade`` and the folder it
    resolves to are the same model)."""
    core = {k: v for k, v in info.items() if k != "sparsebridge"}
    if core.get("weights_sha256"):
        core.pop("model", None)
    return hashlib.sha256(json.dumps(core, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def producer_differences(have: dict[str, Any], want: dict[str, Any], have_name: str, want_name: str) -> str:
    """What differs between two producer dicts, one phrase per key (``max_active_dims: dataset 64,
    in use None``), over the keys :func:`producer_key` compares; weights hashes shortened."""
    ignored = (
        {"sparsebridge", "model"} if have.get("weights_sha256") and want.get("weights_sha256") else {"sparsebridge"}
    )

    def shown(key: str, value: Any) -> str:
        return repr(value[:12]) if key == "weights_sha256" and isinstance(value, str) else repr(value)

    diff = sorted(k for k in set(have) | set(want) if k not in ignored and have.get(k) != want.get(k))
    return "; ".join(f"{k}: {have_name} {shown(k, have.get(k))}, {want_name} {shown(k, want.get(k))}" for k in diff)


def check_vectors_producer(stored: dict[str, Any] | None, expected: dict[str, Any], index: str) -> None:
    """Refuse to extend an index with vectors of another producer dict (model weights, pooling,
    ``max_active_dims``), as recorded under ``vectors_producer``: the check that covers a vector
    dataset whose index fingerprints are unknown. Indexes without one are accepted."""
    from ..errors import IndexMismatchError

    have, want = (stored or {}).get("vectors_producer"), expected.get("vectors_producer")
    if not isinstance(have, dict) or not isinstance(want, dict):
        return
    if producer_key(have) != producer_key(want):
        detail = producer_differences(have, want, "index", "these")
        raise IndexMismatchError(
            f"index {index!r} holds vectors of another producer than these ({detail}); ingest into a new "
            f"index, or drop it first (--recreate)"
        )


def dataset_index_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The index metadata of vectors from a dataset: what a text ingest of the same vectors stores."""
    out = {k: meta.get(k) for k in ("model", "vocab_size", "vocab_fingerprint")}
    # An encoded dataset carries the index fingerprints (sparsebridge.provenance) apart from its own
    # producer dict; an exported one carries the index's under "producer".
    out["producer"] = dict(meta.get("index_producer") or {})
    if meta.get("producer"):
        out["vectors_producer"] = dict(meta["producer"])
    if meta.get("dense_size"):
        out["dense_model"] = meta.get("dense_model")
    return out
