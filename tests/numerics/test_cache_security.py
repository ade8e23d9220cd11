"""Issue 11, item 8: compiled code is loaded only from a folder no other user can write to.

The folder checks run without compiling anything; subprocesses check the whole path: a cache file
planted in a folder others can write is never loaded (while the same file in our own folder is),
and a user with a read-only home (and a read-only install) can still fit."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest

import multilevel as ml
from multilevel.numerics import cache

SRC = str(Path(ml.__file__).resolve().parent.parent)  # the package under test, for subprocesses
OTHER_UID = 54321


def _fresh(monkeypatch, **env):
    """Environment for cache_dir() with the given variables (None: unset), and no remembered choice."""
    for k in ("MULTILEVEL_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        if v is not None:
            monkeypatch.setenv(k, v)
    monkeypatch.setattr(cache, "_CACHE_CHOICE", {})


def test_a_new_cache_folder_is_private_and_accepted(tmp_path, monkeypatch):
    _fresh(monkeypatch, MULTILEVEL_CACHE_DIR=str(tmp_path / "a" / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.cache_dir() == str(tmp_path / "a" / "cache")
    assert (tmp_path / "a" / "cache").stat().st_mode & 0o777 == 0o700


def test_the_default_folder_is_in_the_users_cache_home(tmp_path, monkeypatch):
    _fresh(monkeypatch, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert cache.cache_dir() == str(tmp_path / "xdg" / "multilevel")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == str(tmp_path / "home" / ".cache" / "multilevel")


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no uids on this system")
@pytest.mark.parametrize("case", ["other owner", "group-writable", "world-writable", "symlink", "file",
                                  "parent writable by others", "parent of another user"])
def test_a_folder_others_can_write_is_refused(tmp_path, monkeypatch, case):
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    d.chmod(0o700)
    uid = os.getuid()
    if case == "other owner":
        if uid == 0:
            os.chown(d, OTHER_UID, -1)
        else:
            uid = OTHER_UID + 1  # not root: ask as if this process were another user
    elif case == "group-writable":
        d.chmod(0o770)
    elif case == "world-writable":
        d.chmod(0o707)
    elif case == "symlink":
        real, d = d, tmp_path / "link"
        d.symlink_to(real)
    elif case == "file":
        d.rmdir()
        d.write_text("")
    elif case == "parent writable by others":
        d = tmp_path / "open" / "cache"
        d.parent.mkdir(mode=0o777)
        d.parent.chmod(0o777)
        d.mkdir(mode=0o700)
    elif case == "parent of another user":
        d = tmp_path / "theirs" / "cache"
        d.parent.mkdir(mode=0o755)
        d.mkdir(mode=0o700)
        if uid == 0:
            os.chown(d.parent, OTHER_UID, -1)
        else:
            pytest.skip("needs root to give a folder to another user")
    reason = cache.unsafe_reason(str(d), uid)
    assert reason is not None
    expected = {"other owner": "another user", "group-writable": "other users can write",
                "world-writable": "other users can write", "symlink": "symbolic link", "file": "not a folder",
                "parent writable by others": "writable by other users", "parent of another user": "another user"}
    assert expected[case] in reason
    # named by MULTILEVEL_CACHE_DIR: a warning, and no cache at all (compiled in memory)
    _fresh(monkeypatch, MULTILEVEL_CACHE_DIR=str(d))
    if uid != os.getuid():
        monkeypatch.setattr(cache, "unsafe_reason", lambda path, uid=uid, f=cache.unsafe_reason: f(path, uid))
    with pytest.warns(RuntimeWarning, match="does not cache compiled code"):
        assert cache.cache_dir() is None


def test_a_sticky_shared_parent_is_accepted(tmp_path, monkeypatch):
    # as /tmp: world-writable but sticky, so nobody else can rename or replace our folder
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    _fresh(monkeypatch, MULTILEVEL_CACHE_DIR=str(shared / "multilevel-x"))
    assert cache.cache_dir() == str(shared / "multilevel-x")


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no uids on this system")
def test_the_temporary_folder_fallback_of_another_user_is_refused(tmp_path, monkeypatch):
    # the hole of issue 11: <tmp>/multilevel-<uid> was used whoever had made it
    planted = tmp_path / f"multilevel-{os.getuid()}"
    planted.mkdir(mode=0o755)
    if os.getuid() == 0:
        os.chown(planted, OTHER_UID, -1)
        check = cache.unsafe_reason
    else:
        check = lambda path, f=cache.unsafe_reason: f(path, OTHER_UID + 1)  # noqa: E731
    _fresh(monkeypatch)
    unusable_home = tmp_path / "home-is-a-file"
    unusable_home.write_text("")
    monkeypatch.setattr(cache, "cache_candidates", lambda: ((str(unusable_home / "multilevel"), False),
                                                              (str(planted), False)))
    monkeypatch.setattr(cache, "unsafe_reason", check)
    with pytest.warns(RuntimeWarning, match="belongs to another user"):
        assert cache.cache_dir() is None


class _Planted:
    """Unpickling this runs code: what a planted numba cache index (.nbi, a pickle) could do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('planted code ran')",))


#: compiles one small loop (numba caches it in <MULTILEVEL_CACHE_DIR>/numba), or loads it from there
_ONE_LOOP = "import numpy as np; from multilevel.numerics import rowpass; print(rowpass.kernel('nonfinite')(np.zeros(3)))"


def _run(code: str, folder: Path) -> subprocess.CompletedProcess:
    # the compiled loop, not its numpy version (compile.run), whatever the cache holds
    env = {**os.environ, "MULTILEVEL_CACHE_DIR": str(folder), "PYTHONPATH": SRC, "MULTILEVEL_LOOPS": "compiled"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_a_cache_file_planted_in_a_folder_others_can_write_is_never_loaded(tmp_path):
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    own.chmod(0o700)
    out = _run(_ONE_LOOP, own)  # fills our folder with numba's cache files of the loop
    assert out.returncode == 0, out.stderr
    indexes = list((own / "numba").rglob("*.nbi"))
    assert indexes, "numba cached nothing in the checked folder"
    marker = tmp_path / "marker"
    for index in indexes:  # numba unpickles the index first: the planted object runs on loading
        index.write_bytes(pickle.dumps(_Planted(str(marker))))
    shared = tmp_path / "shared"
    shutil.copytree(own, shared)
    shared.chmod(0o777)  # anyone may write here
    out = _run(_ONE_LOOP, shared)
    assert out.returncode == 0, out.stderr
    assert not marker.exists(), "a cache file planted in a world-writable folder was loaded"
    assert "does not cache compiled code" in out.stderr and "other users can write" in out.stderr
    # the same files in our own folder are loaded: the plant above would have run
    out = _run(_ONE_LOOP, own)
    assert marker.exists()


def _runner() -> list[str] | None:
    """A command prefix that runs a program as an unprivileged user (nobody), or None."""
    if not hasattr(os, "getuid") or os.getuid() != 0:
        return []  # already not root: a read-only folder is read-only for us
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    return None


def test_a_user_with_a_read_only_home_and_install_can_fit():
    # numba's own locator needs a writable install (__pycache__) or home (~/.cache/numba); before
    # issue 11 such a user got "RuntimeError: cannot cache function ... no locator available"
    runner = _runner()
    # folders the unprivileged user can reach (pytest's tmp_path is private to root)
    base = Path(tempfile.mkdtemp(prefix="ml-cache-test-"))
    try:
        base.chmod(0o755)
        home, tmp = base / "home", base / "tmp"
        home.mkdir(mode=0o555)
        home.chmod(0o555)
        tmp.mkdir()
        tmp.chmod(0o1777)
        if runner is None:
            # root without setpriv: a home that is a file is unusable even for root
            home.rmdir()
            home.write_text("")
            runner = []
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(tmp),
               "PYTHONPATH": SRC, "MULTILEVEL_LOOPS": "compiled", "MULTILEVEL_BACKGROUND_COMPILE": "0"}
        code = textwrap.dedent("""
            import multilevel as ml
            from multilevel.numerics import cache
            fit = ml.fit("mathach ~ ses + (1 | school)", ml.datasets.hsb())
            print(cache.cache_dir())
            print(repr(float(fit.fixed["estimate"]["ses"])))
        """)
        out = subprocess.run(runner + [sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        folder, slope = out.stdout.split()
        here = ml.fit("mathach ~ ses + (1 | school)", ml.datasets.hsb())  # cached in this process
        assert float(slope) == pytest.approx(float(here.fixed["estimate"]["ses"]), rel=1e-10)
        assert folder == str(tmp / f"multilevel-{65534 if runner else os.getuid()}") or folder == "None"
    finally:
        for p in base.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        base.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
