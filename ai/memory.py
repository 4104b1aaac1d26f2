"""How this process gets memory for large arrays (no torch; numpy and the C library only).

Segmenting a study allocates and frees arrays of tens of megabytes many times (every batch of
slices, every post-processing step). With the defaults of Debian 12 (glibc 2.36, transparent huge
pages ``enabled=madvise``, ``defrag=madvise``) two things make that slow on a busy machine:

- numpy asks the kernel for huge pages on every array of 4 MB or more
  (``madvise(MADV_HUGEPAGE)``). With ``defrag=madvise`` the kernel then compacts memory on the
  page fault, synchronously, whenever no free huge page is at hand: the page cache of a machine
  that also stores DICOM files fragments memory.
- glibc hands every block over its mmap threshold straight back to the kernel when it is freed,
  so the next batch faults the same memory in again, page by page. The threshold starts at
  128 kB and grows only up to 32 MB.

:func:`tune` switches numpy's huge-page advice off and lets glibc keep blocks of up to 32 MB in
its heap, freed blocks included (``mallopt`` ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``). The
arithmetic and its results are unchanged; only where the bytes come from. Measured with
``bench/inference.py --allocator tuned,system`` (see the README's benchmark section).
:func:`release` returns the heap's free memory to the kernel (``malloc_trim``), for a
long-lived process between two large jobs.
"""
from __future__ import annotations

import ctypes
import logging
import platform
from collections.abc import Callable

__all__ = ["ALLOCATORS", "KEEP_MAX_BYTES", "TRIM_THRESHOLD_BYTES", "numpy_hugepage_advice", "release", "tune"]

log = logging.getLogger(__name__)

#: the node's setting (``runner.allocator``) and the other choice: the libraries' own defaults
ALLOCATORS = ("tuned", "system")

#: blocks up to this size come from glibc's heap and are reused after a free (glibc caps
#: ``M_MMAP_THRESHOLD`` at 32 MB on 64-bit systems)
KEEP_MAX_BYTES = 32 * 2 ** 20

#: free memory at the top of the heap is returned to the kernel only beyond this much
TRIM_THRESHOLD_BYTES = 2 ** 30

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _numpy_hugepage_switch() -> Callable[[bool], bool] | None:
    """numpy's ``_set_madvise_hugepage`` (numpy 2: ``numpy._core``, 1.x: ``numpy.core``), which
    sets the advice and returns the previous setting; None when this numpy has none."""
    import numpy as np

    for mod in ("_core", "core"):
        fn = getattr(getattr(getattr(np, mod, None), "multiarray", None), "_set_madvise_hugepage", None)
        if callable(fn):
            return fn
    return None


def tune(allocator: str = "tuned") -> dict[str, bool]:
    """Set this process's allocation as ``allocator`` says (one of :data:`ALLOCATORS`).

    ``"tuned"``: numpy stops asking for huge pages and glibc keeps freed blocks of up to
    :data:`KEEP_MAX_BYTES` for reuse. ``"system"``: nothing is changed (numpy's and glibc's
    defaults, as the process started with them). Returns what was applied:
    ``{"numpy_hugepage_off": ..., "glibc_keep": ...}``; a part that this platform lacks (not
    Linux, not glibc, a numpy without the switch) stays False and is logged.
    """
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATORS)}, not {allocator!r}")
    done = {"numpy_hugepage_off": False, "glibc_keep": False}
    if allocator == "system":
        return done
    switch = _numpy_hugepage_switch()
    if switch is not None:
        switch(False)
        done["numpy_hugepage_off"] = True
    else:
        log.info("allocation: this numpy has no huge-page switch; left as it is")
    libc = _glibc()
    if libc is not None:
        done["glibc_keep"] = bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_MAX_BYTES)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not done["glibc_keep"]:
        log.info("allocation: not glibc on Linux (or mallopt refused); the C allocator left as it is")
    return done


def numpy_hugepage_advice() -> bool | None:
    """Whether numpy asks for huge pages for its large arrays now (None: this numpy has no switch)."""
    switch = _numpy_hugepage_switch()
    if switch is None:
        return None
    was = bool(switch(False))
    switch(was)
    return was


def release() -> bool:
    """Return the free memory of glibc's heap to the kernel (``malloc_trim(0)``); False when
    this is not glibc or nothing could be returned."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
