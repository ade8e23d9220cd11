"""Residual files of models with several grouping factors: level 1 (rows, the input's index), and
one file per factor (HLM3's level-2 and level-3 files for nested factors)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml

DATA = Path(__file__).resolve().parents[2] / "refs" / "multi" / "data"


@pytest.fixture(scope="module")
def growth():
    d = pd.read_csv(DATA / "egsingle.csv", dtype={"schoolid": str, "childid": str})
    d.index = d.index * 10 + 7  # an index of its own: row outputs carry it
    return d, ml.fit("math ~ year + (year | schoolid) + (year | schoolid:childid)", d)


def test_level1_fitted_values_add_every_factors_modes(growth):
    d, fit = growth
    r1 = fit.residuals(1)
    assert r1.index.equals(d.index)
    b_s, b_c = fit.ranef["schoolid"], fit.ranef["schoolid:childid"]
    s = b_s.loc[d["schoolid"]].to_numpy()
    c = b_c.loc[(d["schoolid"] + ":" + d["childid"]).to_numpy()].to_numpy()
    fixed = fit.beta["Intercept"] + fit.beta["year"] * d["year"].to_numpy()
    fitted = fixed + s[:, 0] + s[:, 1] * d["year"].to_numpy() + c[:, 0] + c[:, 1] * d["year"].to_numpy()
    np.testing.assert_allclose(r1["fitted"].to_numpy(), fitted, rtol=1e-12)
    np.testing.assert_allclose(r1["resid"].to_numpy(), d["math"].to_numpy() - fitted, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r1["fitted_fixed"].to_numpy(), fixed, rtol=1e-12)


def test_hlm_levels_of_nested_factors_are_the_factors_from_the_inside(growth):
    _, fit = growth
    r2, r3 = fit.residuals(2), fit.residuals(3)
    assert len(r2) == fit.groups["schoolid:childid"] and len(r3) == fit.groups["schoolid"]
    assert r2["n"].sum() == r3["n"].sum() == fit.n_obs
    # each child's school, and the modes and SDs of ranef_table
    assert (r2["schoolid:childid"].str.split(":").str[0] == r2["schoolid"]).all()
    t = fit.ranef_table().query("grpvar == 'schoolid'").set_index(["term", "grp"])
    np.testing.assert_allclose(r3["eb_year"].to_numpy(), t.loc["year"].loc[r3["schoolid"], "condval"].to_numpy())
    np.testing.assert_allclose(r3["condsd_year"].to_numpy(), t.loc["year"].loc[r3["schoolid"], "condsd"].to_numpy())
    with pytest.raises(ml.SpecificationError, match="level must be 1 to 3"):
        fit.residuals(4)


def test_crossed_factors_are_named(tmp_path):
    d = pd.read_csv(DATA / "penicillin.csv", dtype={"plate": str, "sample": str})
    fit = ml.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", d)
    assert len(fit.residuals("sample")) == 6
    with pytest.raises(ml.SpecificationError, match="name the factor"):
        fit.residuals(2)
    with pytest.raises(ml.SpecificationError, match="is not a grouping factor"):
        fit.residuals("plates")
    out = tmp_path / "plates.csv"
    fit.save_residuals(out, "plate")
    assert len(pd.read_csv(out)) == 24
