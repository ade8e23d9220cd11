"""The Fit's public API: optimizer record, singular fits, evaluation at given values, display."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import MODELS, fitted, hsb, ref


def test_optimizer_record():
    f = fitted("M4", "REML")
    rec = f.optimizer
    assert rec.converged and rec.return_code == 0
    assert rec.n_evaluations == len(rec.history) > 5
    assert rec.history[-1][1] >= f.deviance - 1e-9  # the path ends at (or next to) the optimum
    assert min(d for _, d in rec.history) == pytest.approx(f.deviance, abs=1e-8)
    assert not f.singular and rec.boundary == ()


def test_singular_fit_is_detected_and_said():
    f = fitted("S4", "ML")
    assert ref("S4")["ML"]["fit_statistics"]["isSingular"] is True
    assert f.singular and f.optimizer.boundary == ("school.cses",)
    assert "singular" in f.report() and "singular" in f.summary()
    assert not fitted("S4", "REML").singular  # lme4 agrees: isSingular FALSE


def test_evaluation_at_given_variance_components():
    f = fitted("M2", "REML")
    g = f.at(f.tau.to_numpy(), f.sigma2)
    assert g.evaluated_at_given and g.optimizer is None
    assert g.deviance == pytest.approx(f.deviance, rel=1e-12)
    h = ml.fit(MODELS["M2"], hsb(), tau=[[2.0]], sigma2=40.0)
    assert h.tau.iloc[0, 0] == pytest.approx(2.0) and h.sigma2 == 40.0
    assert h.deviance > f.deviance
    assert "Evaluated at given variance components" in h.report()
    with pytest.raises(ml.SpecificationError, match="2 x 2"):
        ml.fit(MODELS["M3"], hsb(), tau=[[1.0]], sigma2=30.0)


def test_public_attributes():
    f = fitted("M4", "REML")
    assert list(f.fixed.columns) == ["estimate", "se", "df", "t", "p"]
    assert list(f.robust.columns) == ["estimate", "se", "df", "t", "p"]
    assert f.n_obs == 7185 and f.n_groups == 160
    assert isinstance(f.tau, pd.DataFrame) and list(f.tau.index) == ["Intercept", "cses"]
    assert list(f.variance_components.columns) == ["sd", "variance", "df", "chisq", "p"]
    assert f.ranef.shape == (160, 2) and f.ranef.index.name == "school"
    assert f.loglik == pytest.approx(-f.deviance / 2)
    assert f.hlm_n_params == 4 and fitted("M4", "ML").hlm_n_params == 10
    assert "<table" in f._repr_html_()
    assert "Fixed effects (satterthwaite df):" in str(f) and "REML criterion at convergence: 46503.6641" in str(f)


def test_data_report_counts_rows_and_units():
    data = hsb().copy()
    data.loc[:9, "mathach"] = np.nan
    data.loc[data["school"] == "1288", "cses"] = np.nan  # a whole school
    f = ml.fit(MODELS["M3"], data)
    dr = f.data_report
    assert dr.n_rows_in == 7185
    n1288 = int((hsb()["school"] == "1288").sum())
    assert dr.n_rows_used == 7185 - 10 - n1288
    assert dict(dr.dropped_by_variable) == {"mathach": 10, "cses": n1288}
    assert dr.units_dropped == ("1288",) and dr.n_units_used == 159 == f.n_groups
    assert "dropped listwise" in f.report() and "1288" in f.report()
