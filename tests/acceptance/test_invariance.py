"""Invariances of the fit (issue 11, acceptance): property-based tests over random two-level data.

The model is y_ij = b0 + b1 x_ij + b2 w_j + u0j + u1j x_ij + e_ij, (u0j, u1j) ~ N(0, tau) correlated,
e_ij ~ N(0, sigma2), with x a level-1 and w a level-2 predictor. Data are drawn with numpy from a
Hypothesis-drawn seed and Hypothesis-drawn parameters; each property compares the fit of the
transformed data with the fit of the original, by REML and by ML.

The algebra (V = sigma2 (I + Z Lambda Lambda' Z'), p fixed effects, N rows; both criteria are
profiled over sigma2, as in lme4):

    ML:    d(theta) = log|I + Z L L'Z'| + N (1 + log(2 pi r'V_rel^-1 r / N))
    REML:  d(theta) = log|I + Z L L'Z'| + log|X'V_rel^-1 X| + (N - p)(1 + log(2 pi r'V_rel^-1 r / (N - p)))

with V_rel = V / sigma2 and r = y - X beta-hat. Hence:

* y -> a y + b. r -> a r (the intercept absorbs b), theta (relative) is unchanged, so the ML
  criterion moves by N log a^2 = +2 N log|a| and REML's by +2 (N - p) log|a|; unchanged under a shift.
  beta -> a beta (+ b on the intercept), SE -> |a| SE, tau -> a^2 tau, sigma2 -> a^2 sigma2,
  u*_j -> a u*_j.
* x -> a x + b (a column of X, and of Z when it has a random slope). X -> X M and Z -> Z M on the
  coefficients (Intercept, x), M = [[1, b], [0, a]]: the fixed effects and the random effects map by
  T = M^-1 = [[1, -b/a], [0, 1/a]] (slope/a, intercept - slope b/a), Var(beta-hat) -> T Var T',
  tau -> T tau T', u*_j -> T u*_j; sigma2 unchanged. The ML criterion is unchanged (the column space of
  X and of Z is), REML's moves by log|M' X'V^-1X M| - log|X'V^-1X| = log a^2 = +2 log|a|
  (the sign checked numerically against the fit, and it is the one of lme4: the REML likelihood is
  the integral of the likelihood over beta, which changes by 1/|a| when beta is rescaled by 1/a);
  unchanged under a shift (|M| = a).
* The same for the level-2 predictor w (no random slope: tau, sigma2 and u*_j unchanged).
* A permutation of the rows, or new labels of the units, change nothing (the units only reorder).

Offsets as large as 1e9 round the data: x + b is not exact in double precision. So a shift is tested
as fit(x_r) against fit(x_r + b) with x_r = (x + b) - b, whose shift is exact (x_r + b == x + b), and a
scale as fit(x) against fit(a x) (rounding of a x is relative, 1e-16).

Tolerances: the criterion to REL_DEV relative (1e-8); the estimates to REL_EST (1e-6) relative with
an absolute floor of REL_EST x the scale of the quantity: for a fixed effect, max(|estimate|, its SE);
for a covariance matrix, entry (i, k) against sqrt(tau_ii tau_kk) (i.e. correlations and SDs to 1e-6);
for the EB residuals, REL_EST x max |u*| of the column. Order and labels: REL_ORDER (1e-10) on the criterion, REL_ORDER_EST (1e-7) on the estimates.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

import multilevel as ml

REL_DEV = 1e-8
REL_EST = 1e-6
REL_ORDER = 1e-10
#: the estimates under a new row order or new unit labels: the sums over rows and units run in
#: another order, so the optimum moves by rounding; where the likelihood is flat (a few units,
#: variances near 0) that reaches ~1e-8 (random sweeps found 1.1e-9 and 1.5e-8 on SEs of ML
#: fits of 8 units). Still 10x stricter than the issue's 1e-6.
REL_ORDER_EST = 1e-7

# derandomize: the same examples on every run (a test that fails, fails every time); no shrinking,
# so that a failing run stays within the time budget (the first failing example is printed).
settings.register_profile(
    "multilevel-invariance",
    derandomize=True,
    deadline=None,
    max_examples=25,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    print_blob=False,
)
PROFILE = settings.get_profile("multilevel-invariance")

RS = "y ~ x + w + (x | g)"  # correlated random intercept and slope
RI = "y ~ x + w + (1 | g)"
METHODS = ["REML", "ML"]


# ----- data -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Data:
    df: pd.DataFrame
    seed: int


def make_data(seed: int, J: int, lo: int, hi: int, sd0: float, sd1: float, rho: float, sigma: float,
              b0: float, b1: float, b2: float) -> Data:
    """Unbalanced two-level data (J units of lo..hi rows) from the model of the module doc."""
    rng = np.random.default_rng(seed)
    n = rng.integers(lo, hi + 1, size=J)
    g = np.repeat(np.arange(J), n)
    N = g.size
    x = rng.normal(size=J)[g] * 0.5 + rng.normal(size=N)  # x varies within and between units
    w = rng.normal(size=J)
    cov = np.array([[sd0**2, rho * sd0 * sd1], [rho * sd0 * sd1, sd1**2]])
    u = rng.multivariate_normal(np.zeros(2), cov, size=J, method="eigh")
    y = b0 + b1 * x + b2 * w[g] + u[g, 0] + u[g, 1] * x + sigma * rng.normal(size=N)
    return Data(pd.DataFrame({"y": y, "x": x, "w": w[g], "g": g}), seed)


@st.composite
def two_level(draw, near_zero: bool = False) -> Data:
    """Random unbalanced two-level data; true variance components well away from zero (interior
    optimum) unless `near_zero`, where they may be (nearly) zero."""
    seed = draw(st.integers(0, 2**32 - 1))
    J = draw(st.integers(8, 40))
    # at least 3 rows per unit: with 2 rows and a random intercept and slope the level-1 variance is
    # not identified (lme4 refuses it: number of observations <= number of random effects)
    lo = draw(st.integers(3, 15))
    hi = draw(st.integers(lo, 15))
    if near_zero:
        sd0 = draw(st.floats(0.0, 0.05))
        sd1 = draw(st.floats(0.0, 0.05))
    else:
        sd0 = draw(st.floats(0.8, 3.0))
        sd1 = draw(st.floats(0.5, 2.0))
    rho = draw(st.floats(-0.6, 0.6))
    sigma = draw(st.floats(0.3, 1.5))
    b0 = draw(st.floats(-5.0, 5.0))
    b1 = draw(st.floats(-3.0, 3.0))
    b2 = draw(st.floats(-3.0, 3.0))
    return make_data(seed, J, lo, hi, sd0, sd1, rho, sigma, b0, b1, b2)


@dataclass(frozen=True)
class Snap:
    """What a fit is compared on."""

    deviance: float
    converged: bool
    singular: bool
    names: list
    beta: np.ndarray
    vcov: np.ndarray
    se: np.ndarray
    tau: np.ndarray
    sigma2: float
    ranef: pd.DataFrame
    n: int
    p: int


def snap(formula: str, df: pd.DataFrame, method: str) -> Snap:
    f = ml.fit(formula, df, method=method)
    V = f.vcov.to_numpy()
    return Snap(
        deviance=float(f.deviance),
        converged=bool(f.converged),
        singular=bool(f.singular),
        names=list(f.beta.index),
        beta=f.beta.to_numpy().copy(),
        vcov=V,
        se=np.sqrt(np.diag(V)),
        tau=f.tau.to_numpy().copy(),
        sigma2=float(f.sigma2),
        ranef=f.ranef.copy(),
        n=int(f.n_obs),
        p=len(f.beta),
    )


# ----- comparisons ------------------------------------------------------------------------------
def close(what: str, got, want, rel: float, floor) -> None:
    """|got - want| <= rel |want| + floor elementwise; the message gives the worst discrepancy."""
    got = np.asarray(got, dtype=float)
    want = np.asarray(want, dtype=float)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want)
    allowed = rel * np.abs(want) + np.asarray(floor, dtype=float)
    if not np.all(np.isfinite(got)) or np.any(err > allowed):
        scale = np.maximum(np.abs(want), np.asarray(floor, dtype=float) / rel)
        with np.errstate(divide="ignore", invalid="ignore"):
            worst = float(np.nanmax(np.where(scale > 0, err / scale, err)))
        raise AssertionError(
            f"{what}: off by {worst:.3g} relative (allowed {rel:g});\n got  {np.array2string(got, precision=10)}\n want {np.array2string(want, precision=10)}"
        )


def close_deviance(what: str, got: float, want: float, rel: float = REL_DEV) -> None:
    tol = rel * max(1.0, abs(want), abs(got))
    assert np.isfinite(got) and abs(got - want) <= tol, (
        f"{what}: criterion {got!r} vs expected {want!r}: off by {got - want:.3g} ({abs(got - want) / max(1.0, abs(want)):.3g} relative, allowed {rel:g})"
    )


def close_cov(what: str, got, want, rel: float = REL_EST, unit=None) -> None:
    """Covariance matrices: entry (i, k) to rel x sqrt(want_ii want_kk) (+ rel |want_ik|). `unit`
    (near-zero variances only): a floor for each SD, the residual SD in the coefficient's units."""
    want = np.atleast_2d(want)
    d = np.sqrt(np.clip(np.diag(want), 0, None))
    if unit is not None:
        d = np.maximum(d, unit)
    floor = rel * np.outer(d, d) + rel * 1e-12 * max(1.0, float(np.max(np.abs(want))))
    close(what, got, want, rel, floor)


def close_fixed(what: str, got: Snap, beta, se) -> None:
    beta, se = np.asarray(beta), np.asarray(se)
    close(f"{what}: fixed effects", got.beta, beta, REL_EST, REL_EST * np.maximum(np.abs(beta), se))
    close(f"{what}: standard errors", got.se, se, REL_EST, 0.0)


def close_ranef(what: str, got: pd.DataFrame, want: np.ndarray, rel: float = REL_EST, unit=None) -> None:
    """EB residuals: to rel, with a floor of rel x max |u*| of the column (or `unit`, as in close_cov)."""
    want = np.asarray(want, dtype=float)
    floor = rel * np.max(np.abs(want), axis=0, keepdims=True) + 1e-300
    if unit is not None:
        floor = np.maximum(floor, rel * np.asarray(unit)[None, :])
    close(f"{what}: EB residuals", got.to_numpy(), want, rel, np.broadcast_to(floor, want.shape))


def zunit(sigma2: float, x: np.ndarray, formula: str, interior: bool):
    """None for interior optima; else the residual SD in the units of each random coefficient
    (Intercept; x when it has a random slope): the scale below which a variance is 'near zero'."""
    if interior:
        return None
    sd = np.sqrt(sigma2)
    return np.array([sd, sd / np.std(x)]) if formula == RS else np.array([sd])


def fits_ok(what: str, *snaps: Snap) -> None:
    for s in snaps:
        assert s.converged, f"{what}: a fit says converged=False"


def not_above(what: str, got: float, mapped: float, rel: float = REL_DEV) -> None:
    """The fit of the transformed data must reach the optimum: its criterion may not be above the
    original's mapped value by more than the tolerance."""
    tol = rel * max(1.0, abs(mapped))
    assert got <= mapped + tol, f"{what}: criterion {got!r} is {got - mapped:.3g} above the optimum {mapped!r}"


# ----- strategies for the maps ------------------------------------------------------------------
def signed_power(lo: float, hi: float):
    """|a| = 10^e, e uniform in [lo, hi], either sign."""
    return st.tuples(st.sampled_from([1.0, -1.0]), st.floats(lo, hi)).map(lambda t: t[0] * 10.0 ** t[1])


SCALES = signed_power(-6.0, 6.0)
OFFSETS = st.one_of(signed_power(-3.0, 9.0), st.just(1e9), st.just(-1e9))


def clamp(a: float, b: float) -> float:
    """The offset, at most 1e9 |a| (the data have SD about 1): x a + b then keeps 7 significant
    digits of x, the precision of the issue's hardest case (mathach + 1e9); beyond that the
    shifted data are mostly rounding."""
    return float(np.sign(b) * min(abs(b), 1e9 * abs(a)))


def exact_shift(v: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """(v_r, v_r + b) with v_r = (v + b) - b, so that the second is exactly the first shifted by b."""
    v_r = (v + b) - b
    shifted = v_r + b
    assert np.array_equal(shifted - b, v_r)  # exact in floating point
    return v_r, shifted


# ----- y -> a y + b ------------------------------------------------------------------------------
def check_outcome_affine(data: Data, a: float, b: float, method: str, formula: str, interior: bool = True) -> None:
    df = data.df
    s0 = snap(formula, df, method)
    if interior:
        assume(not s0.singular)
    # scale
    s1 = snap(formula, df.assign(y=a * df["y"]), method)
    fits_ok("y -> a y", s0, s1)
    k = s0.n if method == "ML" else s0.n - s0.p
    mapped = s0.deviance + 2 * k * np.log(abs(a))
    close_deviance(f"y -> {a:g} y ({method})", s1.deviance, mapped)
    not_above(f"y -> {a:g} y ({method})", s1.deviance, mapped)
    close_fixed(f"y -> {a:g} y ({method})", s1, a * s0.beta, abs(a) * s0.se)
    unit = zunit(a**2 * s0.sigma2, df["x"].to_numpy(), formula, interior)
    close_cov(f"y -> {a:g} y ({method}): tau", s1.tau, a**2 * s0.tau, unit=unit)
    close(f"y -> {a:g} y ({method}): sigma2", s1.sigma2, a**2 * s0.sigma2, REL_EST, 0.0)
    close_ranef(f"y -> {a:g} y ({method})", s1.ranef, a * s0.ranef.to_numpy(), unit=unit)
    # shift, exact in floating point: fit(y_r) against fit(y_r + b)
    b = clamp(a, b)
    y_r, y_b = exact_shift(a * df["y"].to_numpy(), b)
    assume(np.std(y_r) > 0)
    s2 = snap(formula, df.assign(y=y_r), method)
    s3 = snap(formula, df.assign(y=y_b), method)
    fits_ok("y -> y + b", s2, s3)
    what = f"y -> y + {b:g} ({method})"
    close_deviance(what, s3.deviance, s2.deviance)
    not_above(what, s3.deviance, s2.deviance)
    shifted = s2.beta.copy()
    shifted[s2.names.index("Intercept")] += b
    close_fixed(what, s3, shifted, s2.se)
    unit = zunit(s2.sigma2, df["x"].to_numpy(), formula, interior)
    close_cov(f"{what}: tau", s3.tau, s2.tau, unit=unit)
    close(f"{what}: sigma2", s3.sigma2, s2.sigma2, REL_EST, 0.0)
    close_ranef(what, s3.ranef, s2.ranef.to_numpy(), unit=unit)


@pytest.mark.parametrize("method", METHODS)
@settings(PROFILE)
@given(data=two_level(), a=SCALES, b=OFFSETS)
@example(data=None, a=1.0, b=1e9)
@example(data=None, a=1e-6, b=1e5)
@example(data=None, a=-1e6, b=-1e9)
def test_outcome_affine(method, data, a, b):
    data = data or fixed_data()
    check_outcome_affine(data, a, b, method, RS)


@pytest.mark.parametrize("method", METHODS)
@settings(PROFILE)
@given(data=two_level(near_zero=True), a=SCALES, b=OFFSETS)
def test_outcome_affine_near_zero_variances(method, data, a, b):
    check_outcome_affine(data, a, b, method, RS, interior=False)


def fixed_data() -> Data:
    """One fixed data set for the explicit examples (the extreme maps)."""
    return _FIXED


def _make_fixed() -> Data:
    return make_data(20240611, 25, 2, 15, 1.4, 0.9, 0.35, 0.8, 1.0, 2.0, -1.0)


_FIXED = _make_fixed()


# ----- x -> a x + b -----------------------------------------------------------------------------
def check_predictor_affine(data: Data, col: str, a: float, b: float, method: str, formula: str, interior: bool = True) -> None:
    df = data.df
    s0 = snap(formula, df, method)
    if interior:
        assume(not s0.singular)
    random_slope = col == "x" and formula == RS
    # the map of the coefficients (Intercept, col): new = T old, T = M^-1, M = [[1, b], [0, a]]
    def T_of(a_: float, b_: float, names: list) -> np.ndarray:
        T = np.eye(len(names))
        i, k = names.index("Intercept"), names.index(col)
        T[k, k] = 1.0 / a_
        T[i, k] = -b_ / a_
        return T

    # scale: fit(x) against fit(a x)
    s1 = snap(formula, df.assign(**{col: a * df[col]}), method)
    fits_ok(f"{col} -> a {col}", s0, s1)
    what = f"{col} -> {a:g} {col} ({method}, {formula})"
    mapped = s0.deviance + (2 * np.log(abs(a)) if method == "REML" else 0.0)
    close_deviance(what, s1.deviance, mapped)
    not_above(what, s1.deviance, mapped)
    T = T_of(a, 0.0, s0.names)
    close_fixed(what, s1, T @ s0.beta, np.sqrt(np.diag(T @ s0.vcov @ T.T)))
    Tz = T_of(a, 0.0, list(s0.ranef.columns)) if random_slope else np.eye(len(s0.ranef.columns))
    new_x = a * df["x"].to_numpy() if col == "x" else df["x"].to_numpy()
    unit = zunit(s0.sigma2, new_x, formula, interior)
    close_cov(f"{what}: tau", s1.tau, Tz @ s0.tau @ Tz.T, unit=unit)
    close(f"{what}: sigma2", s1.sigma2, s0.sigma2, REL_EST, 0.0)
    close_ranef(what, s1.ranef, s0.ranef.to_numpy() @ Tz.T, unit=unit)
    # shift, exact: fit(x_r) against fit(x_r + b)
    b = clamp(a, b)
    x_r, x_b = exact_shift(a * df[col].to_numpy(), b)
    assume(np.std(x_r) > 0)
    s2 = snap(formula, df.assign(**{col: x_r}), method)
    s3 = snap(formula, df.assign(**{col: x_b}), method)
    fits_ok(f"{col} -> {col} + b", s2, s3)
    what = f"{col} -> {col} + {b:g} ({method}, {formula}; {col} scaled by {a:g})"
    close_deviance(what, s3.deviance, s2.deviance)
    not_above(what, s3.deviance, s2.deviance)
    T = T_of(1.0, b, s2.names)
    close_fixed(what, s3, T @ s2.beta, np.sqrt(np.diag(T @ s2.vcov @ T.T)))
    Tz = T_of(1.0, b, list(s2.ranef.columns)) if random_slope else np.eye(len(s2.ranef.columns))
    unit = zunit(s2.sigma2, x_b if col == "x" else df["x"].to_numpy(), formula, interior)
    close_cov(f"{what}: tau", s3.tau, Tz @ s2.tau @ Tz.T, unit=unit)
    close(f"{what}: sigma2", s3.sigma2, s2.sigma2, REL_EST, 0.0)
    close_ranef(what, s3.ranef, s2.ranef.to_numpy() @ Tz.T, unit=unit)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("formula", [RS, RI], ids=["random-slope", "random-intercept"])
@settings(PROFILE)
@given(data=two_level(), a=SCALES, b=OFFSETS)
@example(data=None, a=1.0, b=1e9)
@example(data=None, a=1.0, b=30.0)  # an uncentred time scale (age 30..37)
@example(data=None, a=1e6, b=1e9)
@example(data=None, a=-1e-6, b=1e3)
def test_level1_predictor_affine(method, formula, data, a, b):
    check_predictor_affine(data or fixed_data(), "x", a, b, method, formula)


@pytest.mark.parametrize("method", METHODS)
@settings(PROFILE)
@given(data=two_level(), a=SCALES, b=OFFSETS)
@example(data=None, a=1.0, b=1e9)
@example(data=None, a=1e-6, b=-1e7)
def test_level2_predictor_affine(method, data, a, b):
    check_predictor_affine(data or fixed_data(), "w", a, b, method, RS)


@pytest.mark.parametrize("method", METHODS)
@settings(PROFILE)
@given(data=two_level(near_zero=True), a=SCALES, b=OFFSETS)
def test_level1_predictor_affine_near_zero_variances(method, data, a, b):
    check_predictor_affine(data, "x", a, b, method, RS, interior=False)


# ----- row order and unit labels ----------------------------------------------------------------
def same(what: str, got: Snap, want: Snap, ranef_want: np.ndarray | None = None) -> None:
    fits_ok(what, got, want)
    close_deviance(what, got.deviance, want.deviance, REL_ORDER)
    assert got.names == want.names, f"{what}: fixed-effect names {got.names} != {want.names}"
    close(f"{what}: fixed effects", got.beta, want.beta, REL_ORDER_EST, REL_ORDER_EST * np.maximum(np.abs(want.beta), want.se))
    close(f"{what}: standard errors", got.se, want.se, REL_ORDER_EST, 0.0)
    close_cov(f"{what}: tau", got.tau, want.tau, REL_ORDER_EST)
    close(f"{what}: sigma2", got.sigma2, want.sigma2, REL_ORDER_EST, 0.0)
    close_ranef(what, got.ranef, want.ranef.to_numpy() if ranef_want is None else ranef_want, REL_ORDER_EST)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("formula", [RS, RI], ids=["random-slope", "random-intercept"])
@settings(PROFILE)
@given(data=two_level(), perm_seed=st.integers(0, 2**32 - 1))
def test_row_order(method, formula, data, perm_seed):
    df = data.df
    perm = np.random.default_rng(perm_seed).permutation(len(df))
    s0 = snap(formula, df, method)
    s1 = snap(formula, df.iloc[perm], method)
    same("rows permuted", s1, s0)
    # and with a fresh 0..N-1 index (the rows' labels do not carry the order back)
    s2 = snap(formula, df.iloc[perm].reset_index(drop=True), method)
    same("rows permuted (new index)", s2, s0)


@pytest.mark.parametrize("method", METHODS)
@settings(PROFILE)
@given(data=two_level(), label_seed=st.integers(0, 2**32 - 1), width=st.integers(1, 8))
def test_unit_relabelling(method, data, label_seed, width):
    df = data.df
    rng = np.random.default_rng(label_seed)
    ids = np.unique(df["g"])
    letters = np.array(list(string.ascii_letters + string.digits))
    labels: dict = {}
    while len(labels) < ids.size:  # distinct random text ids, in no particular order
        lab = "u" + "".join(rng.choice(letters, size=width))
        if lab not in labels.values():
            labels[ids[len(labels)]] = lab
    new = df.assign(g=df["g"].map(labels))
    s0 = snap(RS, df, method)
    s1 = snap(RS, new, method)
    # units only reorder: line the new EB residuals up with the old units
    assert sorted(map(str, s1.ranef.index)) == sorted(labels.values()), "the units' labels are not the given ids"
    by_text = {str(k): v for k, v in labels.items()}  # the unit ids as the fit labels them
    got = s1.ranef.loc[[by_text[str(i)] for i in s0.ranef.index]]
    same("units relabelled", Snap(**{**s1.__dict__, "ranef": got}), s0)
