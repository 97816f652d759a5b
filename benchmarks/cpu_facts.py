"""The CPU a benchmark ran on, for the head of its report: figures from one machine kind do not hold
on another (AVX2 only, AVX-512 with BF16 and VNNI, AMX), so every benchmark prints this first."""

from __future__ import annotations

import platform
from pathlib import Path

# The instruction-set flags that change what the encoders, the engine and the server can use.
FLAGS = ("sse4_2", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_model_and_flags(wanted: tuple[str, ...] = FLAGS) -> tuple[str, str]:
    """The CPU's model name and which of ``wanted`` it has (``/proc/cpuinfo``; unknown elsewhere)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return model, " ".join(f for f in wanted if f in flags) or "none of " + ",".join(wanted)
