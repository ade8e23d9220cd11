"""Where compiled code is cached, and why it is safe to load from there.

The loops of `rowpass` and `units` are compiled by numba (`compile`) and cached on disk, so that a
machine compiles each loop once; this module chooses the folder (`cache_dir`) and points numba's
cache there (a locator of ours). Nothing here imports numba until a loop is compiled.
"""
from __future__ import annotations

import os
import threading
from functools import cache

# ----- where compiled code is cached, and why it is safe to load from there ------------------------
#
# Loading cached code runs it: numba's cache files (.nbi/.nbc) are unpickled. So code is cached, and loaded, only from a
# folder no other user can write to (checked with lstat: owned by this user, no group/other write
# bit, not a symbolic link; created 0700, its parents owned by this user or root and not writable
# by others unless sticky, as /tmp is). Where no such folder exists, the kernels are compiled in
# memory without a cache (a slower first fit in every process, never someone else's code).
#
# Where: $MULTILEVEL_CACHE_DIR if set (if that folder is unsafe: no cache, with a warning), else
# $XDG_CACHE_HOME/multilevel or ~/.cache/multilevel, else (no writable home) <tmp>/multilevel-<uid>.
# numba's cache files of the package's loops go to the subfolder `numba` of that folder (a locator
# of ours, first in numba's list, answers for the modules of this folder only), so
# numba never needs a writable install or home: it does not touch NUMBA_CACHE_DIR or other code.

CACHE_ENV = "MULTILEVEL_CACHE_DIR"


def cache_candidates() -> tuple[tuple[str, bool], ...]:
    """The folders tried for the cache, in order, each with whether the user named it."""
    import tempfile

    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return ((os.path.abspath(os.path.expanduser(explicit)), True),)
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return (
        (os.path.join(os.path.abspath(home), "multilevel"), False),
        (os.path.join(tempfile.gettempdir(), f"multilevel-{uid}"), False),
    )


def unsafe_reason(path: str, uid: int | None = None) -> str | None:
    """Why code must not be loaded from the folder `path` (None: it is safe).

    Safe means: an existing folder (not a symbolic link), owned by `uid` (default: this process's
    user), with no write bit for group or others, writable by us; and every parent folder owned by
    `uid` or root and not writable by group or others unless it has the sticky bit (as /tmp has:
    nobody else can then rename or replace our folder). On systems without uids (Windows) the
    per-user folders are trusted as they are."""
    import stat

    if not hasattr(os, "getuid"):
        return None if os.path.isdir(path) and os.access(path, os.W_OK) else "it is not a writable folder"
    uid = os.getuid() if uid is None else uid
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if st.st_uid != uid:
        return f"it belongs to another user (uid {st.st_uid}, not {uid})"
    if st.st_mode & 0o022:
        return f"other users can write to it (mode {stat.S_IMODE(st.st_mode):o})"
    if not os.access(path, os.W_OK | os.X_OK):
        return "it is not writable"
    parent = os.path.realpath(os.path.dirname(path) or ".")
    while True:
        pst = os.stat(parent)
        if pst.st_uid not in (uid, 0):
            return f"its parent folder {parent} belongs to another user (uid {pst.st_uid})"
        if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
            return f"its parent folder {parent} is writable by other users (mode {stat.S_IMODE(pst.st_mode):o})"
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up


def _make_private(path: str) -> None:
    """Create `path` (and missing parents) with the folder itself 0700; errors are left to the check."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, 0o700)
    except OSError:
        pass


_CACHE_LOCK = threading.Lock()
_CACHE_CHOICE: dict[tuple[tuple[str, bool], ...], str | None] = {}


def cache_dir() -> str | None:
    """The folder compiled code is cached in and loaded from, or None: compile in memory.

    The first safe folder of `cache_candidates()` (see `unsafe_reason`), created 0700 if missing.
    A folder named by MULTILEVEL_CACHE_DIR that is unsafe, or a folder of ours in the temporary
    directory that someone else made, gets a warning (once per process) and no cache."""
    import warnings

    candidates = cache_candidates()
    with _CACHE_LOCK:
        if candidates in _CACHE_CHOICE:
            return _CACHE_CHOICE[candidates]
        chosen = None
        for path, explicit in candidates:
            _make_private(path)
            reason = unsafe_reason(path)
            if reason is None:
                chosen = path
                break
            # an unwritable home is ordinary (read-only containers); anything else is worth a word
            if explicit or (os.path.lexists(path) and "not writable" not in reason and "cannot be read" not in reason):
                warnings.warn(
                    f"multilevel does not cache compiled code in {path}: {reason}. Loading code from a "
                    f"folder others can change could run their code. The kernels are compiled in memory "
                    f"instead (slower first fit in each process). To cache them, set {CACHE_ENV} to a "
                    f"folder of your own that only you can write to (e.g. mode 700), or remove {path}.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                if explicit:
                    break
        _CACHE_CHOICE[candidates] = chosen
        # numba's locator is installed when a loop is compiled (`use_numba_cache`), not here: the
        # choice of numpy or compiled loops (`compile.run`) asks for the folder without numba
        return chosen


def use_numba_cache() -> bool:
    """Whether numba may cache the kernels on disk: only in a checked folder, through our locator."""
    return cache_dir() is not None and _install_numba_locator()


@cache
def _install_numba_locator() -> bool:
    """Put a locator first in numba's list that keeps the cache files of the modules of this folder
    (`rowpass`, `units`) in `<cache_dir()>/numba` (numba's own choice would be the install's
    __pycache__, or ~/.cache/numba, or fail with "no locator available" when neither is writable).
    False (no disk cache) if numba's internals are not as expected or the user chose the locators."""
    try:
        from numba.core import caching, config
    except ImportError:
        return False
    base = getattr(caching, "UserProvidedCacheLocator", None) or getattr(caching, "_UserProvidedCacheLocator", None)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if base is None or impl is None or not isinstance(getattr(impl, "_locator_classes", None), list):
        return False
    if getattr(config, "CACHE_LOCATOR_CLASSES", None):
        return False

    here = os.path.dirname(os.path.realpath(__file__))

    # numba's locator base class, found at run time (its name changed between numba versions)
    class MultilevelCacheLocator(base):  # type: ignore[valid-type,misc]
        def __init__(self, py_func, py_file, root: str = ""):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = os.path.join(root, "numba", self.get_suitable_cache_subpath(py_file))

        def ensure_cache_path(self):
            # the subfolders are made private too (the root already is: cache_dir())
            os.makedirs(self.get_cache_path(), mode=0o700, exist_ok=True)

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.realpath(py_file)) != here:
                return None  # anyone else's functions: numba's own locators, as before
            root = cache_dir()
            if root is None:
                # never fall through to numba's other locators (the install's __pycache__, ...)
                raise RuntimeError(f"multilevel: no checked cache folder for {py_file}; compile it with cache=False")
            self = cls(py_func, py_file, root)
            self.ensure_cache_path()
            return self

    impl._locator_classes.insert(0, MultilevelCacheLocator)
    return True
