"""glibc allocator settings for the long-running operator process (RSS, not speed).

Measured with ``bench/bench_operator.py`` at 500 strategies: the operator's live data (watched
bodies, evidence, caches) is about 100 MB over a 73 MB import baseline, but RSS climbed past
300 MB. glibc's allocator is the cause, not Python objects: dozens of worker threads each get
an arena of their own, and memory freed after bursts (start-up, 500 Deployment applies, large
API responses) stays mapped. Both helpers are no-ops on a libc without them (musl).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

log = logging.getLogger("quantramp.operator")

#: glibc malloc arenas for the operator process (``MALLOC_ARENA_MAX`` overrides)
ARENAS = 2
#: seconds between two ``malloc_trim`` calls
TRIM_SECONDS = 30.0
_M_ARENA_MAX = -8  # glibc malloc.h


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; call before any thread starts. Returns whether it was applied
    (not when ``MALLOC_ARENA_MAX`` is set: glibc reads that itself)."""
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def start_trimming(every: float = TRIM_SECONDS) -> threading.Thread | None:
    """Return freed heap memory to the OS every ``every`` seconds (``malloc_trim(0)``, a few ms)
    from a daemon thread; None when the libc has no ``malloc_trim``."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            libc.malloc_trim(0)

    thread = threading.Thread(target=run, name="quantramp-malloc-trim", daemon=True)
    thread.start()
    return thread
