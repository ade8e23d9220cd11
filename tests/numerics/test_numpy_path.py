"""Issue 13: the loops' numpy versions (used while the compiled ones are not in the cache) against the
compiled loops, and the choice between them (`compile.run`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import multilevel as ml
from conftest import MODELS, hsb
from multilevel.design.columns import Columns
from multilevel.numerics import compile as compiling
from multilevel.numerics import rowpass, units

SRC = str(Path(ml.__file__).resolve().parent.parent)  # the package under test, for subprocesses


def _unit_blocks(rng, J, q, p, weighted):
    """Per-unit cross-products C_j of W = [Z | X | y] (q + p + 1 columns; Z's first column the
    intercept, as in a model), from 1-12 random rows per unit."""
    k = q + p + 1
    C = np.zeros((J, k, k))
    for j in range(J):
        n = int(rng.integers(1, 13))
        W = rng.normal(size=(n, k))
        W[:, 0] = 1.0
        w = rng.uniform(0.5, 2.0, n) if weighted else np.ones(n)
        C[j] = (W * w[:, None]).T @ W
    return C


@pytest.mark.parametrize("q, p, J, weighted, reml", [(1, 1, 5, False, True), (2, 4, 60, True, False),
                                                     (3, 6, 200, False, True), (4, 2, 33, True, True)])
def test_the_numpy_algebra_equals_the_compiled_loops(q, p, J, weighted, reml):
    rng = np.random.default_rng(q * 100 + p)
    C = _unit_blocks(rng, J, q, p, weighted)
    K = np.ascontiguousarray(C[:, :q, :])
    w2 = rng.uniform(0.5, 3.0, J) if weighted else np.ones(J)
    total = np.einsum("j,jab->ab", w2, C)
    XtX, Xty, yty = total[q:q + p, q:q + p].copy(), total[q:q + p, q + p].copy(), float(total[-1, -1])
    n, ldw = float(rng.integers(J * 3, J * 6)), float(rng.normal()) if weighted else 0.0
    for _ in range(3):
        lam = np.tril(rng.normal(size=(q, q)))
        args = (K, q, p, lam, w2, XtX, Xty, yty, n, ldw, reml)
        G_c, G_n = np.empty((q, q)), np.empty((q, q))
        d_c = units.LOOPS["deviance_gradient"](*args, G_c)
        d_n = units.NUMPY["deviance_gradient"](*args, G_n)
        assert np.isfinite(d_c)
        assert d_n == pytest.approx(d_c, rel=1e-12)
        np.testing.assert_allclose(G_n, G_c, rtol=1e-12, atol=1e-12 * np.abs(G_c).max())
        outs = {}
        for name, fn in (("compiled", units.LOOPS["solve_units"]), ("numpy", units.NUMPY["solve_units"])):
            arrays = (np.empty((J, q, q)), np.empty((J, q, q)), np.empty((J, q, p)), np.empty((J, q)),
                      np.empty((p, p)), np.empty(p))
            outs[name] = (fn(C, q, p, lam, w2, *arrays), arrays)
        (ld_c, ss_c), arrays_c = outs["compiled"]
        (ld_n, ss_n), arrays_n = outs["numpy"]
        assert (ld_n, ss_n) == pytest.approx((ld_c, ss_c), rel=1e-12)
        for a, b in zip(arrays_n, arrays_c):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_a_matrix_not_positive_definite_is_nan_in_both():
    C = np.zeros((2, 3, 3))
    C[:, 0, 0] = [1.0, -5.0]  # M = lam' Z'Z lam + 1 < 0 for the second unit
    lam = np.eye(1)
    out = [np.empty((2, 1, 1)), np.empty((2, 1, 1)), np.empty((2, 1, 1)), np.empty((2, 1)), np.empty((1, 1)),
           np.empty(1)]
    for fn in (units.LOOPS["solve_units"], units.NUMPY["solve_units"]):
        assert np.isnan(fn(C, 1, 1, lam, np.ones(2), *out)[0])
    G = np.empty((1, 1))
    for fn in (units.LOOPS["deviance_gradient"], units.NUMPY["deviance_gradient"]):
        assert np.isnan(fn(np.ascontiguousarray(C[:, :1]), 1, 1, lam, np.ones(2), np.eye(1), np.zeros(1), 1.0,
                           10.0, 0.0, True, G))


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_numpy_pass_equals_the_compiled_pass(ordered, weighted):
    rng = np.random.default_rng(7)
    J, n = 41, 70_000  # more rows than one numpy block (rowpass.NUMPY_BLOCK_ROWS)
    codes = np.sort(rng.integers(0, J, n)) if ordered else rng.integers(0, J, n)
    x, v, y = rng.normal(size=(3, n))
    w = rng.uniform(0.5, 2, n) if weighted else np.empty(0)
    cols = Columns(((), (x,), (), (x,), (v,), (x, v), (y,)), 2, 4, n)
    bases, recipe, affine, cmap = cols.recipe()
    affine = affine.copy()
    affine[:, 0] += rng.normal(size=affine.shape[0])  # shifts, scales and centres as the coordinates make
    affine[:, 1] *= rng.uniform(0.5, 2, affine.shape[0])
    affine[:, 2] = np.where(recipe[:, 0] >= 0, rng.normal(size=affine.shape[0]), 0.0)
    u, k = recipe.shape[0], cmap.shape[0]
    out = {}
    for name, fn in (("compiled", rowpass.LOOPS["accumulate"]), ("numpy", rowpass.NUMPY["accumulate"])):
        C, total, counts = np.zeros((J, k, k)), np.zeros((k, k)), np.zeros(J)
        fn(bases, recipe, affine, cmap, u, k, codes, w, C, np.empty((rowpass.BLOCK_ROWS, u)), total, counts)
        out[name] = (C, total, counts)
    for a, b in zip(out["numpy"], out["compiled"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_the_numpy_row_helpers_equal_the_compiled_ones():
    rng = np.random.default_rng(11)
    x = rng.normal(size=500)
    x[[3, 70]] = np.nan
    x[[5, 6, 400]] = [np.inf, -np.inf, np.inf]
    assert rowpass.NUMPY["nonfinite"](x) == tuple(rowpass.LOOPS["nonfinite"](x)) == (2, 3)
    for v in (np.repeat([1.0, 2.0, 5.0, 9.0], [3, 1, 4, 2]), np.array([1.0, 3.0, 2.0]), np.array([4.0])):
        a, b = np.full(v.size, -7), np.full(v.size, -7)
        ja, jb = rowpass.NUMPY["sorted_codes"](v, a), rowpass.LOOPS["sorted_codes"](v, b)
        assert ja == jb
        if ja > 0:
            np.testing.assert_array_equal(a, b)
    codes = rng.integers(0, 30, 500)
    level2 = rng.normal(size=30)[codes]
    for values in (level2, level2 * (1 + 1e-15 * rng.normal(size=500)), x, level2 + (codes == 29) * 0.5):
        args = (np.empty(30), np.zeros(30, dtype=np.bool_), 1e-12)
        assert rowpass.NUMPY["varies"](codes, values, *args) == rowpass.LOOPS["varies"](codes, values, *args)
    ranges = []
    for fn in (rowpass.NUMPY["group_range"], rowpass.LOOPS["group_range"]):
        lo, hi = np.full(31, np.inf), np.full(31, -np.inf)  # unit 30 has no rows
        fn(codes, x, lo, hi)
        ranges.append((lo, hi))
    np.testing.assert_array_equal(ranges[0], ranges[1])
    C = rng.normal(size=(4, 5, 5))
    C2 = C.copy()
    rowpass.NUMPY["mirror"](C)
    rowpass.LOOPS["mirror"](C2)
    np.testing.assert_array_equal(C, C2)


@pytest.mark.parametrize("model", ["M1", "M4", "S4"])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_the_fits_through_both_paths_agree(model, method, monkeypatch):
    fits = {}
    for mode in ("numpy", "compiled"):
        monkeypatch.setenv(compiling.LOOPS_ENV, mode)
        fits[mode] = ml.fit(MODELS[model], hsb(), method=method)
    a, b = fits["numpy"], fits["compiled"]
    assert a.deviance == pytest.approx(b.deviance, rel=1e-10)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-10)
    np.testing.assert_allclose(a.tau.to_numpy(), b.tau.to_numpy(), rtol=1e-10, atol=1e-12)
    assert a.sigma2 == pytest.approx(b.sigma2, rel=1e-10)


def test_the_choice_runs_numpy_until_it_has_cost_what_compiling_would(monkeypatch):
    monkeypatch.delenv(compiling.LOOPS_ENV, raising=False)
    monkeypatch.setattr(compiling, "_numpy_seconds", 0.0)
    monkeypatch.setattr(compiling, "_over", False)
    monkeypatch.setattr(compiling, "_requests", {})
    monkeypatch.setattr(rowpass.LOOPS, "hot", {})
    monkeypatch.setattr(compiling, "_compiled_keys", set())  # as in a new process
    monkeypatch.setattr(compiling, "_marker", lambda key: None)  # as with no cache folder: nothing cached
    ran = []
    x = np.arange(5.0)
    for seconds in (1.0, 1.0, 1.0, 0.1):
        compiling.run(rowpass.LOOPS, "nonfinite", (x,), lambda x: ran.append("numpy"), seconds)
        ran.append(compiling._over)
    # 1 + 1 <= COMPILE_SECONDS (2.5) in numpy; the third would pass it: compiled from then on
    assert ran == ["numpy", False, "numpy", False, True, True]
    assert not compiling._requests  # no cache folder: nothing to compile for next time


def test_describe_gives_what_numba_types():
    import numba

    a = np.zeros((3, 4))
    readonly = np.arange(3.0)
    readonly.setflags(write=False)
    for arg in (a, a.T, a[::2, ::2], readonly, np.zeros(3, dtype=np.bool_), (a[0], a[1]), (0, 0, 0), 3, 2.5, True,
                np.int32(3), np.float64(1.5)):
        assert numba.typeof(compiling.example(compiling.describe(arg))) == numba.typeof(arg)


def _fit_in_new_process(cache: Path, extra: dict[str, str] | None = None) -> dict:
    code = (
        "import json, sys, multilevel as ml\n"
        "from multilevel.numerics import compile as c\n"
        "f = ml.fit('mathach ~ (sector + meanses) * cses + (cses | school)', ml.datasets.hsb())\n"
        "print(json.dumps({'numba': 'numba' in sys.modules, 'numpy_seconds': c._numpy_seconds,\n"
        "                  'requests': list(c._requests.values()), 'deviance': f.deviance}))\n"
    )
    env = {**os.environ, "MULTILEVEL_CACHE_DIR": str(cache), "PYTHONPATH": SRC,
           compiling.BACKGROUND_ENV: "0", **(extra or {})}
    env.pop(compiling.LOOPS_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_a_fresh_cache_fits_in_numpy_and_what_it_asks_to_compile_is_then_loaded(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    first = _fit_in_new_process(cache)
    assert not first["numba"]  # no compiler, no numba import: the first fit of a fresh machine
    assert {(m, name) for m, name, _ in first["requests"]} >= {("rowpass", "accumulate"),
                                                                 ("units", "deviance_gradient")}
    # what the background process does (here in the foreground), then a new process loads it all
    env = {**os.environ, "MULTILEVEL_CACHE_DIR": str(cache), "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-m", "multilevel.numerics.compile", json.dumps(first["requests"])],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((cache / "compiled").iterdir())) == len(first["requests"])
    compiled = sorted((cache / "numba").rglob("*.nbc"))
    second = _fit_in_new_process(cache)
    assert second["numba"] and second["numpy_seconds"] == 0.0 and not second["requests"]
    assert sorted((cache / "numba").rglob("*.nbc")) == compiled  # loaded, nothing compiled again
    assert second["deviance"] == pytest.approx(first["deviance"], rel=1e-10)


def test_no_background_compilation_is_started_for_a_test_run_or_when_disabled(monkeypatch):
    import subprocess as sp

    started = []
    monkeypatch.setattr(sp, "Popen", lambda *a, **k: started.append(a))
    monkeypatch.setattr(compiling, "_requests", {"k": ("rowpass", "nonfinite", [])})
    monkeypatch.setattr(compiling, "_started", set())
    monkeypatch.setattr(compiling, "_asked_in_test", [True])
    monkeypatch.delenv(compiling.BACKGROUND_ENV, raising=False)
    monkeypatch.delenv("PYTEST_CURRENT_TEST")  # as at the exit of a test run
    compiling.compile_later()
    monkeypatch.setenv(compiling.BACKGROUND_ENV, "0")
    compiling.compile_later()
    assert not started


def test_a_request_for_a_module_that_is_not_a_loop_module_imports_nothing(tmp_path, monkeypatch):
    """The background compiler reads its requests from its command line: only the package's loop
    modules are ever imported from one (a request naming another module is skipped)."""
    import sys

    from multilevel.numerics import compile as compile_module

    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("MULTILEVEL_CACHE_DIR", str(folder))
    from multilevel.numerics import cache

    monkeypatch.setattr(cache, "_CACHE_CHOICE", {})
    before = set(sys.modules)
    assert compile_module._compile_requests([["errors", "anything", []], ["../../x", "y", []]]) == 0
    assert not {m for m in set(sys.modules) - before if m.startswith("multilevel")}


def test_a_sized_loop_serves_small_data_only_once_it_is_in_the_cache(monkeypatch, tmp_path):
    """`compile.ready`: not in the cache -> False, and asked for (compiled in the background for the
    next process); its marker present -> True; MULTILEVEL_LOOPS=numpy -> False."""
    monkeypatch.delenv(compiling.LOOPS_ENV, raising=False)
    monkeypatch.setattr(compiling, "_requests", {})
    monkeypatch.setattr(compiling, "_compiled_keys", set())
    monkeypatch.setattr(compiling, "_marker", lambda key: str(tmp_path / key))
    x = np.arange(5.0)
    args = (x, (0,) * 2, (0,) * 3)
    assert not compiling.ready(units.LOOPS, "solve_units_sized", args)
    [(key, request)] = compiling._requests.items()
    assert request[:2] == ("units", "solve_units_sized")
    (tmp_path / key).touch()  # what the background compilation leaves
    assert compiling.ready(units.LOOPS, "solve_units_sized", args)
    assert not compiling.ready(units.LOOPS, "solve_units_sized", (x, (0,) * 3, (0,) * 3))  # another shape
    monkeypatch.setenv(compiling.LOOPS_ENV, "numpy")
    assert not compiling.ready(units.LOOPS, "solve_units_sized", args)
