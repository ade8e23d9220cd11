"""Issue 11, items 1, 2 and 6: precision at any origin, a checked optimum, degenerate outcomes.

Each test failed before the fix it names (internal coordinates, `multilevel.design.coordinates`; the
optimiser's own Z coordinates and its check, `multilevel.engine.optimizer`; `multilevel.design.identification`).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import hsb
from multilevel.engine import optimizer
from multilevel.engine.covariance import LambdaTemplate
from multilevel.engine.objective import Objective
from multilevel.errors import ConvergenceWarning, DataError

MODEL = "mathach ~ meanses + cses + (cses | school)"


@pytest.fixture(scope="module")
def base():
    return ml.fit(MODEL, hsb())


@pytest.mark.parametrize("offset", [1e5, 1e7, 1e9])
def test_an_outcome_far_from_zero_gives_the_same_fit(base, offset):
    # before: +1e7 gave tau00 3.86 instead of 4.77 (converged); +1e9 sigma2 near 0 and a ZeroDivisionError
    d = hsb().copy()
    d["mathach"] = d["mathach"] + offset
    f = ml.fit(MODEL, d)
    assert f.converged
    np.testing.assert_allclose(f.tau.to_numpy(), base.tau.to_numpy(), rtol=1e-6, atol=1e-9)
    assert f.sigma2 == pytest.approx(base.sigma2, rel=1e-8)
    assert f.deviance == pytest.approx(base.deviance, rel=1e-9)
    expected = base.beta.copy()
    expected["Intercept"] += offset
    np.testing.assert_allclose(f.beta.to_numpy(), expected.to_numpy(), rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(f.fixed["se"].to_numpy(), base.fixed["se"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(f.ranef.to_numpy(), base.ranef.to_numpy(), rtol=1e-6, atol=1e-8)


def test_a_predictor_far_from_zero_is_not_collinear_with_the_intercept():
    # before: 1e6 + N(0, 1) was refused as "collinear with the Intercept"
    d = hsb().copy()
    rng = np.random.default_rng(1)
    d["z"] = 1e6 + rng.normal(size=len(d))
    far = ml.fit("mathach ~ z + meanses + (1 | school)", d)
    d["z0"] = d["z"] - 1e6  # exact: the two are within a factor 2
    near = ml.fit("mathach ~ z0 + meanses + (1 | school)", d)
    assert far.beta["z"] == pytest.approx(near.beta["z0"], rel=1e-9)
    assert far.fixed.loc["z", "se"] == pytest.approx(near.fixed.loc["z0", "se"], rel=1e-9)
    assert far.beta["Intercept"] == pytest.approx(near.beta["Intercept"] - 1e6 * near.beta["z0"], rel=1e-9)
    assert far.deviance == pytest.approx(near.deviance, rel=1e-10)
    # contrasts are written in the data's coordinates
    t = far.test("z = 0")
    assert t.chisq == pytest.approx(near.test("z0 = 0").chisq, rel=1e-8)
    est = far.estimate("Intercept + 1000000 * z")
    assert est["estimate"].iloc[0] == pytest.approx(near.beta["Intercept"], rel=1e-8)


@pytest.mark.parametrize("offset", [1e4, 1e9])
def test_a_random_slope_far_from_zero_gives_the_same_fit(offset):
    # before: the raw sums of Z'Z cancelled (1e9: nothing left of the slope's spread)
    d = hsb().copy()
    d["far"] = d["cses"] + offset
    far = ml.fit("mathach ~ far + (far | school)", d)
    d["near"] = d["far"] - offset  # exact: the two are within a factor 2 of each other
    near = ml.fit("mathach ~ near + (near | school)", d)
    assert far.converged and near.converged
    assert far.deviance == pytest.approx(near.deviance, rel=1e-10)
    T = np.array([[1.0, -offset], [0.0, 1.0]])  # (b0 at far = 0, b1) = T (b0 at near = 0, b1)
    np.testing.assert_allclose(far.tau.to_numpy(), T @ near.tau.to_numpy() @ T.T, rtol=1e-6)
    np.testing.assert_allclose(far.ranef.to_numpy(), near.ranef.to_numpy() @ T.T, rtol=1e-6, atol=1e-6 * offset)
    assert far.beta["far"] == pytest.approx(near.beta["near"], rel=1e-9)
    np.testing.assert_allclose(far.reliability.to_numpy()[1], near.reliability.to_numpy()[1], rtol=1e-8)


def growth(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(60):
        u0, u1 = rng.multivariate_normal([0, 0], [[4, 0.3], [0.3, 0.09]])
        for age in range(30, 38):
            rows.append((j, age, 10 + u0 + (0.5 + u1) * (age - 33.5) + rng.normal()))
    d = pd.DataFrame(rows, columns=["id", "age", "y"])
    d["cage"] = d["age"] - 33.5
    return d


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("seed", [3, 5])
def test_uncentred_time_reaches_the_same_optimum(seed, method):
    # before (seed 3, REML): stopped on the boundary 74.5 deviance units above the optimum,
    # singular=True and converged=True; the centred model (the same likelihood) was found
    d = growth(seed)
    raw = ml.fit("y ~ age + (age | id)", d, method=method)
    centred = ml.fit("y ~ cage + (cage | id)", d, method=method)
    assert raw.converged and raw.optimizer.checked and not raw.singular
    assert raw.deviance == pytest.approx(centred.deviance, abs=1e-6)
    # the same model: tau in the raw coordinates is T tau_c T' with age = cage + 33.5
    T = np.array([[1.0, -33.5], [0.0, 1.0]])
    np.testing.assert_allclose(raw.tau.to_numpy(), T @ centred.tau.to_numpy() @ T.T, rtol=1e-5)


#: where the optimiser of git 18dc03c stopped on growth(3), REML (theta in the data's coordinates)
OLD_STOP = np.array([0.0, 0.04862942, 0.00019095])


def test_the_check_catches_the_point_the_old_search_stopped_at():
    # The old search, in the data's own coordinates, stopped on the boundary 74.5 deviance units
    # above the optimum, where it is a local minimum of that parameterisation only (the map from
    # theta to tau is singular on the boundary), so a check there passes; in the optimiser's own
    # coordinates (`ZFrame`), where it now searches and checks, that point is a saddle.
    d = growth(3)
    fit = ml.fit("y ~ age + (age | id)", d)
    # the summaries in the data's own coordinates (the fit's are shifted: `multilevel.design.coordinates`)
    s = dataclasses.replace(fit.summaries, C=fit.design.coords.original_C(fit.summaries), total=None)
    tpl = fit.template
    raw = optimizer.Evaluations(Objective(s, tpl, True), [])
    assert raw(OLD_STOP)[0] == pytest.approx(fit.deviance + 74.5, abs=0.1)
    assert optimizer.check_optimum(raw, OLD_STOP, tpl.lower_bounds).ok  # why a local check alone is not enough
    frame = optimizer.ZFrame.of(s, tpl)
    own = optimizer.Evaluations(Objective(frame.summaries, tpl, True), [])
    stuck = optimizer.check_optimum(own, frame.to_internal(OLD_STOP), tpl.lower_bounds)
    assert not stuck.ok and "saddle" in stuck.message
    assert optimizer.check_optimum(own, frame.to_internal(fit.theta), tpl.lower_bounds).ok


def test_a_non_finite_deviance_is_never_converged():
    tpl = LambdaTemplate.from_blocks(((0,),), ("Intercept",), "g")

    def fun(theta):
        return np.inf, np.full(theta.shape, np.nan)

    assert not optimizer.check_optimum(fun, np.array([1.0]), tpl.lower_bounds).ok


def test_a_fit_that_fails_says_so_everywhere(monkeypatch):
    # the search is made to stop at its start: the check must fail, and the fit must say so in
    # fit.converged, in a warning and in both reports
    monkeypatch.setattr(optimizer, "_search", lambda fun, objective, start: (
        np.asarray(objective.template.start() * 3.0 if start is None else start, dtype=float),
        optimizer.SimpleNamespace(x=None, nit=0, success=True, status=0, message="stopped"), False))
    with pytest.warns(ConvergenceWarning, match="did not reach a checked optimum"):
        f = ml.fit("mathach ~ meanses + (1 | school)", hsb())
    assert not f.converged
    assert "NOT" in f.optimizer.message
    assert "Estimation did NOT converge" in f.report() and "Optimum NOT verified" in f.report()
    assert "Model failed to converge" in f.summary()
    assert "NOT converged" in f._repr_html_() and "NOT converged" in f.to_html() and "NOT converged" in repr(f)



def test_a_converged_fit_says_what_was_checked(base):
    assert base.optimizer.checked and base.converged
    assert "Optimum checked: max |gradient|" in base.report()
    assert "Optimum checked" in base.summary()


def degenerate_data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"g": np.repeat(np.arange(20), 5), "x": rng.normal(size=100)})
    d["exact"] = 1 + 2 * d["x"]
    d["tiny"] = hsb()["mathach"].to_numpy()[:100] * 1e-200
    d["unit_level"] = d["g"] * 1.5
    return d


@pytest.mark.parametrize(
    "formula, message",
    [
        ("exact ~ x + (1 | g)", r"'exact' is an exact linear function"),  # before: sigma2 = -1.2e-15, no error
        ("exact ~ x + (x | g)", r"'exact' is an exact linear function"),  # before: LinAlgError
        ("tiny ~ x + (1 | g)", r"'tiny' has values of the order of 1\.\de-199"),  # before: ZeroDivisionError
        ("unit_level ~ x + (1 | g)", r"'unit_level' has no variation left within the units of 'g'"),
    ],
)
def test_degenerate_outcomes_get_a_clear_error(formula, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(DataError, match=message):
            ml.fit(formula, degenerate_data())


def interaction_data() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(80), 12)
    x = rng.normal(size=g.size)
    w = rng.normal(size=80)[g]
    y = 1 + 0.5 * x + 0.3 * w + 0.2 * x * w + rng.normal(size=80)[g] + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "w": w, "g": g})


@pytest.mark.parametrize("offset", [1e4, 1e6, 1e9])
def test_an_interaction_of_a_variable_far_from_zero_gives_the_same_fit(offset):
    # before: at 1e6 "'x:w' is a linear combination of the other columns" (false); at 1e4 the
    # log-likelihood 1.8e-5 below the centred fit's, marked converged. Now x:w is summed as
    # (x - m_x)(w - m_w), mapped back exactly (`coordinates`: the lower-order terms are in the model).
    d = interaction_data()
    far = d.assign(x=d["x"] + offset)
    near = d.assign(x=far["x"] - offset)  # exact
    a = ml.fit("y ~ x * w + (x | g)", near)
    b = ml.fit("y ~ x * w + (x | g)", far)
    assert b.converged
    assert b.deviance == pytest.approx(a.deviance, rel=1e-12)
    expected = a.beta.copy()
    expected["Intercept"] = a.beta["Intercept"] - offset * a.beta["x"]  # y = b0 + bx (x - c) + ...
    expected["w"] = a.beta["w"] - offset * a.beta["x:w"]
    scale = np.maximum(np.abs(expected.to_numpy()), a.fixed["se"].to_numpy())
    np.testing.assert_array_less(np.abs(b.beta.to_numpy() - expected.to_numpy()) / scale, 1e-8)
    assert b.fixed.loc["x:w", "se"] == pytest.approx(a.fixed.loc["x:w", "se"], rel=1e-8)


def test_an_interaction_without_its_main_effect_is_shifted_as_a_whole():
    # x:w without x: the product cannot be centred factor by factor (the model is not invariant
    # to shifting x); the column is shifted by its mean, which is exact, and fits as the raw one
    d = interaction_data()
    raw = ml.fit("y ~ w + x:w + (1 | g)", d)
    assert raw.converged and raw.design.coords.S_x is None
    np.testing.assert_allclose(raw.beta.to_numpy(), ml.fit("y ~ w + I(x * w) + (1 | g)", d).beta.to_numpy(), rtol=1e-9)


def test_a_variance_not_identified_under_reml_is_refused():
    # two units and two unit-level fixed effects (intercept, w): the REML criterion is flat in tau
    # (before: tau = 1.345, near the start, converged=True)
    rng = np.random.default_rng(0)
    g = np.repeat([0, 1], 10)
    d = pd.DataFrame({"g": g, "x": rng.normal(size=20), "w": np.array([0.3, -1.2])[g]})
    d["y"] = 1 + d["x"] + 2 * d["w"] + rng.normal(size=20)
    with pytest.raises(DataError, match=r"'Intercept' has 2 fixed effects .* 2 units of 'g'.*method='ML'"):
        ml.fit("y ~ x + w + (1 | g)", d)
    flat = [ml.fit("y ~ x + w + (1 | g)", d, tau=[[t]], sigma2=1.0).deviance for t in (0.0, 1.0, 100.0)]
    assert max(flat) - min(flat) < 1e-9  # the reason: the criterion does not depend on tau
    ml_fit = ml.fit("y ~ x + w + (1 | g)", d, method="ML")
    assert ml_fit.converged and ml_fit.tau.iloc[0, 0] == 0.0


@pytest.fixture(scope="module")
def far_slope_pair():
    """Model with a random slope on x = cses + 1e8 and on x - 1e8 (exact): the same model."""
    d = hsb()
    far, near = d.copy(), d.copy()
    far["x"] = d["cses"] + 1e8
    near["x"] = far["x"] - 1e8
    formula = "mathach ~ x * sector + meanses + (x | school)"
    return ml.fit(formula, near), ml.fit(formula, far)


def test_eb_variances_map_exactly_when_a_slope_variable_is_far(far_slope_pair):
    # before: ranef_pev off by 9e-4 (slope) and not symmetric; residuals(level=2) LinAlgError;
    # the Rights-Sterba total shares off by up to 3.7
    a, b = far_slope_pair
    # the slope's prediction error variance is the same; the matrix is symmetric (the intercept's,
    # at x = 0, 1e8 SDs away, is ~1e16 and cannot be mapped back in double precision to compare)
    np.testing.assert_allclose(b.ranef_pev[:, 1, 1], a.ranef_pev[:, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(b.ranef_pev[:, 0, 1], b.ranef_pev[:, 1, 0], rtol=1e-12)
    ra, rb = a.residuals(level=2), b.residuals(level=2)
    np.testing.assert_allclose(rb["mdist"].to_numpy(), ra["mdist"].to_numpy(), rtol=1e-5)
    ea, eb = a.effect_sizes(), b.effect_sizes()
    # the shares of the total variance (f1/f2, the within/between split, need a centred x: NaN far away)
    ta, tb = ea.rights_sterba.loc["total"], eb.rights_sterba.loc["total"]
    shares = [c for c in ("f", "v", "m", "fv", "fvm") if c in ta.index and c in tb.index]
    assert len(shares) == 5
    np.testing.assert_allclose(tb[shares].to_numpy(dtype=float), ta[shares].to_numpy(dtype=float), rtol=1e-6)


def test_profile_of_a_far_slope_is_refused_with_a_reason(far_slope_pair):
    # before: sd_x profiled to [0.834, 0.835] against [0.47, 1.16] (at 1e4), NaN or wrong at 1e8
    _, b = far_slope_pair
    with pytest.warns(ml.MultilevelWarning, match="not profiled: a random slope's variable lies far from 0"):
        ci = b.confint("profile", which="variance")
    assert ci[["ci_low", "ci_high"]].isna().all().all()
