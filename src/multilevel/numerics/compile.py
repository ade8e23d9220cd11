"""Compiling the loops of `rowpass` and `units` (numba), on first use, and their size specialisation.

At each call, `run` chooses between a compiled loop and its numpy version (issue 13: a fresh
machine's first fit does not wait for the compiler; the loops it needs are compiled in the
background for the next process): the section "compiled or numpy" below.

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

import os
import threading
from functools import cache
from typing import Any

import numpy as np

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
        self.python = {n: namespace[n] for n in names}  # the plain Python loops, before compiling
        self.module_file = namespace["__file__"]
        self.module = namespace["__name__"].rsplit(".", 1)[-1]
        self.hot: dict[str, Any] = {}  # the loops run compiled in this process (`run`)

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


# ----- compiled or numpy: the choice made at each call, and the compiled loops made for next time --
#
# Compiling a module's loops costs seconds (numba: ~2.5 s per module on this machine, most of a
# fresh machine's first fit); loading them from the cache costs ~0.3 s in a new process (importing
# numba, 0.12 s, and loading the cached code). Each loop therefore also has a numpy version (the
# same arithmetic, batched over rows or units; agreeing to 1e-12 relative: tests/numerics/
# test_numpy_path.py). At each call `run` picks one, without importing numba: the compiled loop if
# it is in the cache (or already loaded), else the numpy version while the numpy work of this
# process, estimated from the sizes (`rowpass`/`units` give the estimate), stays within the price
# of compiling (COMPILE_SECONDS; the "ski rental" rule: never more than twice the cost of the better
# choice in hindsight), compiled after that. Small data (HSB, 10^4 rows) thus never wait for a
# compiler, a process that fits many times soon runs compiled, and 10^7 rows compile at once. A
# cached loop is always loaded, though numpy would spare a new process numba's import and loading
# (~0.3 s): a process that loads once fits 10^4 rows in ~3.6 ms compiled against ~7 ms in numpy.
# The estimate, not a clock, decides: a process's results do not depend on the machine's load.
#
# Whether the compiled loop is in the cache is told by a marker file per loop and argument types
# (`<cache_dir()>/compiled/<key>`, written once numba has compiled or loaded that loop), so the
# choice needs one stat, not numba. A loop run in numpy because it was not in the cache is
# compiled for next time by a detached low-priority process (`python -m
# multilevel.numerics.compile`, started at the end of the fit or at exit), only when a checked
# cache folder exists (`cache.cache_dir`), never when MULTILEVEL_BACKGROUND_COMPILE=0, and not in
# a pytest run unless that variable is 1. MULTILEVEL_LOOPS=numpy or =compiled forces one path
# (tests, benchmarks).

LOOPS_ENV = "MULTILEVEL_LOOPS"
BACKGROUND_ENV = "MULTILEVEL_BACKGROUND_COMPILE"

# os.environ's own table (bytes on POSIX), read without os.environ.get: its Mapping.get raises and
# catches a KeyError when the variable is unset, the usual case, ~1.5 us at each of the ~30 loop
# calls of a small fit. Assignments through os.environ (monkeypatch.setenv too) update this table.
_ENV_TABLE: Any = getattr(os.environ, "_data", None)
_ENV_KEY: Any = os.environ.encodekey(LOOPS_ENV) if _ENV_TABLE is not None and hasattr(os.environ, "encodekey") else None


def loops_mode() -> str:
    """MULTILEVEL_LOOPS: 'numpy', 'compiled' or 'auto' (unset)."""
    if _ENV_KEY is None:
        return os.environ.get(LOOPS_ENV, "auto")
    value = _ENV_TABLE.get(_ENV_KEY)
    return "auto" if value is None else os.environ.decodevalue(value)


#: seconds compiling a module's loops takes (measured: 2.5-3.5 s each for rowpass and units)
COMPILE_SECONDS = 2.5

_CHOICE_LOCK = threading.Lock()
_numpy_seconds = 0.0  # the estimated numpy work of this process so far
_compiled_keys: set[str] = set()  # loops (with their argument types) compiled or loaded in this process
_requests: dict[str, tuple[str, str, list[Any]]] = {}  # key -> (module, loop, argument description)
_started: set[str] = set()  # keys whose background compilation this process started
_over = False  # the numpy budget is spent: this process runs compiled
_asked_in_test = [False]  # a loop was asked for while a test ran (pytest unsets its variable before exit)


def describe(arg: Any) -> Any:
    """The numba type of an argument, as plain data (no numba): arrays by dtype, dimensions, layout and
    writability; tuples element by element; scalars by kind. Equal descriptions: the same compiled code."""
    import numpy as np

    if isinstance(arg, np.ndarray):
        layout = "C" if arg.flags.c_contiguous else "F" if arg.flags.f_contiguous else "A"
        return ["array", arg.dtype.str, arg.ndim, layout, bool(arg.flags.writeable)]
    if isinstance(arg, tuple):
        return ["tuple", [describe(a) for a in arg]]
    if isinstance(arg, (bool, np.bool_)):
        return ["bool"]
    if isinstance(arg, int):
        return ["scalar", "<i8"]
    if isinstance(arg, float):
        return ["scalar", "<f8"]
    if isinstance(arg, np.generic):
        return ["scalar", arg.dtype.str]
    raise TypeError(f"no description for {type(arg).__name__}")


def example(description: Any) -> Any:
    """An argument with the numba type `description` (`describe`), for compiling without data."""
    import numpy as np

    kind = description[0]
    if kind == "array":
        _, dtype, ndim, layout, writeable = description
        if layout == "A":
            a = np.zeros((3,) * ndim, dtype=dtype)[(slice(None, None, 2),) * ndim]
        else:
            a = np.zeros((2,) * ndim, dtype=dtype, order="F" if layout == "F" else "C")
        a.setflags(write=writeable)
        return a
    if kind == "tuple":
        return tuple(example(d) for d in description[1])
    if kind == "bool":
        return True
    return np.dtype(description[1]).type(0).item() if description[1] in ("<i8", "<f8") else np.dtype(description[1]).type(0)


def _key(module_file: str, name: str, description: Any) -> str:
    """The marker's name: the loop, its argument types, and the module file's version (numba's cache
    is invalidated by the file's time stamp and size; so is the marker)."""
    import hashlib
    import json
    import sys

    st = os.stat(module_file)
    text = json.dumps([os.path.basename(module_file), st.st_mtime_ns, st.st_size, name, description,
                       sys.version_info[:2], _numba_version()])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@cache
def _numba_version() -> str:
    """numba's version, from its metadata (without importing it): a new numba recompiles."""
    from importlib import metadata

    try:
        return metadata.version("numba")
    except metadata.PackageNotFoundError:
        return ""


def _marker(key: str) -> str | None:
    from multilevel.numerics.cache import cache_dir

    root = cache_dir()
    return None if root is None else os.path.join(root, "compiled", key)


def mark_compiled(key: str) -> None:
    """Record that the loop `key` is compiled in this process, and (checked folder only) in the cache."""
    _compiled_keys.add(key)
    path = _marker(key)
    if path is not None and not os.path.exists(path):
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(path, "w"):
                pass
        except OSError:
            pass  # only a hint for the next process


def run(loops: Loops, name: str, args: tuple[Any, ...], numpy_version: Any, numpy_seconds: float) -> Any:
    """loops[name](*args) compiled, or numpy_version(*args) (its work estimated at `numpy_seconds`):
    the rule of the section comment above. Once the loop runs compiled, a call costs a look-up."""
    global _numpy_seconds, _over
    mode = loops_mode()
    if mode == "numpy":
        return numpy_version(*args)
    fn = loops.hot.get(name)
    if fn is not None:
        # this loop already runs compiled in this process: numba dispatches on the types (a call of
        # new types compiles, or loads from the cache, as before issue 13; not worth a numpy detour)
        known = len(fn.overloads)
        out = fn(*args)
        if len(fn.overloads) != known:
            mark_compiled(_key(loops.module_file, name, [describe(a) for a in args]))
        return out
    if not _over and mode != "compiled":
        description = [describe(a) for a in args]
        key = _key(loops.module_file, name, description)
        marker = _marker(key)
        if key not in _compiled_keys and not (marker is not None and os.path.exists(marker)):
            with _CHOICE_LOCK:
                go_numpy = _numpy_seconds + numpy_seconds <= COMPILE_SECONDS
                if go_numpy:
                    _numpy_seconds += numpy_seconds
                    if marker is not None:
                        _asked_in_test[0] |= "PYTEST_CURRENT_TEST" in os.environ  # (at exit it is unset)
                        if not _requests:
                            import atexit

                            atexit.register(compile_later)  # whatever the fit's end did not start
                        _requests.setdefault(key, (loops.module, name, description))
                else:
                    _over = True  # numpy has cost what compiling would: from now on, compiled
            if go_numpy:
                return numpy_version(*args)
    fn = loops[name]
    known = len(fn.overloads)
    out = fn(*args)
    if len(fn.overloads) != known:  # compiled now, or loaded from the cache: tell the next process
        mark_compiled(_key(loops.module_file, name, [describe(a) for a in args]))
    loops.hot[name] = fn
    return out


def ready(loops: Loops, name: str, args: tuple[Any, ...]) -> bool:
    """Whether the loop `name` runs compiled for these argument types without compiling now: compiled
    or loaded in this process, or in the cache (its marker). When not, it is asked for, to be
    compiled in the background for the next process (`compile_later`; a checked cache folder only),
    as a loop run in numpy is. For the loops compiled for their sizes (`*_sized`), which small data
    use only once they are in the cache: a new model shape never waits for a compiler."""
    if loops_mode() == "numpy":
        return False  # (numpy is numpy, sized or not)
    # the marker's key, made once per loop and argument types in a process (a hash of the
    # description and a stat of the module file: ~50 us, and the one pass asks at every fit)
    signature = (loops.module_file, name, _signature(args))
    key = _KEYS.get(signature)
    if key is None:
        key = _KEYS[signature] = _key(loops.module_file, name, [describe(a) for a in args])
    if key in _compiled_keys:
        return True
    marker = _marker(key)
    if marker is None:
        return False
    if os.path.exists(marker):
        return True
    with _CHOICE_LOCK:
        _asked_in_test[0] |= "PYTEST_CURRENT_TEST" in os.environ  # (at exit it is unset)
        if not _requests:
            import atexit

            atexit.register(compile_later)
        _requests.setdefault(key, (loops.module, name, [describe(a) for a in args]))
    return False


_KEYS: dict[tuple[Any, ...], str] = {}  # (module file, loop, `_signature`) -> `_key` (this process)


def _signature(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """What `describe` tells of the arguments, as a hashable tuple (a dictionary key): equal
    signatures, equal descriptions."""
    out: list[Any] = []
    for a in args:
        if isinstance(a, np.ndarray):
            f = a.flags
            out.append((a.dtype.str, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable))
        elif isinstance(a, tuple):
            out.append(("tuple", _signature(a)))
        else:
            out.append(type(a))  # (bool, int, float, numpy scalars: `describe` tells them by type)
    return tuple(out)


def _numba_types(args: tuple[Any, ...]) -> list[Any]:
    import numba

    return [numba.typeof(a) for a in args]


def background_allowed() -> bool:
    """Whether loops may be compiled by a background process: not disabled, not for a test run."""
    setting = os.environ.get(BACKGROUND_ENV)
    if setting is not None:
        return setting not in ("0", "", "false", "no")
    return "PYTEST_CURRENT_TEST" not in os.environ and not _asked_in_test[0]


def compile_later() -> None:
    """Start the background compilation of the loops this process ran in numpy for want of a cache
    (a detached process of low priority; the next process finds them by their markers)."""
    import json
    import subprocess
    import sys

    from multilevel.numerics.cache import cache_dir

    with _CHOICE_LOCK:
        if all(k in _started for k in _requests):
            return  # nothing asked for since the last start (every fit's end calls this: no folder read)
    root = cache_dir()
    if root is None or not background_allowed():
        return
    folder = os.path.join(root, "compiled")
    if _busy(folder):
        return  # another process compiles now (perhaps these very loops): at exit, or next time
    with _CHOICE_LOCK:
        todo = {k: v for k, v in _requests.items() if k not in _started and not os.path.exists(os.path.join(folder, k))}
        _started.update(todo)
    if not todo:
        return
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "multilevel.numerics.compile", json.dumps(list(todo.values()))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
        # the child's busy file (`_compile_requests`), made now so that no one sees a gap
        os.makedirs(os.path.join(root, "compiled"), mode=0o700, exist_ok=True)
        open(os.path.join(root, "compiled", f".busy-{child.pid}"), "w").close()
    except OSError:
        pass  # next time, then


#: the modules whose loops a background compilation may be asked for
LOOP_MODULES = ("rowpass", "units", "blocked")


def _busy(folder: str) -> bool:
    """Whether a background compilation (its `.busy-<pid>` file, its process alive) works in `folder`."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    for name in names:
        if name.startswith(".busy-"):
            try:
                os.kill(int(name[6:]), 0)
                return True
            except (ValueError, ProcessLookupError):
                continue  # a stale file of a process that died
            except OSError:
                return True  # alive, another user's (cannot be, in our folder; be safe)
    return False


def _compile_requests(requests: list[tuple[str, str, list[Any]]]) -> int:
    """Compile (into the checked cache folder only) each (module, loop, argument description)."""
    import importlib

    from multilevel.numerics.cache import cache_dir

    root = cache_dir()
    if root is None:
        return 0
    # while it works, a file `.busy-<pid>` tells that compiled loops are on their way (benchmarks wait)
    busy = os.path.join(root, "compiled", f".busy-{os.getpid()}")
    os.makedirs(os.path.dirname(busy), mode=0o700, exist_ok=True)
    open(busy, "w").close()
    done = 0
    try:
        for module, name, description in requests:
            if module not in LOOP_MODULES:
                continue  # only the package's own loop modules are ever imported from a request
            loops: Loops = importlib.import_module(f"multilevel.numerics.{module}").LOOPS
            args = tuple(example(d) for d in description)
            loops[name].compile(tuple(_numba_types(args)))
            mark_compiled(_key(loops.module_file, name, description))
            done += 1
    finally:
        try:
            os.remove(busy)
        except OSError:
            pass
    return done


def main(argv: list[str] | None = None) -> None:
    """python -m multilevel.numerics.compile '<json list of [module, loop, argument description]>'"""
    import json
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if hasattr(os, "nice"):
        try:
            os.nice(10)  # the user's work first
        except OSError:
            pass
    os.environ[LOOPS_ENV] = "compiled"
    _compile_requests(json.loads(argv[0]))


if __name__ == "__main__":
    # run as a script this file is `__main__`: use the package's module (the one the loops know)
    from multilevel.numerics.compile import main as package_main

    package_main()
