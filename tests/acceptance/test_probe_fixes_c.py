"""Probe findings (round 2, part c): fit_levels' arguments, cgm() of a level-2 predictor, random
slopes of level-2 variables, HLM's U0 notation, level-2 values missing in some rows of a unit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.errors import DataError, SpecificationError

L1 = "mathach ~ cwc(ses)"


@pytest.fixture(scope="module")
def hsb() -> pd.DataFrame:
    return ml.datasets.hsb()


# ----- 1. fit_levels: the level-2 table is level2_data=; stream= ----------------------------------
def test_level2_table_given_as_level2_is_refused_clearly(hsb, tmp_path):
    sch = tmp_path / "sch.csv"
    hsb.groupby("school", as_index=False)[["meanses"]].first().to_csv(sch, index=False)
    with pytest.raises(SpecificationError, match="level2_data="):
        ml.fit_levels(L1, {"Intercept": "meanses + u"}, group="school", data=hsb, level2=str(sch))
    with pytest.raises(SpecificationError, match="level2_data="):
        ml.fit_levels(L1, level2=str(sch), group="school", data=hsb)
    with pytest.raises(SpecificationError, match="level2_data="):
        ml.fit_levels(L1, {"Intercept": "u"}, group="school", data=hsb, level2={"Intercept": "u"})


def test_fit_levels_streams_as_fit_does(hsb, tmp_path):
    p = tmp_path / "h.parquet"
    hsb.to_parquet(p)
    eq = {"Intercept": "sector + u"}
    streamed = ml.fit_levels(L1, eq, group="school", data=str(p), stream=True)
    memory = ml.fit_levels(L1, eq, group="school", data=hsb)
    np.testing.assert_allclose(streamed.beta.to_numpy(), memory.beta.to_numpy(), rtol=1e-6)


# ----- 2. cgm() of a level-2 predictor in level equations: the mean over the units ---------------
def test_cgm_of_level2_predictor_centres_over_units(hsb):
    f = ml.fit_levels(L1, {"Intercept": "cgm(meanses) + u", "cwc(ses)": "u"}, group="school", data=hsb)
    unit_mean = hsb.groupby("school")["meanses"].first().mean()  # each of the 160 schools once
    d = hsb.assign(mc=hsb["meanses"] - unit_mean)
    g = ml.fit_levels(L1, {"Intercept": "mc + u", "cwc(ses)": "u"}, group="school", data=d)
    assert f.beta["Intercept"] == pytest.approx(g.beta["Intercept"], rel=1e-7)
    assert f.beta["Intercept"] == pytest.approx(12.644332, abs=2e-6)  # the tester's hand computation
    assert f.beta["cgm(meanses)"] == pytest.approx(g.beta["mc"], rel=1e-7)
    # the report marks it, as HLM marks a grand-mean-centred level-2 predictor
    rep = f.report()
    assert "$cgm(meanses)" in rep and "level-2 predictor has been centered around its grand mean (over the units" in rep
    assert any("over the units" in line for line in f.level_equations)


def test_cgm_in_a_formula_stays_the_mean_over_rows(hsb):
    f = ml.fit("mathach ~ cgm(meanses) + cwc(ses) + (1 | school)", hsb)
    d = hsb.assign(mc=hsb["meanses"] - hsb["meanses"].mean())
    g = ml.fit("mathach ~ mc + cwc(ses) + (1 | school)", d)
    assert f.beta["Intercept"] == pytest.approx(g.beta["Intercept"], rel=1e-7)


def test_streamed_cgm_of_level2_predictor_matches_memory(hsb, tmp_path):
    p = tmp_path / "h.parquet"
    hsb.to_parquet(p)
    eq = {"Intercept": "cgm(meanses) + u"}
    streamed = ml.fit_levels(L1, eq, group="school", data=str(p), stream=True)
    memory = ml.fit_levels(L1, eq, group="school", data=hsb)
    np.testing.assert_allclose(streamed.beta.to_numpy(), memory.beta.to_numpy(), rtol=1e-6)


# ----- 3. a random slope of a level-2 variable ---------------------------------------------------
@pytest.mark.parametrize("how", ["formula", "levels"])
def test_random_slope_of_level2_variable_is_refused(hsb, how):
    with pytest.raises(DataError, match=r"random slope of 'sector' on 'school'.*constant within every unit"):
        if how == "formula":
            ml.fit("mathach ~ sector + (sector | school)", hsb)
        else:
            ml.fit_levels("mathach ~ sector", {"Intercept": "u", "sector": "u"}, group="school", data=hsb)


def test_random_slope_constant_in_most_units_is_kept(hsb):
    d = hsb.assign(s2=hsb["sector"].astype(float))
    d.loc[d.index[:3], "s2"] = 0.5  # varies within one school
    ml.fit("mathach ~ s2 + (s2 | school)", d)  # no error


# ----- 4. HLM's U0 / u1 notation -----------------------------------------------------------------
@pytest.mark.parametrize("eq", [{"Intercept": "sector + U0", "cwc(ses)": "U1"}, {"Intercept": "sector + u0", "cwc(ses)": "u"}])
def test_hlm_random_effect_names_get_a_pointer_to_u(hsb, tmp_path, eq):
    for data in (hsb, tmp_path / "h.csv"):
        if not isinstance(data, pd.DataFrame):
            hsb.to_csv(data, index=False)
            data = str(data)
        with pytest.raises(SpecificationError, match=r"HLM's notation for a random effect.*written 'u'"):
            ml.fit_levels(L1, eq, group="school", data=data)


def test_a_column_named_u0_is_the_column(hsb):
    f = ml.fit_levels(L1, {"Intercept": "u0 + u"}, group="school", data=hsb.assign(u0=hsb["sector"]))
    assert "u0" in f.beta.index


# ----- 5. a level-2 value missing in some rows of a unit -----------------------------------------
def test_level2_missing_in_some_rows_says_so(hsb):
    d = hsb.copy()
    d.loc[d.index[d["school"] == "1224"][:3], "meanses"] = np.nan
    with pytest.raises(DataError, match=r"1224 \(meanses: missing in 3 of its 47 rows\)"):
        ml.fit_levels(L1, {"Intercept": "meanses + u"}, group="school", data=d)
    f = ml.fit_levels(L1, {"Intercept": "meanses + u"}, group="school", data=d, level2_missing="drop")
    assert f.n_obs == len(d) - 47  # HLM's rule: the whole unit
    assert "missing in 3 of its 47 rows" in str(f.data_report)
