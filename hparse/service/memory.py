"""Keeping a long-running service's resident memory at what it uses, not at the largest burst it has seen."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; well under a millisecond; a no-op elsewhere).
    Batches of varying shapes fragment the heap, so without it the resident size ratchets up with each burst."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
