"""ICCs, design effects and pseudo-R2 of models with several grouping factors, from their
definitions on the fitted variance components (lme4's VarCorr of the reference fits)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import multilevel as ml

DATA = Path(__file__).resolve().parents[2] / "refs" / "multi" / "data"


@pytest.fixture(scope="module")
def eg():
    return pd.read_csv(DATA / "egsingle.csv", dtype={"schoolid": str, "childid": str})


def test_nested_iccs_add_the_levels_above(eg):
    fit = ml.fit("math ~ year + (1 | schoolid/childid)", eg)
    vc = fit.varcorr.set_index("grp")["vcov"]
    t_c, t_s, s2 = vc["childid:schoolid"], vc["schoolid"], vc["Residual"]
    total = t_c + t_s + s2
    es = fit.effect_sizes()
    assert es.loc["schoolid", "icc"] == pytest.approx(t_s / total, rel=1e-12)
    assert es.loc["schoolid", "icc_same_unit"] == pytest.approx(t_s / total, rel=1e-12)
    # two scores of one child share the child's and the school's intercepts
    assert es.loc["childid:schoolid", "icc_same_unit"] == pytest.approx((t_c + t_s) / total, rel=1e-12)
    n_child = fit.groups["childid:schoolid"]
    deff = 1 + (fit.n_obs / n_child - 1) * (t_c + t_s) / total
    assert es.loc["childid:schoolid", "design_effect"] == pytest.approx(deff, rel=1e-12)
    assert es.loc["childid:schoolid", "effective_n"] == pytest.approx(fit.n_obs / deff, rel=1e-12)


def test_crossed_iccs_are_each_factors_share():
    d = pd.read_csv(DATA / "penicillin.csv", dtype={"plate": str, "sample": str})
    fit = ml.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", d)
    vc = fit.varcorr.set_index("grp")["vcov"]
    total = vc.sum()
    es = fit.effect_sizes()
    for g in ("plate", "sample"):
        assert es.loc[g, "icc"] == es.loc[g, "icc_same_unit"] == pytest.approx(vc[g] / total, rel=1e-12)


def test_pseudo_r2_of_several_factors(eg):
    base = ml.fit("math ~ 1 + (1 | schoolid/childid)", eg)
    fit = ml.fit("math ~ year + (1 | schoolid/childid)", eg)
    r2 = ml.pseudo_r2(base, fit)
    b = base.varcorr.set_index("grp")["vcov"]["Residual"]
    f = fit.varcorr.set_index("grp")["vcov"]["Residual"]
    assert r2.loc["level-1 (sigma2)", "pseudo_r2"] == pytest.approx((b - f) / b, rel=1e-12)
    assert set(r2.index) == {"level-1 (sigma2)", "childid:schoolid: (Intercept)", "schoolid: (Intercept)"}
    with pytest.raises(ml.SpecificationError, match="same rows by the same method"):
        ml.pseudo_r2(base, ml.fit("math ~ year + (1 | schoolid/childid)", eg, method="ML"))
