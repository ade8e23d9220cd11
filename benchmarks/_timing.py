"""Shared timing helper of the benchmark scripts."""
from __future__ import annotations

import time


def best_of(fn, repeat: int = 5) -> float:
    """The shortest of `repeat` wall-clock times of fn() (the least disturbed run)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
