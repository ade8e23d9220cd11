"""Confidence intervals: Wald and profile against lme4's confint; the parametric bootstrap by its
properties (seeded, reproducible, spread equal to the model's SEs)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import multilevel as ml
from conftest import MODELS, REFS, fitted, hsb
from multilevel.errors import DataError, SpecificationError

INFERENCE = json.loads((REFS / "inference.json").read_text())
C1 = "mathach ~ cses + meanses + (1 | school)"


def _lme4(model, method, kind):
    rows = INFERENCE["models"][model][method][kind]["rows"]
    return {r["row"].replace("(Intercept)", "Intercept"): (r["2.5 %"], r["97.5 %"]) for r in rows}


@pytest.mark.parametrize("model", ["C1", "M4"])
def test_profile_intervals_match_lme4_for_ml_fits(model):
    fit = ml.fit(C1 if model == "C1" else MODELS[model], hsb(), method="ML")
    ours = fit.confint("profile")
    ref = _lme4(model, "ML", "confint_profile")
    assert set(ours.index) == set(ref)
    for name, (lo, hi) in ref.items():
        # lme4 interpolates its profile with splines: agreement to about 1e-5
        assert ours.loc[name, "ci_low"] == pytest.approx(lo, rel=5e-5, abs=1e-9), name
        assert ours.loc[name, "ci_high"] == pytest.approx(hi, rel=5e-5, abs=1e-9), name


def test_fixed_effect_profiles_of_a_reml_fit_use_ml_as_lme4_does():
    fit = ml.fit(C1, hsb())
    ours = fit.confint("profile", which="fixed")
    ref = _lme4("C1", "REML", "confint_profile")
    for name in fit.beta.index:
        assert ours.loc[name, "ci_low"] == pytest.approx(ref[name][0], rel=5e-5)
        assert ours.loc[name, "estimate"] == fit.beta[name]  # the REML estimate is reported


def test_variance_profiles_of_a_reml_fit_use_the_reml_criterion():
    """lme4 silently profiles REML fits by ML; here the REML criterion is profiled, so the
    interval of a REML fit's SD is wider than the ML one and contains the REML estimate."""
    reml = ml.fit(C1, hsb()).confint("profile", which="variance")
    ml_ = _lme4("C1", "ML", "confint_profile")
    name = "sd_Intercept|school"
    assert reml.loc[name, "ci_low"] < reml.loc[name, "estimate"] < reml.loc[name, "ci_high"]
    assert reml.loc[name, "ci_high"] - reml.loc[name, "ci_low"] > ml_[name][1] - ml_[name][0]


@pytest.mark.parametrize("model,method", [("C1", "REML"), ("C1", "ML"), ("M4", "REML"), ("M4", "ML")])
def test_wald_intervals_of_fixed_effects_match_lme4(model, method):
    fit = ml.fit(C1 if model == "C1" else MODELS[model], hsb(), method=method)
    ours = fit.confint("wald")
    for name, (lo, hi) in _lme4(model, method, "confint_Wald").items():
        if lo is None:  # lme4 gives no Wald interval for variance parameters
            continue
        assert ours.loc[name, "ci_low"] == pytest.approx(lo, rel=1e-6)
        assert ours.loc[name, "ci_high"] == pytest.approx(hi, rel=1e-6)


def test_wald_interval_of_a_variance_component_uses_the_information():
    fit = fitted("M1", "ML")
    w = fit.confint("wald")
    # sd of the intercept: delta method from Var(tau00) = 2 H^-1, on the log scale:
    # se(log sd) = se(sd) / sd, interval sd * exp(+/- z se(sd) / sd)
    var = fit.inference.variance_derivatives.asymptotic_vcov[0, 0]
    sd = np.sqrt(fit.tau.iloc[0, 0])
    se_sd = np.sqrt(var) / (2 * sd)
    z = 1.959963984540054
    assert w.loc["sd_Intercept|school", "ci_high"] == pytest.approx(sd * np.exp(z * se_sd / sd), rel=1e-5)
    assert w.loc["sd_Intercept|school", "ci_low"] == pytest.approx(sd * np.exp(-z * se_sd / sd), rel=1e-5)


@pytest.mark.parametrize("model,method", [("M4", "REML"), ("M4", "ML"), ("S4", "REML"), ("S4", "ML")])
def test_wald_intervals_of_variance_parameters_stay_in_their_range(model, method):
    """Issue 11: model 4 by REML gave an SD interval from -0.34 and a correlation interval to 1.46.
    SDs are now bounded on the log scale, correlations on Fisher's z scale."""
    fit = fitted(model, method)
    w = fit.confint("wald")
    scale_rows = [n for n in w.index if n.startswith(("sd_", "cor_")) or n == "sigma"]
    assert scale_rows
    z = 1.959963984540054
    for name in scale_rows:
        lo, est, hi = w.loc[name, ["ci_low", "estimate", "ci_high"]]
        assert lo < est < hi, name
        if name.startswith("cor_"):
            assert -1 <= lo and hi <= 1, name  # (tanh of a huge half-width rounds to +/-1)
            # symmetric on Fisher's z scale, where it can be told in double precision: arctanh(r)
            # amplifies a rounding of r by 1/(1 - r^2), beyond 1e-9 when |r| is within 1e-6 of 1
            if max(abs(lo), abs(hi)) < 1 - 1e-6:
                assert np.arctanh(hi) - np.arctanh(est) == pytest.approx(np.arctanh(est) - np.arctanh(lo), rel=1e-9)
        else:
            assert lo > 0, name
            assert np.log(hi / est) == pytest.approx(np.log(est / lo), rel=1e-9)
            half = np.log(hi / est) / z  # = se(sd) / sd
            assert 0 < half < np.inf


def test_parametric_bootstrap_is_seeded_and_its_spread_matches_the_model_ses(capsys):
    fit = fitted("M2", "REML")
    a = fit.bootstrap(200, seed=7, progress=True)
    assert "bootstrap 200/200" in capsys.readouterr().err  # the progress line
    b = fit.bootstrap(20, seed=7, progress=False)
    np.testing.assert_array_equal(a.replicates.iloc[:20].to_numpy(), b.replicates.to_numpy())
    assert a.n_failed == 0 and len(a.replicates) == 200
    se = np.sqrt(np.diag(fit.vcov))
    # SD of 200 draws estimates the SE to about 5%: allow 20%
    np.testing.assert_allclose(a.replicates[["Intercept", "meanses"]].std(), se, rtol=0.2)
    ci = a.intervals()
    assert np.all(ci["ci_low"] < ci["estimate"]) and np.all(ci["estimate"] < ci["ci_high"])
    sd_hat = np.sqrt(fit.tau.iloc[0, 0])
    assert a.replicates["sd_Intercept|school"].mean() == pytest.approx(sd_hat, rel=0.05)


def test_unknown_interval_method():
    with pytest.raises(SpecificationError, match="profile"):
        fitted("M1", "REML").confint("likelihood")


def test_unidentified_variance_parameters_are_flagged():
    """A random slope of sector (constant within schools) leaves one direction of tau flat: the fit
    refuses it now (design.check_random_slopes_vary); a slope of sector with a trace of within-school
    variation (1e-7) is identified only in name, and its intervals say so."""
    with pytest.raises(DataError, match="constant within every unit"):
        ml.fit("mathach ~ cses + sector + (1 + sector | school)", hsb())
    d = hsb().assign(sector=lambda t: t["sector"] + 1e-7 * np.sin(np.arange(len(t))))
    fit = ml.fit("mathach ~ cses + sector + (1 + sector | school)", d)
    with pytest.warns(UserWarning, match="not identified"):
        w = fit.confint("wald")
    assert w.loc[["sd_Intercept|school", "sigma"], "ci_low"].isna().all()
    assert not w.loc["cses", ["ci_low", "ci_high"]].isna().any()


def test_wald_interval_of_a_zero_variance_is_nan_without_numpy_warnings():
    import warnings

    from test_inference import _tiny_schools

    fit = ml.fit("mathach ~ ses * sector + (ses || school)", _tiny_schools())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        w = fit.confint("wald")
    assert np.isnan(w.loc["sd_ses|school", "ci_low"])
    assert np.isfinite(w.loc["sd_Intercept|school", "ci_low"])
    with pytest.raises(SpecificationError, match="which"):
        fit.confint("profile", which="bogus")


def test_bootstrap_gives_the_same_replicates_on_one_or_two_threads():
    fit = fitted("M2", "REML")
    one = fit.bootstrap(24, seed=11, progress=False, n_jobs=1)
    two = fit.bootstrap(24, seed=11, progress=False, n_jobs=2)
    np.testing.assert_array_equal(one.replicates.to_numpy(), two.replicates.to_numpy())
    assert len(one.replicates) == 24
