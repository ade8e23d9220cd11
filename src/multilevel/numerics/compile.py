"""Compiling the loops of `rowpass` and `units` (numba), on first use, and their size specialisation.

Why compiled: both kinds of loop do a handful of floating-point operations per row or per unit (a
2 x 2 Cholesky factor, a 2 x 4 solve), so in numpy the cost is the interpreter and the temporaries,
not the arithmetic. Measured at 10^7 rows and 200,000 units (profiles of the benchmark fit): the one
pass took 2.7 s as 28 weighted bincounts and takes 0.32 s compiled (this machine reads memory at
~2.3 GB/s); an evaluation of the deviance with its gradient took ~145 ms as vectorised "structure of
arrays" numpy and takes ~23 ms compiled.

numba is imported on the first call, not with `multilevel` (the import stays light). The loops are
plain Python functions of their module; `Loops` turns all of a module's loops into compiled
functions of that module at once (each calls the others compiled, inlined), with numba's disk cache
in the checked folder of `cache` (else compiled in memory), and `nogil=True` so that parallel refits
can use threads.

Size specialisation: a loop whose sizes are known when it is compiled (q, p of the per-unit algebra;
the columns of the one pass) is unrolled by the compiler, about twice as fast per unit. A module
gives it as a `*_sized` function that takes each size as the length of a tuple, `(0,) * q`: the
length is part of the tuple's type, so numba compiles the function once per size, with the size as
a constant, and caches each in its own entry of the function's disk cache. No source is generated or
written at run time. (numba.literally specialises alike but re-types the function on every call
from Python, ~1 s for the per-unit loop: measured, /work/wt/literally.md of issue 12.) The `*_sized`
wrappers live in the file of the loops they inline: numba stamps a cache entry with the file of the
function compiled, so a wrapper elsewhere would keep a stale copy of an edited loop.
"""
from __future__ import annotations

import threading
from typing import Any

from multilevel.numerics.cache import use_numba_cache


class Loops:
    """The loops `names` of a module (its globals `namespace`), compiled together on first use.

    On the first `loops[name]`, every named function of the module is replaced in the module by its
    compiled version (inline="always": a loop that calls another compiles it into itself, so
    constants reach the inner loops). Returns the compiled `name`."""

    def __init__(self, namespace: dict[str, Any], names: tuple[str, ...]):
        self._namespace = namespace
        self._names = names
        self._lock = threading.Lock()  # refits in threads may ask at once
        self._ready = False

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self._compile_all()
        return self._namespace[name]

    def _compile_all(self) -> None:
        import numba

        cache = use_numba_cache()
        g = self._namespace
        for name in self._names:
            g[name] = numba.njit(g[name], inline="always", cache=cache, nogil=True)
        self._ready = True
