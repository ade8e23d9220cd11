"""Issue 11, item 8: compiled code is loaded only from a folder no other user can write to.

The folder checks run without compiling anything; two subprocesses check the whole path: a module
planted in a folder others can write is never run, and a user with a read-only home (and a
read-only install) can still fit."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest

import multilevel as ml
from multilevel.numerics import kernels

SRC = str(Path(ml.__file__).resolve().parent.parent)  # the package under test, for subprocesses
OTHER_UID = 54321


def _fresh(monkeypatch, **env):
    """Environment for cache_dir() with the given variables (None: unset), and no remembered choice."""
    for k in ("MULTILEVEL_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        if v is not None:
            monkeypatch.setenv(k, v)
    monkeypatch.setattr(kernels, "_CACHE_CHOICE", {})


def test_a_new_cache_folder_is_private_and_accepted(tmp_path, monkeypatch):
    _fresh(monkeypatch, MULTILEVEL_CACHE_DIR=str(tmp_path / "a" / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.cache_dir() == str(tmp_path / "a" / "cache")
    assert (tmp_path / "a" / "cache").stat().st_mode & 0o777 == 0o700


def test_the_default_folder_is_in_the_users_cache_home(tmp_path, monkeypatch):
    _fresh(monkeypatch, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert kernels.cache_dir() == str(tmp_path / "xdg" / "multilevel")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kernels.cache_dir() == str(tmp_path / "home" / ".cache" / "multilevel")


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
    reason = kernels.unsafe_reason(str(d), uid)
    assert reason is not None
    expected = {"other owner": "another user", "group-writable": "other users can write",
                "world-writable": "other users can write", "symlink": "symbolic link", "file": "not a folder",
                "parent writable by others": "writable by other users", "parent of another user": "another user"}
    assert expected[case] in reason
    # named by MULTILEVEL_CACHE_DIR: a warning, and no cache at all (compiled in memory)
    _fresh(monkeypatch, MULTILEVEL_CACHE_DIR=str(d))
    if uid != os.getuid():
        monkeypatch.setattr(kernels, "unsafe_reason", lambda path, uid=uid, f=kernels.unsafe_reason: f(path, uid))
    with pytest.warns(RuntimeWarning, match="does not cache compiled code"):
        assert kernels.cache_dir() is None


def test_a_sticky_shared_parent_is_accepted(tmp_path, monkeypatch):
    # as /tmp: world-writable but sticky, so nobody else can rename or replace our folder
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    _fresh(monkeypatch, MULTILEVEL_CACHE_DIR=str(shared / "multilevel-x"))
    assert kernels.cache_dir() == str(shared / "multilevel-x")


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no uids on this system")
def test_the_temporary_folder_fallback_of_another_user_is_refused(tmp_path, monkeypatch):
    # the hole of issue 11: <tmp>/multilevel-<uid> was used whoever had made it
    planted = tmp_path / f"multilevel-{os.getuid()}"
    planted.mkdir(mode=0o755)
    if os.getuid() == 0:
        os.chown(planted, OTHER_UID, -1)
        check = kernels.unsafe_reason
    else:
        check = lambda path, f=kernels.unsafe_reason: f(path, OTHER_UID + 1)  # noqa: E731
    _fresh(monkeypatch)
    unusable_home = tmp_path / "home-is-a-file"
    unusable_home.write_text("")
    monkeypatch.setattr(kernels, "cache_candidates", lambda: ((str(unusable_home / "multilevel"), False),
                                                              (str(planted), False)))
    monkeypatch.setattr(kernels, "unsafe_reason", check)
    with pytest.warns(RuntimeWarning, match="belongs to another user"):
        assert kernels.cache_dir() is None


def _plant(folder: Path, marker: Path) -> None:
    """A generated module, as the kernels would name it, whose .pyc writes `marker` when imported
    (an unchecked-hash .pyc: Python runs it whatever the .py next to it says)."""
    digest = hashlib.sha256(Path(kernels.__file__).read_bytes()).hexdigest()[:16]
    py = folder / f"multilevel_kernels_any_{digest}.py"
    evil = folder / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('planted code ran')\n")
    pyc = importlib.util.cache_from_source(str(py))
    os.makedirs(os.path.dirname(pyc), exist_ok=True)
    py_compile.compile(str(evil), cfile=pyc, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    evil.unlink()
    py.write_text("# planted\n")


def test_a_module_planted_in_a_folder_others_can_write_is_never_run(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)  # anyone may write here
    marker = tmp_path / "marker"
    _plant(folder, marker)
    env = {**os.environ, "MULTILEVEL_CACHE_DIR": str(folder), "PYTHONPATH": SRC}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # the generated module is made (not called: nothing is compiled, so this takes a second)
    code = "from multilevel.numerics import kernels; m = kernels._any(); print(m.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not marker.exists(), "a module planted in a world-writable folder was imported"
    assert "does not cache compiled code" in out.stderr and "other users can write" in out.stderr


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
               "PYTHONPATH": SRC}
        code = textwrap.dedent("""
            import multilevel as ml
            from multilevel.numerics import kernels
            fit = ml.fit("mathach ~ ses + (1 | school)", ml.datasets.hsb())
            print(kernels.cache_dir())
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
