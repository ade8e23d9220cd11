"""Issue 11, item 9c: results print as readable tables (in print(), in a REPL and in Jupyter), not
as dumps of their fields."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import fitted

FIELD_DUMP = ("L=array", "HypothesisTest(", "PooledTest(", "DataReport(", "OptimizerRecord(", "EffectSizes(",
              "Bootstrap(", "history=((")


def _readable(obj) -> str:
    text = repr(obj)
    assert text == str(obj)
    for dump in FIELD_DUMP:
        assert dump not in text, dump
    return text


def test_a_wald_test_prints_its_rows_and_statistics():
    fit = fitted("M4", "REML")
    t = fit.test("sector = 0, sector:cses = 0")
    text = _readable(t)
    assert "sector = 0" in text and "sector:cses = 0" in text
    assert f"chi-square = {t.chisq:.4f} on 2 df" in text
    assert f"F = {t.F:.4f} on 2 and {t.den_df:.4g} df" in text
    assert "<table" in t._repr_html_()


def test_the_data_report_prints_as_its_report():
    fit = fitted("M2", "REML")
    text = _readable(fit.data_report)
    assert f"Level-1 rows: {fit.n_obs} used of {fit.n_obs}" in text
    assert "Level-2 units" in fit.data_report._repr_html_()


def test_the_optimizer_record_prints_as_lines():
    fit = fitted("M4", "REML")
    rec = fit.optimizer
    text = _readable(rec)
    assert f"evaluations of the deviance: {rec.n_evaluations}" in text
    assert ("converged: yes" if rec.converged else "converged: NO") in text
    # every field is shown (the history as a summary), also fields added after this test was written
    assert rec.message in text and rec.method in text and f"{rec.gradient_norm:.3g}" in text
    known = {"method", "n_evaluations", "n_iterations", "converged", "return_code", "message", "history",
             "gradient_norm", "boundary"}
    for f in dataclasses.fields(rec):
        if f.name not in known:
            assert f.name.replace("_", " ") in text, f.name


@pytest.mark.parametrize("what", ["effect_sizes", "bootstrap"])
def test_effect_sizes_and_the_bootstrap_print_as_tables(what):
    fit = fitted("M2", "REML")
    obj = fit.effect_sizes() if what == "effect_sizes" else fit.bootstrap(5, seed=1, progress=False)
    text = _readable(obj)
    assert "Intercept" in text
    assert "<table" in obj._repr_html_()
