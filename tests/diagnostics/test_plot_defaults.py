"""Issue 11, item 9a: fit.plot("eb") and fit.plot("model") work as the README writes them, without
arguments, or say which argument to add."""
from __future__ import annotations

import pytest

import multilevel as ml
from conftest import fitted, hsb
from multilevel.errors import SpecificationError

pytest.importorskip("matplotlib")


def test_eb_plot_defaults_to_the_first_level2_predictor():
    fit = fitted("M4", "REML")  # (sector + meanses) * cses
    ax = fit.plot("eb").axes[0]
    assert ax.get_xlabel() == "sector (level 2)"
    assert ax.get_ylabel() == "EB residual of Intercept"
    assert len(ax.collections[0].get_offsets()) == fit.n_groups


def test_model_graph_defaults_to_the_first_level1_predictor_with_quartile_lines():
    fit = fitted("M4", "REML")
    ax = fit.plot("model").axes[0]
    assert ax.get_xlabel() == "cses"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sector = 0", "sector = 1"]


def test_model_graph_takes_a_centred_term_by_its_name():
    fit = ml.fit("mathach ~ meanses * cwc(ses) + (1 | school)", hsb())
    a = fit.plot("model").axes[0]
    b = fit.plot("model", x="cwc(ses)", lines={"meanses": "quartiles"}).axes[0]
    assert a.get_xlabel() == b.get_xlabel() == "ses (centred on the unit mean)"
    assert (a.lines[0].get_ydata() == b.lines[0].get_ydata()).all()


@pytest.mark.parametrize("kind, hint", [("eb", "variable="), ("model", "x=")])
def test_without_such_predictors_the_error_names_the_argument(kind, hint):
    fit = fitted("M1", "REML")  # no predictors at all
    with pytest.raises(SpecificationError, match=hint):
        fit.plot(kind)
