"""Issue 14: HCM2's report of a crossed fit (`fit.report()`): every section, in both forms, with the
numbers of `HCM2Statistics` as printed; the same for the level equations and the lme4 formula."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.diagnostics.hcm2_statistics import HCM2Statistics

ROOT = Path(__file__).resolve().parents[2]
L1 = "y ~ 1 + ses"
L2 = {"Intercept": "dep + sfree + b + c", "ses": "dep + sfree + b"}


@pytest.fixture(scope="module")
def fitted():
    d = pd.read_csv(ROOT / "refs/hcm2/data/hcm2_sim.csv")
    fit = ml.fit_levels(L1, L2, row="nbhd", column="school", data=d, method="ML")
    return fit, HCM2Statistics(fit.estimates), fit.report()


def test_every_section(fitted):
    _fit, _st, text = fitted
    for section in (
        "Specifications for this HCM2 run", "Number of rows                 = 40   (nbhd)",
        "Number of columns              = 25   (school)", "Number of non-empty cells      = 433   (of 1000)",
        "Method of estimation: full maximum likelihood",
        "Level-1 Model (within cells)", "    y = P0 + P1*(ses) + E",
        "Level-2 Model (rows: nbhd, j; columns: school, k)",
        "    P0 = theta0 + gamma01*(dep) + beta01*(sfree) + b00j + c00k",
        "    P1 = theta1 + gamma11*(dep) + beta11*(sfree) + b10j",
        "Mixed Model",
        "    y = theta0 + gamma01*dep + beta01*sfree + theta1*ses + gamma11*dep*ses + beta11*sfree*ses + b00j + b10j*ses + c00k + E",
        "tau_b (rows, nbhd)", "tau_b (as correlations)", "tau_c (columns, school)", "tau_c (as correlations)",
        "Final estimation of fixed effects (model-based standard errors):",
        "Final estimation of row and column level variance components:",
        "Statistics for current covariance components model",
    ):
        assert section in text, section


def test_numbers_as_printed(fitted):
    _fit, st, text = fitted
    for e in st.structure.effects:
        row = st.fixed_table.iloc[e.column]
        line = next(ln for ln in text.splitlines() if ln.rstrip().split(",")[-1].split()[0:1] == [e.label] and "." in ln)
        nums = line.split(e.label)[1].split()
        assert [float(x) for x in nums] == pytest.approx(
            [round(row["estimate"], 6), round(row["se"], 6), round(row["t"], 3), row["df"], round(row["p"], 3)], abs=1e-12)
    tb, tc = st.tau_b.to_numpy(), st.tau_c.to_numpy()
    comp = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"\((?:row|column)\), (\w+)\s+(\S+)\s+(\S+)", text)}
    assert comp["b00j"] == (round(np.sqrt(tb[0, 0]), 5), round(tb[0, 0], 5))
    assert comp["b10j"] == (round(np.sqrt(tb[1, 1]), 5), round(tb[1, 1], 5))
    assert comp["c00k"] == (round(np.sqrt(tc[0, 0]), 5), round(tc[0, 0], 5))
    assert f"sigma^2 = {st.sigma2:>12.5f}" in text
    assert f"Deviance                       = {st.deviance:.6f}" in text
    assert f"Number of estimated parameters = {st.n_params}" in text
    assert f"{st.tau_b_correlations.to_numpy()[0, 1]:>8.3f}" in text


def test_reml_and_formula_fit(fitted):
    fit, _st, _text = fitted
    reml = fit.refit("REML").report()
    assert "Method of estimation: restricted maximum likelihood" in reml
    assert "The deviance is the REML criterion" in reml


def test_penicillin_report_and_nested_still_hlm3():
    import json

    ref = json.loads((ROOT / "refs/multi/penicillin.json").read_text())
    d = pd.read_csv(ROOT / "refs/multi" / ref["data_file"])
    text = ml.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", d).report()
    assert "    diameter = theta0 + b00j + c00k + E" in text
    assert "Number of non-empty cells      = 144   (of 144)" in text
    eg = pd.DataFrame({"s": np.repeat(np.arange(6), 8), "c": np.tile(np.repeat([0, 1], 4), 6)})
    eg["c"] = eg["s"] * 10 + eg["c"]
    eg["y"] = np.random.default_rng(1).normal(size=len(eg)) + eg["s"] * 0.3
    assert "Specifications for this HLM3 run" in ml.fit("y ~ 1 + (1 | s) + (1 | c)", eg, method="ML").report()
