"""Issue 14: HCM2's statistics (docs/hlm-statistics.md section 15) against dense n x n algebra (V, GLS,
the likelihood) and against lme4 (refs/make_refs_hcm2.R -> refs/hcm2/hcm2_sim.json), HCM2's structure
read from the data, its df rule, and the refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import multilevel as ml
from multilevel.diagnostics.hcm2_statistics import CrossedStructure, HCM2Statistics
from multilevel.errors import SpecificationError

ROOT = Path(__file__).resolve().parents[2]
FORMULA = "y ~ (dep + sfree) * ses + (1 + ses | nbhd) + (1 | school)"
REF = json.loads((ROOT / "refs/hcm2/hcm2_sim.json").read_text())


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(ROOT / "refs/hcm2/data/hcm2_sim.csv")


@pytest.fixture(scope="module", params=["REML", "ML"])
def fitted(request, data):
    fit = ml.fit(FORMULA, data, method=request.param)
    return request.param, fit, HCM2Statistics(fit.estimates)


def test_structure_read_from_the_data(fitted):
    _m, _fit, st = fitted
    s = st.structure
    assert (s.row, s.column) == ("nbhd", "school")
    assert s.coefficients == ("Intercept", "ses")
    assert s.row_predictors == (("dep",), ("dep",)) and s.column_predictors == (("sfree",), ("sfree",))
    assert s.level_of == {"dep": "row", "sfree": "column", "ses": "level-1"}
    assert [e.label for e in s.effects] == ["theta0", "gamma01", "beta01", "theta1", "gamma11", "beta11"]
    assert [e.column for e in s.effects] == [0, 1, 2, 3, 4, 5]
    assert s.random_row == ((0, 0), (1, 0)) and s.random_col == ((0, 0),)
    assert [s.b_label(*ph) for ph in s.random_row] == ["b00j", "b10j"] and s.c_label(0) == "c00k"


def test_counts_against_lme4_and_the_data(fitted, data):
    m, _fit, st = fitted
    assert st.n_rows == REF[m]["ngrps"]["nbhd"] == data["nbhd"].nunique()
    assert st.n_columns == REF[m]["ngrps"]["school"] == data["school"].nunique()
    assert st.n_cells == REF["n_cells"] == len(data.groupby(["nbhd", "school"]).size())


def test_against_lme4(fitted):
    m, _fit, st = fitted
    r = REF[m]
    tab = st.fixed_table
    np.testing.assert_allclose(tab["estimate"].to_numpy(), list(r["fixed_effects"].values()), rtol=1e-6)
    np.testing.assert_allclose(tab["se"].to_numpy(), list(r["se"].values()), rtol=1e-6)
    assert list(tab.index) == ["Intercept", *list(r["fixed_effects"])[1:]]
    assert st.deviance == pytest.approx(r["criterion"], rel=1e-6)
    assert st.deviance <= r["criterion"] + 1e-6
    vc = {(v["grp"], v["var1"], v.get("var2")): v["vcov"] for v in r["varcorr"]}
    tb, tc = st.tau_b.to_numpy(), st.tau_c.to_numpy()
    np.testing.assert_allclose([tb[0, 0], tb[1, 1], tb[0, 1], tc[0, 0], st.sigma2],
                               [vc[("nbhd", "(Intercept)", None)], vc[("nbhd", "ses", None)],
                                vc[("nbhd", "(Intercept)", "ses")], vc[("school", "(Intercept)", None)],
                                vc[("Residual", None, None)]], rtol=1e-4)
    cor = next(v["sdcor"] for v in r["varcorr"] if v["grp"] == "nbhd" and v.get("var2"))
    assert st.tau_b_correlations.to_numpy()[0, 1] == pytest.approx(cor, rel=1e-4)
    assert st.tau_c_correlations.to_numpy()[0, 0] == pytest.approx(1.0, abs=1e-15)
    # HLM's count: 4 covariance parameters (3 of tau_b, 1 of tau_c) + sigma2 (+ the 6 fixed effects under ML)
    assert st.n_params == (5 if m == "REML" else 11) == (r["logLik_df"] - (6 if m == "REML" else 0))


def _columns(data: pd.DataFrame, names) -> np.ndarray:
    """Model columns straight from the data: 'Intercept' or a product of data columns ('dep:ses')."""
    n = len(data)
    return np.column_stack([np.ones(n) if c == "Intercept" else np.prod([data[v].to_numpy(float) for v in c.split(":")], axis=0)
                            for c in names])


def dense_check(data: pd.DataFrame, fit, st: HCM2Statistics, reml: bool) -> None:
    """V = sigma2 I + Z_b (I x tau_b) Z_b' + Z_c (I x tau_c) Z_c' built from the data's columns; GLS, its
    covariance and the (RE)ML deviance from V, independent of the blocked Cholesky of the fit."""
    s = st.structure
    n = len(data)
    X = _columns(data, fit.beta.index)
    y = data["y"].to_numpy()
    same_row = data[s.row].to_numpy()[:, None] == data[s.row].to_numpy()[None, :]
    same_col = data[s.column].to_numpy()[:, None] == data[s.column].to_numpy()[None, :]
    zb = _columns(data, st.tau_b.index)
    zc = _columns(data, st.tau_c.index)
    V = st.sigma2 * np.eye(n) + same_row * (zb @ st.tau_b.to_numpy() @ zb.T) + same_col * (zc @ st.tau_c.to_numpy() @ zc.T)
    Vi_X = np.linalg.solve(V, X)
    M = X.T @ Vi_X
    beta = np.linalg.solve(M, Vi_X.T @ y)
    tab = st.fixed_table
    np.testing.assert_allclose(tab["estimate"].to_numpy(), beta, rtol=1e-7)
    np.testing.assert_allclose(tab["se"].to_numpy(), np.sqrt(np.diag(np.linalg.inv(M))), rtol=1e-7)
    e = y - X @ beta
    dev = n * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + e @ np.linalg.solve(V, e)
    if reml:
        dev += np.linalg.slogdet(M)[1] - X.shape[1] * np.log(2 * np.pi)
    assert st.deviance == pytest.approx(dev, rel=1e-9)


def test_against_dense_algebra(fitted, data):
    m, fit, st = fitted
    assert list(st.tau_b.index) == ["Intercept", "ses"] and list(st.tau_c.index) == ["Intercept"]
    dense_check(data, fit, st, m == "REML")


def test_random_effects_of_predictors_over_the_other_factor(data):
    """HCM2's b_phj (column predictor sfree over the rows) and c_pqk (row predictor dep over the columns):
    names, df (J = 40, K = 25: gamma01 min(40-1-1, 25-1) = 24, beta01 min(25-1-1, 40-1) = 23) and the
    dense check."""
    fit = ml.fit_levels("y ~ 1 + ses", {"Intercept": "dep + sfree + b + c + b:sfree + c:dep", "ses": "dep + b"},
                        row="nbhd", column="school", data=data, method="ML")
    st = HCM2Statistics(fit.estimates)
    s = st.structure
    assert s.random_row == ((0, 0), (0, 1), (1, 0)) and s.random_col == ((0, 0), (0, 1))
    assert [s.b_label(*ph) for ph in s.random_row] == ["b00j", "b01j", "b10j"]
    assert [s.c_label(*pq) for pq in s.random_col] == ["c00k", "c01k"]
    assert st.df.to_list() == [23, 24, 23, 38, 38]
    dense_check(data, fit, st, reml=False)
    text = fit.report()
    assert "    P0 = theta0 + (gamma01 + c01k)*(dep) + (beta01 + b01j)*(sfree) + b00j + c00k" in text
    assert "INTRCPT1/sfree,b01j" in text and "INTRCPT1/dep (column), c01k" in text


def test_df_rule_and_p_values(fitted):
    """J = 40 rows, K = 25 columns, N = 1200, F = 6. P0 random over rows and columns, one row and one
    column predictor: theta0 min(40-1-1, 25-1-1) = 23, gamma01 38, beta01 23. P1 random over rows only:
    theta1 38, gamma11 38, beta11 N - F = 1194."""
    _m, _fit, st = fitted
    assert st.df.to_list() == [23, 38, 23, 38, 38, 1194]
    tab = st.fixed_table
    np.testing.assert_allclose(tab["t"], tab["estimate"] / tab["se"], rtol=1e-15)
    np.testing.assert_allclose(tab["p"], 2 * stats.t.sf(np.abs(tab["t"]), tab["df"]), rtol=1e-10)


def test_crossed_intercepts_only_penicillin():
    ref = json.loads((ROOT / "refs/multi/penicillin.json").read_text())
    d = pd.read_csv(ROOT / "refs/multi" / ref["data_file"])
    fit = ml.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", d)
    st = HCM2Statistics(fit.estimates)
    assert (st.n_rows, st.n_columns, st.n_cells) == (24, 6, 144)
    assert [e.label for e in st.structure.effects] == ["theta0"]
    assert st.df.to_list() == [5.0]  # min(24 - 1, 6 - 1)
    assert st.n_params == 3


def test_refusals(data):
    nested = ml.fit("y ~ ses + (1 | nbhd) + (1 | nbhd:school)", data)
    with pytest.raises(SpecificationError, match=r"HCM2's report is of two crossed grouping factors.*nested"):
        CrossedStructure.of(nested.estimates)
    cell = ml.fit("y ~ ses + dep:sfree + (1 | nbhd) + (1 | school)", data)
    with pytest.raises(SpecificationError, match="product of a row predictor \\(dep\\) and a column predictor \\(sfree\\)"):
        cell.report()
