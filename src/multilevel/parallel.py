"""How many cores the refits (bootstrap replicates, imputed data sets) use.

Refits run in threads: the compiled loops (`kernels`) release the GIL, so threads share the
design and the summaries without copying them, and pay no process start-up.
"""
from __future__ import annotations

import os


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity where the system tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
