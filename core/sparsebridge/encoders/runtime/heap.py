"""Handing freed heap memory back to the operating system between transformer passes.

A forward pass on CPU allocates and frees activations of tens of MB each. glibc's malloc keeps
such freed blocks in its arenas (its mmap threshold rises with every large free), so the
process's resident memory ratchets up to the worst pass plus fragmentation and stays there.
``malloc_trim(0)`` returns the free pages of every arena; called once per pass it bounds the
peak at about one pass's working set, for well under a millisecond. Elsewhere (musl, macOS,
Windows) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> None:
    """Return the C heap's free pages to the OS (glibc), so freed activations stop counting as resident."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
