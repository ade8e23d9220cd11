"""Invariances of fits with several grouping factors (issue 14; the two-level properties of
tests/acceptance/test_invariance.py, whose module doc gives the algebra): property-based over
random data with a nested pair (children in schools) and a crossed factor (raters), random slopes
of x at the schools and the children.

* y -> a y + b: beta -> a beta (+ b on the intercept), variances a^2, the REML criterion
  + 2 (N - p) log|a|, ML's + 2 N log|a|.
* x -> x + b (a random slope's variable, far from 0): the criterion and the slope's fixed effect
  unchanged; the fit must reach the same optimum (each factor's frame, `engine.blocked.factor_frames`).
* rows permuted, ids relabelled (integers -> text): nothing changes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import multilevel as ml

FORMULA = "y ~ x + (x | school) + (x | school:child) + (1 | rater)"


def _data(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    S, C, R, per = 12, 60, 8, 6
    school_of = np.concatenate([np.arange(S), rng.integers(0, S, C - S)])
    child = np.repeat(np.arange(C), per)
    school = school_of[child]
    rater = rng.integers(0, R, child.size)
    x = rng.normal(0, 1, child.size)
    u = rng.normal(size=(C, 2)) * [0.7, 0.3]
    v = rng.normal(size=(S, 2)) * [0.5, 0.2]
    y = 1 + 0.5 * x + u[child, 0] + u[child, 1] * x + v[school, 0] + v[school, 1] * x + 0.4 * rng.normal(size=R)[rater] \
        + rng.normal(0, 0.6, child.size)
    return pd.DataFrame({"y": y, "x": x, "school": school, "child": child % 10, "rater": rater})


SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(seed=st.integers(0, 10_000), a=st.floats(1e-3, 1e3), b=st.floats(-1e6, 1e6), method=st.sampled_from(["REML", "ML"]))
def test_outcome_origin_and_scale(seed, a, b, method):
    d = _data(seed)
    f0 = ml.fit(FORMULA, d, method=method)
    e = d.assign(y=a * d["y"] + b)
    f1 = ml.fit(FORMULA, e, method=method)
    assert f0.converged and f1.converged
    n, p = f0.n_obs, len(f0.beta)
    moved = 2 * (n - p if method == "REML" else n) * np.log(a)
    assert abs(f1.deviance - f0.deviance - moved) <= 1e-8 * abs(f0.deviance)
    np.testing.assert_allclose(f1.beta["x"], a * f0.beta["x"], rtol=1e-6, atol=1e-6 * a * f0.fixed["se"]["x"])
    np.testing.assert_allclose(f1.varcorr["vcov"].to_numpy(), a**2 * f0.varcorr["vcov"].to_numpy(), rtol=1e-5,
                               atol=1e-6 * a**2 * f0.sigma2)


@SETTINGS
@given(seed=st.integers(0, 10_000), b=st.floats(-1e4, 1e4), method=st.sampled_from(["REML", "ML"]))
def test_a_random_slopes_origin(seed, b, method):
    d = _data(seed)
    xr = (d["x"] + b) - b  # the shift is exact for these values (test_invariance's module doc)
    f0 = ml.fit(FORMULA, d.assign(x=xr), method=method)
    f1 = ml.fit(FORMULA, d.assign(x=xr + b), method=method)
    assert f0.converged and f1.converged
    assert abs(f1.deviance - f0.deviance) <= 1e-8 * abs(f0.deviance)
    np.testing.assert_allclose(f1.beta["x"], f0.beta["x"], rtol=1e-6, atol=1e-6 * f0.fixed["se"]["x"])
    np.testing.assert_allclose(f1.sigma2, f0.sigma2, rtol=1e-6)


@SETTINGS
@given(seed=st.integers(0, 10_000), order=st.integers(0, 10_000), method=st.sampled_from(["REML", "ML"]))
def test_row_order_and_id_spelling(seed, order, method):
    d = _data(seed)
    f0 = ml.fit(FORMULA, d, method=method)
    e = d.sample(frac=1, random_state=order).assign(
        school=lambda t: "s-" + t["school"].astype(str), child=lambda t: "c" + t["child"].astype(str),
        rater=lambda t: pd.Series(t["rater"].astype(str), dtype="string"))
    f1 = ml.fit(FORMULA, e, method=method)
    assert abs(f1.deviance - f0.deviance) <= 1e-10 * abs(f0.deviance)
    np.testing.assert_allclose(f1.beta.to_numpy(), f0.beta.to_numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(f1.varcorr["vcov"].to_numpy(), f0.varcorr["vcov"].to_numpy(), rtol=1e-6, atol=1e-9)
    # the conditional modes follow their levels, whatever their spelling and the rows' order
    r0, r1 = f0.ranef["rater"], f1.ranef["rater"]
    np.testing.assert_allclose(r1.to_numpy(), r0.to_numpy(), rtol=1e-6, atol=1e-8)
