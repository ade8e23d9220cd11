"""The compiled loops (multilevel.numerics.rowpass and units) against plain numpy, and the fast paths of the design
(ids in order, products of numeric columns, the lean Parquet reader) against the general ones."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import hsb
from multilevel.design.builder import unit_codes
from multilevel.design.columns import Columns
from multilevel.design.summaries import GroupSummaries
from multilevel.engine.covariance import LambdaTemplate
from multilevel.engine.objective import Objective, deviance, solve_at
from multilevel.interfaces.api import prepare
from multilevel.numerics import rowpass


def _dense_cross_products(W, codes, J, w=None):
    w = np.ones(len(codes)) if w is None else w
    C = np.zeros((J, W.shape[1], W.shape[1]))
    for j in range(J):
        rows = codes == j
        C[j] = (W[rows] * w[rows, None]).T @ W[rows]
    return C


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_one_pass_equals_per_unit_products(ordered, weighted):
    rng = np.random.default_rng(3)
    J, n = 37, 5000  # more rows than one block (rowpass.BLOCK_ROWS)
    codes = np.sort(rng.integers(0, J, n)) if ordered else rng.integers(0, J, n)
    x, v, y = rng.normal(size=(3, n))
    w = rng.uniform(0.5, 2, n) if weighted else None
    # columns: 1, x | 1, x, v, x*v | y (the intercept and x shared by Z and X)
    cols = Columns(((), (x,), (), (x,), (v,), (x, v), (y,)), 2, 4, n)
    C, total, counts = rowpass.cross_products(*cols.recipe(), codes, J, w)
    assert cols.recipe()[1].shape[0] == 5  # 7 columns, 5 distinct: the shared 1 and x once each
    W = np.column_stack([np.ones(n), x, np.ones(n), x, v, x * v, y])
    np.testing.assert_allclose(C, _dense_cross_products(W, codes, J, w), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total, C.sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(counts, np.bincount(codes, minlength=J))
    # chunks of rows add into the same array
    C2 = np.zeros_like(C)
    for a in range(0, n, 1234):
        part = Columns(tuple(tuple(f[a : a + 1234] for f in fs) for fs in cols.factors), 2, 4, min(1234, n - a))
        rowpass.accumulate_into(*part.recipe(), codes[a : a + 1234], C2, None if w is None else w[a : a + 1234])
    np.testing.assert_allclose(rowpass.mirror_upper(C2), C, rtol=1e-12, atol=1e-12)


def test_ids_in_order_are_coded_as_factorize_codes_them():
    ids = pd.Series(np.repeat([3, 7, 8, 20, 21], [2, 1, 4, 1, 3]))
    codes, units = unit_codes(ids, "g")
    ref_codes, ref_units = pd.factorize(ids, sort=True)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(units, ref_units)
    shuffled = ids.sample(frac=1, random_state=1).reset_index(drop=True)
    codes, units = unit_codes(shuffled, "g")  # not in order: the hash table
    ref_codes, ref_units = pd.factorize(shuffled, sort=True)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(units, ref_units)


def test_the_fit_does_not_depend_on_the_order_of_the_rows():
    d = hsb()
    a = ml.fit("mathach ~ (sector + meanses) * cses + (cses | school)", d.sort_values("school"))
    b = ml.fit("mathach ~ (sector + meanses) * cses + (cses | school)", d.sample(frac=1, random_state=2))
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-9)
    np.testing.assert_allclose(a.tau.to_numpy(), b.tau.to_numpy(), rtol=1e-7)
    assert a.group_labels == b.group_labels if hasattr(a, "group_labels") else a.design.group_labels == b.design.group_labels


def test_level_of_a_variable_from_the_early_stopping_check():
    codes = np.repeat(np.arange(4), 3)
    level2 = np.repeat([1.0, 2.0, 3.0, 4.0], 3)
    nearly = level2 * (1 + 1e-15 * np.arange(12))  # rounding only: still level 2
    level1 = level2.copy()
    level1[-1] += 0.5  # varies in the last unit only
    f = rowpass.kernel("varies")
    check = lambda x: f(codes, x, np.empty(4), np.zeros(4, dtype=np.bool_), 1e-12)  # noqa: E731
    assert not check(level2) and not check(nearly) and check(level1)


def test_missing_and_infinite_values_are_counted():
    x = np.array([1.0, np.nan, np.inf, -np.inf, 2.0, np.nan])
    assert rowpass.kernel("nonfinite")(x) == (2, 2)


@pytest.mark.parametrize("formula", ["mathach ~ cses + (1 | school)", "mathach ~ (sector + meanses) * cses + (cses | school)",
                                     "mathach ~ meanses + cses + (1 + female + cses | school)"])
@pytest.mark.parametrize("reml", [True, False])
def test_fused_deviance_equals_the_factorised_one_and_the_gradient_its_derivative(formula, reml):
    d = prepare(ml.parse_formula(formula), hsb())
    s = d.summaries()
    t = LambdaTemplate.from_blocks(d.blocks, d.z_names, d.group)
    rng = np.random.default_rng(5)
    theta = t.start() * rng.uniform(0.3, 0.9, t.start().size) + 0.05 * (~t.is_diagonal)
    objective = Objective(s, t, reml)
    dev, g = objective.value_and_grad(theta)
    assert dev == pytest.approx(deviance(solve_at(s, t.lam(theta)), reml), rel=1e-12)
    # the gradient is the derivative of the deviance (central differences)
    h = 1e-6
    fd = []
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        fd.append((objective.value_and_grad(theta + e)[0] - objective.value_and_grad(theta - e)[0]) / (2 * h))
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-4)


def test_weighted_fused_evaluation_equals_the_factorised_one():
    d = hsb().copy()
    d["w1"] = np.random.default_rng(1).uniform(0.5, 2.0, len(d))
    design = prepare(ml.parse_formula("mathach ~ cses + meanses + (cses | school)"), d, weights="w1")
    s = design.summaries()
    t = LambdaTemplate.from_blocks(design.blocks, design.z_names, design.group)
    theta = np.array([0.3, 0.05, 0.1])
    dev, _ = Objective(s, t, False).value_and_grad(theta)
    assert dev == pytest.approx(deviance(solve_at(s, t.lam(theta)), False), rel=1e-12)


def test_summaries_from_matrices_equal_those_from_recipes():
    d = prepare(ml.parse_formula("mathach ~ (sector + meanses) * cses + (cses | school)"), hsb())
    a = d.summaries()
    # in the summaries' internal coordinates (`multilevel.design.coordinates`): X S and y - m_y
    b = GroupSummaries.from_arrays(d.Z, d.X @ d.coords.S, d.y - d.coords.y_shift, d.codes, d.n_groups)
    np.testing.assert_allclose(a.C, b.C, rtol=1e-12, atol=1e-9)


def test_products_of_numeric_columns_are_built_without_formulaic_as_formulaic_builds_them():
    # a term formulaic must build itself (a text factor) takes the general path; the same model
    # with the factor as a 0/1 number takes the recipe path: the same numbers and names
    d = hsb().copy()
    d["sector_text"] = np.where(d["sector"] == 1, "b_catholic", "a_public")  # reference: public, as sector = 0
    general = prepare(ml.parse_formula("mathach ~ sector_text * cses + (cses | school)"), d)
    recipe = prepare(ml.parse_formula("mathach ~ sector * cses + (cses | school)"), d)
    assert all(len(fs) == 1 for fs in general.columns.factors)  # formulaic's materialised columns
    assert any(len(fs) == 2 for fs in recipe.columns.factors)  # sector * cses as a product
    np.testing.assert_allclose(general.X, recipe.X)
    np.testing.assert_allclose(general.Z, recipe.Z)
    assert recipe.x_names == ("Intercept", "sector", "cses", "sector:cses")
    assert general.x_names == ("Intercept", "sector_text[T.b_catholic]", "cses", "sector_text[T.b_catholic]:cses")


def test_lean_parquet_reader_equals_pandas(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 2500
    rng = np.random.default_rng(2)
    ints = pa.array([None if i % 97 == 0 else int(i) for i in range(n)], type=pa.int64())
    table = pa.table({
        "g": pa.array(np.repeat(np.arange(50), 50)),
        "y": pa.array(rng.normal(size=n)),
        "k": ints,  # an integer column with missing values: float with NaN, as in pandas
        "s": pa.array([f"t{i % 7}" for i in range(n)]),
        "c": pa.array([f"c{i % 3}" for i in range(n)]).dictionary_encode(),
        "f32": pa.array(rng.normal(size=n).astype(np.float32)),
    })
    path = tmp_path / "mixed.parquet"
    pq.write_table(table, path, row_group_size=600)
    lean = ml.read(path)
    ref = pd.read_parquet(path)
    assert list(lean.columns) == list(ref.columns)
    for c in ref.columns:
        np.testing.assert_array_equal(lean[c].to_numpy(), ref[c].to_numpy())
    assert lean["f32"].dtype == ref["f32"].dtype and lean["k"].dtype.kind == "f"


def test_lean_parquet_reader_keeps_what_pandas_wrote(tmp_path, monkeypatch):
    """Files written by pandas carry its metadata: a RangeIndex (described, rebuilt) or a stored
    index column (left to pandas); both must read as pd.read_parquet reads them."""
    pytest.importorskip("pyarrow")
    d = pd.DataFrame({"a": np.arange(6.0), "k": np.arange(6), "b": list("xyzzyx")})
    cases = {"default": d, "sliced": d.iloc[2:], "stored_index": d.set_index("b"), "named": d.rename_axis("row")}
    for name, frame in cases.items():
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path)
        expected = pd.read_parquet(path)
        if name != "stored_index":  # read without pandas' reader (it would be a silent fallback)
            with monkeypatch.context() as m:
                m.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("fell back to pd.read_parquet"))
                got = ml.read(path)
        else:
            got = ml.read(path)
        pd.testing.assert_frame_equal(got, expected)


def test_loops_compiled_for_their_sizes_equal_the_generic_ones():
    """The `*_sized` loops (sizes as tuple lengths, used from SPECIALISE_UNITS units and
    SPECIALISE_ROWS rows on) compute what the loops for all sizes compute."""
    from multilevel.numerics import units

    d = prepare(ml.parse_formula("mathach ~ meanses * cses + (cses | school)"), hsb())
    s = d.summaries()
    lam = np.array([[0.4, 0.0], [0.1, 0.2]])
    out = []
    for J in (1, units.SPECIALISE_UNITS):  # the count only picks the loop
        G = np.empty((s.q, s.q))
        dev = units.call("deviance_gradient", J, s.compact, s.q, s.p, lam, s.w2, s.XtX_total, s.Xty_total,
                         s.yty_total, float(s.n_obs), 0.0, True, G)
        out.append((dev, G))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-13)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-11, atol=1e-12)
    rng = np.random.default_rng(4)
    n, J = 3000, 20
    codes = np.sort(rng.integers(0, J, n))
    x, y = rng.normal(size=(2, n))
    cols = Columns(((), (x,), (), (x,), (y,)), 2, 2, n)
    bases, recipe, affine, cmap = cols.recipe()
    u, k = recipe.shape[0], cmap.shape[0]
    Cs = []
    for name, su, sk in (("accumulate", u, k), ("accumulate_sized", (0,) * u, (0,) * k)):
        C, total, counts = np.zeros((J, k, k)), np.zeros((k, k)), np.zeros(J)
        rowpass.LOOPS[name](bases, recipe, affine, cmap, su, sk, codes, np.empty(0), C,
                            np.empty((rowpass.BLOCK_ROWS, u)), total, counts)
        Cs.append(C)
    np.testing.assert_allclose(Cs[0], Cs[1], rtol=1e-13, atol=1e-13)
