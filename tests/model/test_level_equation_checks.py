"""Level equations of several factors refuse what HLM's files cannot hold, instead of fitting
another model silently: the ids in the wrong order (two factors that group the rows alike), a
level-2 table keyed by a level-2 id that repeats across level-3 units, a predictor written at a
level within whose units it varies, and a table passed where equations go."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml

ROOT = Path(__file__).resolve().parents[2]
L2 = {"Intercept": "black + random", "year": "random"}
L3 = {"Intercept": {"Intercept": "lowinc + random"}, "year": {"Intercept": "random"}}


@pytest.fixture(scope="module")
def eg() -> pd.DataFrame:
    return pd.read_csv(ROOT / "refs/multi/data/egsingle.csv", dtype={"schoolid": str, "childid": str})


def test_ids_in_the_wrong_order_are_refused(eg):
    with pytest.raises(ml.SpecificationError, match=r"'childid' and 'schoolid:childid' group the rows the same way.*order"):
        ml.fit_levels("math ~ 1 + year", {"Intercept": "black + random"}, level3={"Intercept": {"Intercept": "lowinc + random"}},
                      group=("schoolid", "childid"), data=eg, method="ML")
    with pytest.raises(ml.SpecificationError, match="group the rows the same way"):
        ml.fit("math ~ year + (1 | childid) + (1 | childid:schoolid)", eg)


def test_a_level2_table_keyed_by_an_id_that_repeats_across_schools_is_refused(eg):
    d = eg.assign(kid=eg.groupby("schoolid")["childid"].transform(lambda s: pd.factorize(s)[0] + 1).astype(str))
    children = d[["kid", "black"]].drop_duplicates("kid")  # one row per kid number: no school to tell them apart
    with pytest.raises(ml.DataError, match=r"'kid' repeats across level-3 units \('schoolid'\).*Add the level-3 id"):
        ml.fit_levels("math ~ 1 + year", L2, level3=L3, group=("kid", "schoolid"), method="ML",
                      data=d[["kid", "schoolid", "year", "math"]], level2_data=children,
                      level3_data=d[["schoolid", "lowinc"]].drop_duplicates())


def test_a_predictor_that_varies_within_its_levels_units_is_refused(eg):
    noisy = eg.assign(lowinc=eg["lowinc"] + np.random.default_rng(1).normal(0, 1, len(eg)))
    with pytest.raises(ml.DataError, match="'lowinc' is written in the level equations of the units of 'schoolid' but varies"):
        ml.fit_levels("math ~ 1 + year", L2, level3=L3, group=("childid", "schoolid"), data=noisy, method="ML")
    with pytest.raises(ml.DataError, match="'year' is written in the level equations of the units of 'childid:schoolid'"):
        ml.fit_levels("math ~ 1 + year", {"Intercept": "year + random"}, level3={"Intercept": {"Intercept": "random"}},
                      group=("childid", "schoolid"), data=eg, method="ML")
    # a school variable in a level-2 equation is constant within children too: taken
    fit = ml.fit_levels("math ~ 1 + year", {"Intercept": "lowinc + black + random", "year": "random"}, level3=L3,
                        group=("childid", "schoolid"), data=eg, method="ML")
    assert fit.converged


def test_hcm2_predictors_constant_within_rows_or_columns():
    h = pd.read_csv(ROOT / "refs/hcm2/data/hcm2_sim.csv")
    with pytest.raises(ml.DataError, match="'ses' is written in the row-and-column equations but varies within 40 units of 'nbhd'"):
        ml.fit_levels("y ~ 1", {"Intercept": "ses + b + c"}, row="nbhd", column="school", data=h)
    fit = ml.fit_levels("y ~ 1 + ses", {"Intercept": "dep + sfree + b + c"}, row="nbhd", column="school", data=h)
    assert fit.converged


def test_a_table_given_as_level3_equations_is_refused(eg):
    schools = eg[["schoolid", "lowinc"]].drop_duplicates()
    for kw, hint in ((dict(level3=schools), "level3_data="), (dict(level3="schools.csv"), "level3_data="),
                     (dict(level3=L3, level4=schools), "join the tables first")):
        with pytest.raises(ml.SpecificationError, match=hint):
            ml.fit_levels("math ~ 1 + year", L2, group=("childid", "schoolid"), data=eg, **kw)


def test_a_misspelt_level1_variable_is_named_as_not_a_column(eg):
    with pytest.raises(ml.SpecificationError, match=r"'yaer' in the level-1 formula is not a column of the data\. Did you mean 'year'"):
        ml.fit_levels("math ~ 1 + yaer", {"Intercept": "black + random", "year": "random"}, level3=L3,
                      group=("childid", "schoolid"), data=eg, method="ML")


def test_collinear_fixed_effects_of_several_factors_are_named_before_the_fit(eg):
    with pytest.raises(ml.DataError, match=r"collinear: 'C\(black\)\[T.1\]' is a linear combination"):
        ml.fit("math ~ 1 + lowinc + black + C(black) + (1 | schoolid) + (1 | childid:schoolid)", eg, method="ML")


def test_a_misspelt_name_in_a_level_equation_is_named_before_what_it_leaves_out(eg):
    with pytest.raises(ml.SpecificationError, match=r"'rand' in a level equation is not a column of the data\. Did you mean 'random'"):
        ml.fit_levels("math ~ 1 + year", {"Intercept": "black + rand"}, level3=L3, group=("childid", "schoolid"), data=eg)
    with pytest.raises(ml.SpecificationError, match=r"'blak' in a level equation is not a column of the data\. Did you mean 'black'"):
        ml.fit_levels("math ~ 1 + year", {"Intercept": "blak + random"}, level3=L3, group=("childid", "schoolid"), data=eg)
