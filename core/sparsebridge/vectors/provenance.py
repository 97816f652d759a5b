"""What produced an index's vectors, recorded with the index and checked before it is used again.

The vocabulary fingerprint (``vocabulary.py``) says which token each dimension is; it does not say
which weights the vectors came from. Two models with one vocabulary (a fine-tuned copy, another
``max_active_dims``, another query side) give vectors that do not rank against each other, so an
index records, per side, a **producer fingerprint**: a plain dict with a stable key order (JSON as
is, for every backend's metadata and for datasets that store it)::

    {
      "format": 1,
      "side": "document",                        # or "query" (or "document" of the dense model)
      "weights": "files-sha256:3f2a...",         # or "tensors-sha256:..." (see weights_digest)
      "modules": [{"type": "MLMTransformer", "config": {...}}, {"type": "SpladePooling", "config": {...}}],
      "prompt": "",
      "max_active_dims": 256,                    # None: every active dimension kept
    }

:func:`producer_fingerprint` makes one; :func:`check_producers` compares what an index recorded with
what the current model would produce and names each difference. The model's name or path is not
part of it: a copy of the same model in another folder produces the same vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelMismatchError

__all__ = [
    "COMPARED_KEYS",
    "FINGERPRINT_FORMAT",
    "check_producers",
    "describe_differences",
    "file_sha256",
    "hash_cache_path",
    "producer_fingerprint",
    "weights_digest",
]

FINGERPRINT_FORMAT = 1
# What two fingerprints must share for their vectors to be comparable.
COMPARED_KEYS = ("weights", "modules", "prompt", "max_active_dims")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Files with a weight suffix that hold training state, not the model.
_NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"})
_CHUNK = 1 << 20

_CACHE_ENTRIES = 2000

# sha256 of a file's bytes by "real path|size|mtime_ns", loaded from and saved to the cache file.
_FILE_HASHES: dict[str, str] | None = None


def hash_cache_path() -> Path:
    """Where file hashes are kept between runs: ``$SPARSEBRIDGE_CACHE_DIR/file-sha256.json``
    (default ``$XDG_CACHE_HOME/sparsebridge``, else ``~/.cache/sparsebridge``)."""
    base = os.environ.get("SPARSEBRIDGE_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sparsebridge")
    return Path(base) / "file-sha256.json"


def _hashes() -> dict[str, str]:
    global _FILE_HASHES
    if _FILE_HASHES is None:
        try:
            data = json.loads(hash_cache_path().read_text(encoding="utf-8"))
            _FILE_HASHES = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            _FILE_HASHES = {}
    return _FILE_HASHES


def _save_hashes(hashes: dict[str, str]) -> None:
    # Best effort: a cache that cannot be written only costs reading the weights again next time.
    path = hash_cache_path()
    keep = dict(list(hashes.items())[-_CACHE_ENTRIES:])
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(keep), encoding="utf-8")
        os.replace(tmp, path)  # whole file or nothing, also with two processes at once
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's content, read once: cached by real path, size and mtime, in this
    process and in :func:`hash_cache_path` (hashing a large model's weights takes seconds).

    A file in a Hugging Face cache is a link to a blob named by the sha256 of its content (for the
    large, LFS-stored files that weights are): that name is taken as is, without reading the file.
    """
    real = os.path.realpath(path)
    name = os.path.basename(real)
    if os.path.basename(os.path.dirname(real)) == "blobs" and len(name) == 64 and set(name) <= set(string.hexdigits):
        return name.lower()
    st = os.stat(real)
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    hashes = _hashes()
    cached = hashes.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    hashes[key] = digest = h.hexdigest()
    _save_hashes(hashes)
    return digest


def _weight_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue  # .cache, .git: not the model
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES and path.name not in _NOT_WEIGHTS:
            files.append(path)
    return files


def _modules_of(encoder: Any, side: str) -> list[Any]:
    """The encoder's top-level modules on ``side`` (a Router contributes its route for that side)."""
    mods = getattr(encoder, "_modules", None)
    if not isinstance(mods, Mapping):
        return []
    out: list[Any] = []
    for module in mods.values():
        route = getattr(module, "route", None)
        subs = getattr(module, "sub_modules", None)
        if callable(route) and subs is not None:
            try:
                out.extend(subs[route(side)].children())
                continue
            except (KeyError, ValueError):
                pass
        out.append(module)
    return out


def _tensors_digest(modules: Sequence[Any]) -> str | None:
    import torch

    h = hashlib.sha256()
    seen = False
    for n, module in enumerate(modules):
        state = getattr(module, "state_dict", None)
        if not callable(state):
            continue
        for name, tensor in sorted(state().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{n}.{name}\t{t.dtype}\t{tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # any dtype, bfloat16 included; no copy
            seen = True
    return f"tensors-sha256:{h.hexdigest()}" if seen else None


def weights_digest(encoder: Any, side: str = "document") -> str:
    """A digest of the weights that produce ``side``'s vectors.

    A model loaded from a local folder: ``files-sha256:`` over the names and content hashes of its
    weight files (``*.safetensors``, ``*.bin``, ``*.pt``; cheap, see :func:`file_sha256`). Otherwise
    (modules assembled in memory, e.g. an IDF query side built from a corpus): ``tensors-sha256:``
    over the state of the modules on that side. ``"unknown"`` when neither can be read.
    """
    source = getattr(encoder, "model_name_or_path", None)
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        folder = Path(source)
        files = _weight_files(folder)
        if files:
            h = hashlib.sha256()
            for path in files:
                h.update(f"{path.relative_to(folder).as_posix()}\t{file_sha256(path)}\n".encode())
            return f"files-sha256:{h.hexdigest()}"
    return _tensors_digest(_modules_of(encoder, side)) or "unknown"


def _plain(value: Any) -> Any:
    """JSON-safe, with mapping keys in sorted order (the stored form must not depend on dict order)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _module_entry(module: Any) -> dict[str, Any]:
    config = getattr(module, "get_config_dict", None)
    entry: dict[str, Any] = {"type": type(module).__name__}
    entry["config"] = _plain(config()) if callable(config) else {}
    return entry


def _module_entries(encoder: Any, side: str) -> list[dict[str, Any]]:
    # An encoder read without its modules (encoders.static_query) says what they are itself.
    entries = getattr(encoder, "fingerprint_modules", None)
    return entries(side) if callable(entries) else [_module_entry(m) for m in _modules_of(encoder, side)]


def producer_fingerprint(encoder: Any, max_active_dims: int | None, side: str) -> dict[str, Any]:
    """The fingerprint of what makes ``side``'s vectors (``"document"`` or ``"query"``).

    ``max_active_dims`` is the value the caller encodes with; None means the encoder's own default
    (a sparse auto-encoder's ``k``) or no limit. A plain dict, keys always in this order: format,
    side, weights, modules, prompt, max_active_dims.
    """
    if side not in ("document", "query"):
        raise ValueError(f"side must be 'document' or 'query', got {side!r}")
    effective = max_active_dims if max_active_dims is not None else getattr(encoder, "max_active_dims", None)
    prompts = getattr(encoder, "prompts", None)
    prompt = prompts.get(side) if isinstance(prompts, Mapping) else None
    return {
        "format": FINGERPRINT_FORMAT,
        "side": side,
        "weights": weights_digest(encoder, side),
        "modules": _module_entries(encoder, side),
        "prompt": prompt or "",
        "max_active_dims": int(effective) if effective is not None else None,
    }


def _short(key: str, value: Any) -> str:
    if key == "weights" and isinstance(value, str):
        kind, _, digest = value.partition(":")
        return f"{kind}:{digest[:12]}" if digest else value
    return repr(value)


def _module_differences(have: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]]) -> str:
    types_have = [m.get("type") for m in have]
    types_want = [m.get("type") for m in want]
    if types_have != types_want:
        return f"modules: index {' -> '.join(map(str, types_have))}, in use {' -> '.join(map(str, types_want))}"
    for a, b in zip(have, want):
        ca, cb = dict(a.get("config") or {}), dict(b.get("config") or {})
        for key in sorted(set(ca) | set(cb)):
            if ca.get(key) != cb.get(key):
                return f"{a.get('type')} {key}: index {ca.get(key)!r}, in use {cb.get(key)!r}"
    return "module configuration differs"


def describe_differences(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """What differs between a stored fingerprint (``have``) and the current one, one phrase each."""
    out = []
    for key in COMPARED_KEYS:
        a, b = have.get(key), want.get(key)
        if a == b:
            continue
        if key == "modules":
            out.append(_module_differences(a or [], b or []))
        else:
            out.append(f"{key}: index {_short(key, a)}, in use {_short(key, b)}")
    return out


def check_producers(
    stored: Mapping[str, Any] | None,
    current: Mapping[str, Mapping[str, Any]],
    index: str,
    *,
    sides: Iterable[str],
    allow_change: bool = False,
) -> list[str]:
    """Compare what index ``index`` recorded (its metadata ``stored``) with ``current`` (side -> fingerprint).

    Raises :class:`~sparsebridge.errors.ModelMismatchError` naming every difference on ``sides``,
    unless ``allow_change``; then returns the differences as notes. An index that records no
    fingerprint (built before they were recorded) is accepted with a note. A new index (``stored``
    None) has nothing to compare.
    """
    if stored is None:
        return []
    recorded = stored.get("producer")
    if not isinstance(recorded, Mapping):
        return [
            f"index {index!r} records no model fingerprint (built by an older sparsebridge, or not by "
            f"sparsebridge), so the model in use could not be checked against the one that built it"
        ]
    found = []
    for side in sides:
        have, want = recorded.get(side), current.get(side)
        if isinstance(have, Mapping) and isinstance(want, Mapping):
            found.extend(f"{side} side: {d}" for d in describe_differences(have, want))
    if not found:
        return []
    what = (
        f"index {index!r} was built by another model than the one in use (index model "
        f"{stored.get('model', '?')!r}; {'; '.join(found)})"
    )
    if allow_change:
        return [f"{what}: accepted because allow_model_change is set; its rankings mix both models' vectors"]
    raise ModelMismatchError(
        f"{what}; its vectors would not rank against this model's: use the model it was built with, "
        f"ingest into a new index (--index NAME or --recreate), or pass --allow-model-change "
        f"([ingest] allow_model_change = true) if you mean it"
    )
