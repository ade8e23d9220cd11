"""Issue 11, item 9d: the demo says in plain words where HLM 6's printout of model 4 differs and
why; every HLM report says whether the optimum was checked."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import hlm_printed

from multilevel.examples import hsb as demo
from multilevel.report.hlm import _optimum_check


def test_the_demo_quotes_hlm6_as_printed():
    printed = hlm_printed()["M4"]
    assert demo.HLM6_MODEL4 == {"tau": printed["tau"], "sigma2": printed["sigma2"], "deviance": printed["deviance"]}


def test_the_demo_says_hlm6_stopped_early(capsys):
    demo.main([])
    out = capsys.readouterr().out
    fit = demo.model4()
    assert "SPECIFICATIONS FOR THIS HLM2 RUN" in out  # the report, then the note
    assert "HLM 6 stopped iterating before the optimum" in out
    assert f"this fit has deviance {fit.hlm_deviance:.6f}" in out
    gap = demo.HLM6_MODEL4["deviance"] - fit.hlm_deviance
    assert gap > 0.01  # HLM's point is worse: the claim the note makes
    assert f"HLM's deviance is {gap:.3f} higher" in out


def _fake(checked, converged=True, **extra):
    return SimpleNamespace(optimizer=SimpleNamespace(gradient_norm=2.5e-7, converged=converged, **extra,
                                                     **({} if checked is None else {"checked": checked})))


@pytest.mark.parametrize("checked, says", [(True, "Optimum checked"), (False, "Optimum NOT verified"),
                                           (None, "no separate check of the Hessian recorded")])
def test_the_report_says_whether_the_optimum_was_checked(checked, says):
    text = "\n".join(_optimum_check(_fake(checked, converged=checked is not False)))
    assert says in text and "gradient norm 2.5e-07" in text
    assert ("HLM 6 stops iterating" in text) == (checked is not False)


def test_the_report_prints_the_details_the_optimizer_records():
    text = "\n".join(_optimum_check(_fake(True, hessian_min_eigenvalue=0.0123, check_message="gradient 1e-7")))
    assert "hessian min eigenvalue: 0.0123" in text and "check message: gradient 1e-7" in text
