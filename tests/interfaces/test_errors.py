"""Bad input gets a clear error that names what is wrong and what to do."""
from __future__ import annotations

import numpy as np
import pytest

import multilevel as ml
from conftest import hsb


def test_missing_column_lists_close_matches():
    with pytest.raises(ml.DataError, match=r"Column 'sectr'.*Did you mean 'sector'"):
        ml.fit("mathach ~ sectr + (1 | school)", hsb())
    with pytest.raises(ml.DataError, match=r"'schol'.*grouping factor.*Did you mean 'school'"):
        ml.fit("mathach ~ 1 + (1 | schol)", hsb())


def test_non_numeric_outcome():
    data = hsb().assign(grade=lambda d: np.where(d["mathach"] > 12, "high", "low"))
    with pytest.raises(ml.DataError, match=r"outcome 'grade' is not numeric"):
        ml.fit("grade ~ 1 + (1 | school)", data)


def test_missing_group_id():
    # rows without a unit id are dropped listwise and reported (as lme4's model frame drops them)
    data = hsb().copy()
    data.loc[[3, 7], "school"] = None
    fit = ml.fit("mathach ~ 1 + (1 | school)", data)
    assert fit.n_obs == len(data) - 2
    assert dict(fit.data_report.dropped_by_variable) == {"school": 2}
    assert "missing in 'school': 2 rows" in fit.report()
    ref = ml.fit("mathach ~ 1 + (1 | school)", data.drop(index=[3, 7]))
    np.testing.assert_array_equal(fit.beta.to_numpy(), ref.beta.to_numpy())


def test_fewer_than_two_groups():
    data = hsb()[hsb()["school"] == "1224"]
    with pytest.raises(ml.DataError, match=r"has 1 unit\(s\).*at least two"):
        ml.fit("mathach ~ 1 + (1 | school)", data)


def test_level2_predictor_varying_within_groups_names_them():
    data = hsb().copy()
    data.loc[data.index[:2], "sector"] = [0, 1]  # first school now mixes sectors
    with pytest.raises(ml.DataError, match=r"'sector' is given as a level-2 predictor but varies within 1 units \(1224\)"):
        ml.fit_levels("mathach ~ 1", {"Intercept": "sector + u"}, group="school", data=data)


def test_collinear_fixed_effects_named():
    data = hsb().assign(ses2=lambda d: 2 * d["ses"] + 1)
    with pytest.raises(ml.DataError, match=r"collinear: 'ses2' is a linear combination.*'ses'"):
        ml.fit("mathach ~ ses + ses2 + (1 | school)", data)


def test_formula_errors():
    with pytest.raises(ml.SpecificationError, match="no random-effect term"):
        ml.fit("mathach ~ ses", hsb())
    with pytest.raises(ml.SpecificationError, match="no '~'"):
        ml.fit("mathach ses", hsb())
    with pytest.raises(ml.SpecificationError, match="method must be"):
        ml.fit("mathach ~ 1 + (1 | school)", hsb(), method="OLS")
    with pytest.raises(ml.SpecificationError, match="not a level-1 coefficient"):
        ml.levels("mathach ~ 1 + ses", {"sess": "u"}, group="school")
    with pytest.raises(ml.SpecificationError, match="No level-1 coefficient is random"):
        ml.levels("mathach ~ 1 + ses", {"Intercept": "sector"}, group="school")


def test_what_several_grouping_factors_do_not_offer_yet_is_refused_by_name():
    fit = ml.fit("mathach ~ 1 + ses + (1 | school) + (1 | sector)", hsb())
    assert fit.converged and set(fit.groups) == {"school", "sector"}
    with pytest.raises(ml.SpecificationError, match=r"fit.reliability is not available yet for models with several grouping factors"):
        fit.reliability  # noqa: B018
    with pytest.raises(ml.SpecificationError, match=r"tau= and sigma2="):
        ml.fit("mathach ~ 1 + (1 | school) + (1 | sector)", hsb(), tau=[[1.0]], sigma2=1.0)
    with pytest.raises(AttributeError):
        fit.no_such_member  # noqa: B018
