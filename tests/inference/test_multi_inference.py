"""Inference for models with several grouping factors (`inference.multi_robust`,
`inference.multi_view`, `MultiFit.coef_table/test/estimate/confint`): cluster-robust SEs against
clubSandwich (refs/multi/<case>.json, REML: CR2 and CR0 vcov, CR2's Satterthwaite df), against the
dense n x n sandwich on small simulated data, joint tests against lmerTest's contest and pbkrtest
(refs/multi/inference/tests.json, refs/make_refs_multi_tests.R), and the refusals."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import sqrtm

import multilevel as ml
from multilevel.errors import SpecificationError
from multilevel.inference.multi_robust import cluster_robust

ROOT = Path(__file__).resolve().parents[2]
REFS = ROOT / "refs" / "multi"
ROBUST_CASES = ("eg_growth", "eg_intercepts", "eg_lowinc", "eg_hlm", "chem97")

_FITS: dict = {}


def _ref(case: str) -> dict:
    return json.loads((REFS / f"{case}.json").read_text())


def _fit(case: str, method: str = "REML"):
    if (case, method) not in _FITS:
        ref = _ref(case)
        data = pd.read_csv(REFS / ref["data_file"], dtype={c: str for c in ref["id_columns"]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # chem97's score looks a count
            _FITS[case, method] = ml.fit(ref["formula"], data, method=method)
    return _FITS[case, method]


@pytest.mark.parametrize("case", ROBUST_CASES)
def test_cluster_robust_equals_clubsandwich(case):
    fit = _fit(case)
    cr = _ref(case)["REML"]["cluster_robust"]
    for se in ("CR2", "CR0"):
        tab = fit.coef_table(se=se, cluster=cr["cluster"])
        np.testing.assert_allclose(tab["se"].to_numpy(), cr[se]["se"], rtol=1e-6)
    # the top level is the default clustering
    tab = fit.coef_table(se="CR2")
    np.testing.assert_allclose(tab["df"].to_numpy(), cr["CR2"]["satterthwaite_df"], rtol=1e-6)
    pieces = cluster_robust(fit.estimates, cr["cluster"])
    assert pieces.n_clusters == cr["n_clusters"] and pieces.cluster == cr["cluster"]
    coords = fit.design.coords
    for se in ("CR2", "CR0"):
        np.testing.assert_allclose(coords.vcov(pieces.vcov_internal(se)), np.array(cr[se]["vcov"]), rtol=1e-6,
                                   atol=1e-9 * np.max(np.abs(cr[se]["vcov"])))
    J = cr["n_clusters"]
    np.testing.assert_allclose(fit.coef_table(se="CR1")["se"].to_numpy(), np.array(cr["CR0"]["se"]) * np.sqrt(J / (J - 1)), rtol=1e-6)
    np.testing.assert_allclose(fit.vcov_robust.to_numpy(), np.array(cr["CR0"]["vcov"]), rtol=1e-6,
                               atol=1e-9 * np.max(np.abs(cr["CR0"]["vcov"])))


# ----- the dense sandwich on small simulated data -------------------------------------------------
def _three_level(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(9):
        u_s = rng.normal(0, 0.8)
        for c in range(int(rng.integers(2, 6))):
            u_c, slope = rng.normal(0, 0.6), rng.normal(0, 0.3)
            for _ in range(int(rng.integers(1, 6))):
                x = rng.normal()
                w = float(s % 3)
                rows.append((f"s{s}", f"s{s}c{c}", x, w, 1 + 0.5 * x + 0.2 * w + u_s + u_c + slope * x + rng.normal()))
    return pd.DataFrame(rows, columns=["school", "klass", "x", "w", "y"])


def _dense_sandwich(fit, data: pd.DataFrame, cluster: str, adjust: bool) -> np.ndarray:
    """The n x n sandwich of the module doc, with V from lme4's tau and sigma2 (dense: tiny data)."""
    n = len(data)
    X = np.column_stack([np.ones(n), data["x"], data["w"]])
    y = data["y"].to_numpy()
    V = np.eye(n) * fit.sigma2
    for f, tau in fit.tau.items():
        codes = pd.factorize(data[f] if f in data else data[f.split(":")[0]])[0]
        z = np.column_stack([np.ones(n), data["x"]])[:, : tau.shape[0]]
        same = codes[:, None] == codes[None, :]
        V += same * (z @ tau.to_numpy() @ z.T)
    W = np.linalg.inv(V)
    M = np.linalg.inv(X.T @ W @ X)
    beta = M @ X.T @ W @ y
    e = y - X @ beta
    meat = np.zeros((3, 3))
    for c in data[cluster].unique():
        i = np.flatnonzero(data[cluster].to_numpy() == c)
        Vc, Wc, Xc = V[np.ix_(i, i)], W[np.ix_(i, i)], X[i]
        A = np.eye(i.size)
        if adjust:
            Vh = np.real(sqrtm(Vc))
            K = Vh @ (Vc - Xc @ M @ Xc.T) @ Vh
            w_, P = np.linalg.eigh(0.5 * (K + K.T))
            A = Vh @ (P / np.sqrt(w_)) @ P.T @ Vh
        t = Xc.T @ Wc @ A @ e[i]
        meat += np.outer(t, t)
    return M @ meat @ M


@pytest.mark.parametrize("shift", [0.0, 50.0])
def test_cluster_robust_equals_dense_sandwich(shift):
    """Also in shifted internal coordinates (x + 50, y + 1e4: X and y shifted, the slope's frame)."""
    data = _three_level()
    data["x"] += shift
    data["y"] += 200 * shift
    fit = ml.fit("y ~ x + w + (1 | school) + (x | klass)", data)
    for se, adjust in (("CR2", True), ("CR0", False)):
        dense = _dense_sandwich(fit, data, "school", adjust)
        np.testing.assert_allclose(fit.coef_table(se=se)["se"].to_numpy(), np.sqrt(np.diag(dense)), rtol=1e-7)


def test_cluster_by_a_column_that_nests_every_factor():
    data = _three_level()
    data["district"] = data["school"].map(lambda s: f"d{int(s[1:]) // 3}")
    fit = ml.fit("y ~ x + w + (1 | school) + (x | klass)", data)
    dense = _dense_sandwich(fit, data, "district", False)
    np.testing.assert_allclose(fit.coef_table(se="CR0", cluster="district")["se"].to_numpy(), np.sqrt(np.diag(dense)), rtol=1e-7)


def test_clusters_must_hold_whole_levels():
    fit = _fit("eg_hlm")
    with pytest.raises(SpecificationError, match="whole levels of every factor: 1721 of the 1721 levels of childid lie in several year"):
        fit.coef_table(se="CR2", cluster="year")
    with pytest.raises(SpecificationError, match="levels of schoolid lie in several childid clusters"):
        fit.coef_table(se="CR0", cluster="childid")
    with pytest.raises(SpecificationError, match="neither a grouping factor"):
        fit.coef_table(se="CR0", cluster="nothing")
    rng = np.random.default_rng(1)
    crossed = pd.DataFrame({"a": rng.integers(0, 6, 120).astype(str), "b": rng.integers(0, 5, 120).astype(str),
                            "y": rng.normal(size=120)})
    cfit = ml.fit("y ~ 1 + (1 | a) + (1 | b)", crossed)
    with pytest.raises(SpecificationError, match="whole levels of every factor: no factor"):
        cfit.coef_table(se="CR2")


def test_df_and_se_refusals():
    fit = _fit("eg_growth")
    with pytest.raises(SpecificationError, match="HLM's approximate df"):
        fit.coef_table(df="hlm")
    with pytest.raises(SpecificationError, match="model-based covariance; with se='CR2'"):
        fit.coef_table(df="satterthwaite", se="CR2")
    with pytest.raises(SpecificationError, match="cluster= goes with the cluster-robust"):
        fit.coef_table(cluster="schoolid")
    with pytest.raises(SpecificationError, match="not known"):
        fit.confint("likelihood")
    with pytest.raises(SpecificationError, match="which="):
        fit.confint("profile", which="sd")
    # the model-based table is unchanged (lmerTest's)
    assert list(fit.coef_table().columns) == ["estimate", "se", "df", "t", "p"]


def test_wald_confint_of_the_fixed_effects():
    fit = _fit("eg_growth")
    ci = fit.confint(level=0.9)
    z = 1.6448536269514722
    np.testing.assert_allclose(ci["ci_low"].to_numpy(), fit.beta.to_numpy() - z * fit.fixed["se"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(ci["ci_high"].to_numpy(), fit.beta.to_numpy() + z * fit.fixed["se"].to_numpy(), rtol=1e-9)


# ----- joint tests against lmerTest / pbkrtest ----------------------------------------------------
def _tests() -> list[dict]:
    path = REFS / "inference" / "tests.json"
    return json.loads(path.read_text())["tests"] if path.exists() else []


@pytest.mark.parametrize("ref", _tests(), ids=lambda r: r["case"])
def test_joint_tests_equal_lmertest(ref):
    fit = _fit(ref["case"])
    assert list(fit.beta.index) == [n.replace("(Intercept)", "Intercept") for n in ref["fixed_effects"]]
    t = fit.test(ref["contrast"])
    s = ref["satterthwaite"]
    assert t.F == pytest.approx(s["F"], rel=1e-6)
    assert t.num_df == s["num_df"]
    assert t.den_df == pytest.approx(s["den_df"], rel=1e-6)
    assert t.F_p == pytest.approx(s["p"], rel=1e-5)
    assert t.chisq == pytest.approx(s["F"] * s["num_df"], rel=1e-6)  # Satterthwaite's F is the Wald chi-square / q
    k = ref["kenward_roger"]
    if "F" in k:
        t = fit.test(ref["contrast"], df="kenward-roger")
        assert t.F == pytest.approx(k["F"], rel=1e-6)
        assert t.den_df == pytest.approx(k["den_df"], rel=1e-6)
        assert t.F_p == pytest.approx(k["p"], rel=1e-5)
    # a matrix gives the same test as the text
    L = np.array(ref["L"], dtype=float)
    assert fit.test(L).F == pytest.approx(fit.test(ref["contrast"]).F, rel=1e-12)


def test_cr2_test_of_one_coefficient_is_its_t():
    fit = _fit("eg_hlm")
    row = fit.coef_table(se="CR2").loc["black"]
    t = fit.test("black = 0", se="CR2")
    assert t.F == pytest.approx(row["t"] ** 2, rel=1e-10)
    assert t.den_df == pytest.approx(row["df"], rel=1e-10)
    joint = fit.test("black = 0, hispanic = 0", se="CR2")
    assert joint.se_method == "CR2" and joint.df_method == "bell-mccaffrey" and joint.den_df < 40
    est = fit.estimate("black - hispanic")
    b = fit.beta
    assert est["estimate"].iloc[0] == pytest.approx(b["black"] - b["hispanic"], rel=1e-12)


# ----- model comparison against R's anova() ------------------------------------------------------
def _anovas() -> list[dict]:
    path = REFS / "inference" / "tests.json"
    return json.loads(path.read_text())["anova"] if path.exists() else []


def _egsingle() -> pd.DataFrame:
    return pd.read_csv(REFS / "data" / "egsingle.csv", dtype={"schoolid": str, "childid": str})


@pytest.mark.parametrize("ref", _anovas(), ids=lambda r: r["name"])
def test_compare_equals_anova(ref):
    data = _egsingle()
    small, big = ml.fit(ref["small"], data), ml.fit(ref["big"], data)
    if ref["refit"]:
        with pytest.raises(SpecificationError, match="differ in their fixed effects"):
            ml.compare(small, big)
    c = ml.compare(small, big, refit="ML" if ref["refit"] else None)
    t = c.table
    assert list(t["method"]) == ["ML" if ref["refit"] else "REML"] * 2
    assert t["n_params"].tolist() == ref["npar"]
    np.testing.assert_allclose(t["deviance"].to_numpy(), ref["deviance"], rtol=1e-9)
    np.testing.assert_allclose(t["aic"].to_numpy(), ref["AIC"], rtol=1e-9)
    np.testing.assert_allclose(t["bic"].to_numpy(), ref["BIC"], rtol=1e-9)
    assert t["chisq"].iloc[1] == pytest.approx(ref["chisq"], rel=1e-6)
    assert t["df"].iloc[1] == ref["df"]
    assert t["p"].iloc[1] == pytest.approx(ref["p"], rel=1e-5, abs=1e-300)
    if ref["name"] == "intercepts_reml":  # (1 | schoolid) + (1 | childid:schoolid) adds one variance
        chisq = t["chisq"].iloc[1]
        assert t["p_mixture"].iloc[1] == pytest.approx(0.5 * ref["p"] + 0.5 * float(chisq <= 0), abs=1e-300)
    else:
        assert np.isnan(t["p_mixture"].iloc[1])


def test_compare_refuses_fits_of_other_rows():
    data = _egsingle()
    a = ml.fit("math ~ year + (1 | schoolid/childid)", data)
    b = ml.fit("math ~ year + (1 | schoolid) + (1 | schoolid:childid) + (0 + year | schoolid)", data.iloc[:-5])
    with pytest.raises(SpecificationError, match="different data"):
        ml.compare(a, b)
    with pytest.raises(SpecificationError, match="REML and ML fits cannot be compared"):
        ml.compare(a, a.refit("ML"))
