"""Issue 11, item 9d: the demo says in plain words where HLM 6's printout of model 4 differs and
why; every HLM report says whether the optimum was checked."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

import multilevel as ml
from conftest import hlm_printed
from multilevel.examples import hsb as demo
from multilevel.reports.hlm import _optimum_check


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


def _with(record, **changes):
    return SimpleNamespace(optimizer=dataclasses.replace(record, **changes))


@pytest.mark.parametrize("changes, says", [
    ({}, "Optimum checked: max |gradient|"),
    ({"converged": False, "check": "a Newton step would still lower the deviance by 0.1"},
     "Optimum NOT verified: a Newton step would still lower the deviance by 0.1"),
    ({"checked": False, "check": "not checked"}, "Optimum not checked (gradient norm"),
])
def test_the_report_says_whether_the_optimum_was_checked(changes, says):
    record = ml.fit("mathach ~ meanses + (1 | school)", ml.datasets.hsb()).optimizer
    text = "\n".join(_optimum_check(_with(record, **changes)))
    assert says in text
    # the note on HLM 6's early stop only beside a checked optimum
    assert ("HLM 6 stops iterating" in text) == (record.checked and changes == {})
