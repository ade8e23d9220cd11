"""Models with several grouping factors (nested, crossed, both) against converged lme4
(refs/make_refs_multi.R, refs/multi/<case>.json): fixed effects, SEs, vcov and the criterion to
1e-6 relative; variance components, sigma and the conditional modes with their conditional SDs to
1e-4; by REML and ML. Fitted through `ml.fit` on the exact rows R used (refs/multi/data)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.results.multi import MultiEstimates

REFS = Path(os.environ.get("MULTILEVEL_MULTI_REFS", Path(__file__).resolve().parents[2] / "refs" / "multi"))
CASES = sorted(p.stem for p in REFS.glob("*.json")) if REFS.exists() else []


def _case(name: str) -> dict:
    return json.loads((REFS / f"{name}.json").read_text())


def _data(ref: dict) -> pd.DataFrame:
    ids = {c: str for c in ref.get("id_columns", [])}
    return pd.read_csv(REFS / ref["data_file"], dtype=ids)


_FITS: dict = {}


def _fit(name: str, method: str):
    key = (name, method)
    if key not in _FITS:
        ref = _case(name)
        _FITS[key] = (ml.fit(ref["formula"], _data(ref), method=method), ref[method])
    return _FITS[key]


def _varcorr_key(grp, var1, var2) -> tuple:
    none = lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else v  # noqa: E731
    return (grp, none(var1), none(var2))


#: none since the references were polished to the optimum (make_refs_multi.R's Newton steps: lme4
#: stopped with max |gradient| ~1e-3 in theta on these flat criteria, ~2e-6 from it in beta)
UNPOLISHED: set[tuple[str, str]] = set()


def _params(cases):
    return [pytest.param(c, m, marks=pytest.mark.xfail(strict=True, reason="lme4 not converged to 1e-6 here"))
            if (c, m) in UNPOLISHED else pytest.param(c, m) for c in cases for m in ("REML", "ML")]


@pytest.mark.parametrize("name,method", _params(CASES))
def test_several_factors_equal_lme4(name, method):
    fit, r = _fit(name, method)
    assert fit.converged
    fe = r["fixed_effects"]
    assert len(fit.beta) == len(fe["names"])
    np.testing.assert_allclose(fit.beta.to_numpy(), fe["estimate"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.fixed["se"].to_numpy(), fe["se"], rtol=1e-6)
    # vcov at the optimum to 1e-6 (the polished references); evaluated at lme4's own theta, lme4's
    # to 1e-8 (the formula, apart from convergence)
    np.testing.assert_allclose(fit.vcov.to_numpy(), np.array(r["vcov"]), rtol=1e-6, atol=1e-14)
    # the criterion: ours may be lower (a better optimum), never higher beyond 1e-6 relative
    crit = r["criterion"]["value"]
    assert fit.deviance == pytest.approx(crit, rel=1e-6)
    assert fit.deviance <= crit + 1e-8 * abs(crit)
    assert fit.n_obs == r["n_obs"]
    assert fit.groups == r["ngrps"]
    assert fit.singular == bool(r["isSingular"])
    # variance components: as.data.frame(VarCorr(fit)), row by row
    vc = r["varcorr"]
    mine = {_varcorr_key(a, b, c): (v, s) for a, b, c, v, s in fit.varcorr.itertuples(index=False)}
    assert len(mine) == len(vc["grp"])
    for grp, v1, v2, v, s in zip(vc["grp"], vc["var1"], vc["var2"], vc["vcov"], vc["sdcor"]):
        got = mine[_varcorr_key(grp, v1, v2)]
        np.testing.assert_allclose(got[0], v, rtol=1e-4, atol=1e-7 * max(1.0, abs(r["sigma"]) ** 2))
        if not (v2 is not None and (np.isnan(got[1]) or abs(v) < 1e-10)):
            np.testing.assert_allclose(got[1], s, rtol=1e-4, atol=1e-6)
    assert np.sqrt(fit.sigma2) == pytest.approx(r["sigma"], rel=1e-4)
    assert fit.loglik == pytest.approx(r["logLik"], rel=1e-6)
    assert fit.n_params == r["logLik_df"]
    theirs = dict(zip(r["theta"]["names"], r["theta"]["values"]))
    est = fit.estimates
    if not isinstance(est, MultiEstimates):
        return  # one factor written with lme4's syntax for several: the one-factor engine
    at_lme4 = MultiEstimates.at_theta(est.design, est.summaries, est.factors, method,
                                      np.array([theirs[n] for n in est.theta_names]), None)
    np.testing.assert_allclose(at_lme4.vcov.to_numpy(), np.array(r["vcov"]), rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("name", CASES)
def test_conditional_modes_and_sds_equal_lme4(name, method):
    fit, r = _fit(name, method)
    ref = pd.DataFrame(r["ranef"])
    mine = fit.ranef_table().set_index(["grpvar", "term", "grp"])
    got = mine.loc[list(zip(ref["grpvar"], ref["term"], ref["grp"].astype(str)))]
    scale = float(np.abs(ref["condval"]).max())
    np.testing.assert_allclose(got["condval"].to_numpy(), ref["condval"], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(got["condsd"].to_numpy(), ref["condsd"], rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("name", ["eg_growth", "eg_intercepts", "machines_nested", "penicillin", "singular_nested"])
def test_summary_prints_lmertest_satterthwaite_df(name):
    fit, r = _fit(name, "REML")
    table = fit.coef_table("satterthwaite")
    np.testing.assert_allclose(table["df"].to_numpy(), r["satterthwaite"]["df"], rtol=2e-5)
    text = fit.summary()
    for df in r["satterthwaite"]["df"]:
        assert f"{df:.2f}" in text
    if isinstance(r.get("kenward_roger"), dict) and "df" in r["kenward_roger"]:
        kr = fit.coef_table("kenward-roger")
        np.testing.assert_allclose(kr["df"].to_numpy(), r["kenward_roger"]["df"], rtol=2e-5)
        np.testing.assert_allclose(kr["se"].to_numpy(), r["kenward_roger"]["se"], rtol=2e-6)
