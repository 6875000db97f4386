"""glibc malloc settings for services that move DICOM instances through memory.

glibc gives an allocation above its mmap threshold (128 KiB, raised only to the largest
block freed so far) pages of its own, and hands the free top of a heap back to the
system once it passes the trim threshold (twice that). A service that moves instances
in 0.1-1 MiB buffers (a file read whole, a socket's worth of a body, a multipart part)
then takes a page fault for every 4 KiB it reads into: issue 12 counted 75,000 minor
faults in retrieve and 53,000-61,000 in the router for one 303 MB study, one per page,
about a third of their CPU for it. Here buffers up to :data:`MMAP_THRESHOLD` come from
the heap, up to :data:`TRIM_THRESHOLD` of free heap is kept for the next ones, and
:data:`ARENA_MAX` arenas bound what is kept in all (a process keeps at most about
``ARENA_MAX * TRIM_THRESHOLD`` more than it uses; larger objects are mapped and
unmapped as before).

Settings in the environment win (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``: glibc reads them itself); a C library without ``mallopt``
(musl) is left as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MMAP_THRESHOLD = 4 * MIB
TRIM_THRESHOLD = 16 * MIB
ARENA_MAX = 2

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

_SETTINGS = (
    ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, TRIM_THRESHOLD),
)


def tune(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Apply the settings the environment does not set; what was applied, by name. Call
    it early in a service's process, before its threads start."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = {}
    for name, param, value in _SETTINGS:
        if name in env:
            continue
        if mallopt(param, value) == 1:
            applied[name] = value
        else:
            log.warning("mallopt(%s, %d) was refused", name, value)
    return applied
