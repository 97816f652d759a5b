"""Numeric precision of the encoder (fp32, bf16, int8) and what this CPU can run fast.

Reduced precision only pays where the hardware has the instructions for it: bf16 matmuls need
AVX-512 BF16 or AMX on x86 (otherwise they are emulated, slower than fp32), and int8 matmuls
need VNNI (AVX-512 VNNI, AVX-VNNI or AMX int8). Where a precision is asked for but the CPU lacks
them, we warn once, in our own words, and run fp32 instead: never a silent slowdown.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import SparsebridgeError

PRECISIONS = ("fp32", "bf16", "int8")
_DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    "float32": "fp32",
    "fp32": "fp32",
    "bfloat16": "bf16",
    "bf16": "bf16",
    "auto": "fp32",
}
# The model_kwargs keys sentence-transformers and transformers read the weight dtype from.
DTYPE_KEYS = ("dtype", "torch_dtype")
_CPUINFO = Path("/proc/cpuinfo")


class PrecisionError(SparsebridgeError, ValueError):
    """An unknown precision or dtype was asked for."""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (Linux: /proc/cpuinfo; elsewhere: torch's own probe)."""
    try:
        for line in _CPUINFO.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    # torch reports the best vector unit it dispatches to: DEFAULT, AVX2, AVX512 (x86).
    capability = torch.backends.cpu.get_cpu_capability().lower()
    return frozenset({"avx2"} if capability == "avx2" else {"avx2", "avx512f"} if capability == "avx512" else ())


# oneDNN's instruction-set levels, lowest first (its ONEDNN_MAX_CPU_ISA values), and the first level
# that allows each capability: torch's CPU matmuls run through oneDNN, so a cap there is a cap here.
_ONEDNN_LEVELS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX512_CORE_FP16",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX512_CORE_AMX_FP16",
)
_NEEDS_LEVEL = {"avx2": "AVX2", "vnni": "AVX2_VNNI", "avx512": "AVX512_CORE", "bf16": "AVX512_CORE_BF16"}
_NEEDS_LEVEL["amx"] = "AVX10_1_512_AMX"


def onednn_isa_cap() -> str | None:
    """The instruction-set cap a user set for oneDNN (``ONEDNN_MAX_CPU_ISA``, older ``DNNL_MAX_CPU_ISA``),
    or None: with e.g. ``AVX2`` torch runs bf16 matmuls emulated, so bf16 would be a slowdown."""
    value = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return value if value in _ONEDNN_LEVELS else None


def cpu_capabilities() -> dict[str, bool]:
    """Which fast-path instruction sets this CPU has: AVX2, AVX-512, BF16, VNNI, AMX (within oneDNN's cap)."""
    flags = cpu_flags()
    arm = platform.machine().lower() in ("arm64", "aarch64")
    caps = {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "bf16": bool({"avx512_bf16", "amx_bf16"} & flags) or (arm and "bf16" in flags),
        "vnni": bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags) or (arm and "asimddp" in flags),
        "amx": "amx_tile" in flags,
    }
    cap = None if arm else onednn_isa_cap()
    if cap is not None:
        level = _ONEDNN_LEVELS.index(cap)
        caps = {name: on and level >= _ONEDNN_LEVELS.index(_NEEDS_LEVEL[name]) for name, on in caps.items()}
    return caps


def describe_cpu() -> str:
    """One line naming the capabilities, for benchmarks and warnings."""
    caps = cpu_capabilities()
    line = " ".join(f"{name.upper()}={'yes' if on else 'no'}" for name, on in caps.items())
    cap = onednn_isa_cap()
    return f"{line} (ONEDNN_MAX_CPU_ISA={cap})" if cap else line


def precision_from_kwargs(model_kwargs: dict[str, Any], precision: str | None = None) -> str:
    """The precision asked for by ``precision=`` or sentence-transformers' ``dtype`` / ``torch_dtype``.

    ``model_kwargs`` loses those keys (we load the weights ourselves in the resolved precision).
    """
    dtypes = [model_kwargs.pop(key) for key in DTYPE_KEYS if key in model_kwargs]
    asked = model_kwargs.pop("precision", None) if precision is None else precision
    model_kwargs.pop("precision", None)
    if asked is None and dtypes:
        dtype = dtypes[0]
        if isinstance(dtype, str):
            dtype = dtype.removeprefix("torch.")
        if dtype not in _DTYPE_NAMES:
            raise PrecisionError(
                f"model_kwargs dtype {dtypes[0]!r} is not supported on this path; use torch.float32 or torch.bfloat16 "
                f"(or precision='int8')"
            )
        asked = _DTYPE_NAMES[dtype]
    asked = (asked or "fp32").lower()
    if asked not in PRECISIONS:
        raise PrecisionError(f"unknown precision {asked!r}; choose one of {', '.join(PRECISIONS)}")
    return asked


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def effective_precision(asked: str, device: str | torch.device = "cpu") -> str:
    """The precision we will really run: ``asked`` if this hardware runs it fast, else fp32 (warned once)."""
    if asked == "fp32":
        return asked
    device = torch.device(device)
    if device.type == "cuda":
        if asked == "bf16" and not torch.cuda.is_bf16_supported():
            _warn_once("sparsebridge: this GPU has no bf16 support; running fp32 instead")
            return "fp32"
        return asked
    if device.type != "cpu":
        return asked
    caps = cpu_capabilities()
    if asked == "bf16" and not caps["bf16"]:
        _warn_once(
            "sparsebridge: bf16 was asked for, but this CPU has no bf16 matmul instructions (AVX-512 BF16 or AMX); "
            "bf16 would be emulated and slower, so the model runs in fp32"
        )
        return "fp32"
    if asked == "int8" and not caps["vnni"]:
        _warn_once(
            "sparsebridge: int8 was asked for, but this CPU has no VNNI (AVX-512 VNNI, AVX-VNNI or AMX int8); "
            "int8 would gain little there, so the model runs in fp32"
        )
        return "fp32"
    return asked


def torch_dtype(precision: str) -> torch.dtype:
    """The weight dtype a precision loads with (int8 loads fp32 weights, then quantizes them)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def projection_dtype(precision: str) -> torch.dtype:
    """The dtype the vocabulary projection runs in, on CPU, for an encoder of ``precision``.

    bf16 for bf16, and for int8 where the CPU has bf16 matmuls: SPLADE's projection is 30,522 columns
    wide, a fifth of BERT-base's FLOPs at 256 tokens, and left in fp32 beside an int8 encoder it took
    half the time of a pass on an AVX-512 BF16 CPU (benchmarks/encode_bounds.md). Max pooling over
    bf16 logits is exact; int8 logits would add a second per-token quantization error.
    """
    if precision == "bf16" or (precision == "int8" and cpu_capabilities()["bf16"]):
        return torch.bfloat16
    return torch.float32


def quantize_int8(model: nn.Module, skip: nn.Module | None = None) -> nn.Module:
    """Dynamic int8 quantization of the model's Linear layers (weights per channel), in place of fp32.

    ``skip`` (the vocabulary projection) is left alone here: the transformer hands ``SpladePooling``
    a copy in ``projection_dtype("int8")``, applied in vocabulary blocks, so the logits are never
    built whole.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = {name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not skip}
    with warnings.catch_warnings():
        # torch marks eager-mode quantization deprecated (in favour of torchao); it still works and ships.
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names}, inplace=False)
