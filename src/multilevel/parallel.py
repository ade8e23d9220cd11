"""How many cores the refits (bootstrap replicates, imputed data sets) and the BLAS use.

Refits run in threads: the compiled loops (`kernels`) release the GIL, so threads share the
design and the summaries without copying them, and pay no process start-up.

The BLAS (OpenBLAS) runs with one thread while the several-factor engine works
(`one_blas_thread`): its compiled loops and its dense factorisations alternate, and OpenBLAS's
idle threads spin between calls on the cores the loops need, and synchronise inside every small
call (measured on InstEval, quiet 2-core machine: 2.7 s with two threads for every call, 1.35 s
with one; under load 15.6 s against 1.5 s). Only the large dense factorisations of a crossed
rest (`dense_blas_threads`: potrf and potri of hundreds of rows and more) get the threads the
process had before (InstEval, 1,156 rows, quiet: 0.51 s against 0.70 s with one thread; with
another busy process on one of the 2 cores 1.3 s against 0.69 s, as for any threaded BLAS on
a busy machine: limit them with threadpoolctl or OPENBLAS_NUM_THREADS=1 there).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity where the system tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


#: the BLAS threads the large dense factorisations may use (`one_blas_thread` sets it from the
#: process's own limit; 1 outside it)
_dense_threads: list[int] = [1]
_controller: list[Any] = []


def _blas() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries (made once: scanning the loaded
    libraries takes ~1 ms)."""
    if not _controller:
        from threadpoolctl import ThreadpoolController

        _controller.append(ThreadpoolController().select(user_api="blas"))
    return _controller[0]


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread (module doc), the threads it had kept for `dense_blas_threads`."""
    blas = _blas()
    before = max((lib.num_threads for lib in blas.lib_controllers), default=1)
    with blas.limit(limits=1):
        _dense_threads.append(max(1, int(before)))
        try:
            yield
        finally:
            _dense_threads.pop()


#: a dense factorisation of at least this many rows gets the threads `one_blas_thread` kept
DENSE_THREADS_ROWS = 256


@contextmanager
def dense_blas_threads(rows: int) -> Iterator[None]:
    """Inside `one_blas_thread`: the BLAS threads the process had, for one large dense LAPACK call
    (module doc); below DENSE_THREADS_ROWS rows, or with one thread to give, nothing changes."""
    n = _dense_threads[-1]
    if n <= 1 or rows < DENSE_THREADS_ROWS:
        yield
        return
    with _blas().limit(limits=n):
        yield
