"""Shared fixtures: the HSB data, the references, and the fits the tests read."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

import multilevel as ml

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT / "refs" / "hsb"
DATA = Path(__file__).resolve().parent / "fixtures"

#: lme4 formula of each reference model (refs/README_shared.md; S4 is the seminar's section 4).
MODELS = {
    "M1": "mathach ~ 1 + (1 | school)",
    "M2": "mathach ~ meanses + (1 | school)",
    "M3": "mathach ~ cses + (cses | school)",
    "M4": "mathach ~ (sector + meanses) * cses + (cses | school)",
    "M4b": "mathach ~ (sector + meanses) * cses + (1 | school)",
    "S4": "mathach ~ (sector + meanses) * cses + (1 + female + cses | school)",
}


@cache
def ref(model: str) -> dict:
    return json.loads((REFS / f"{model}.json").read_text())


@cache
def hlm_printed() -> dict:
    return json.loads((DATA / "hlm_printed.json").read_text())


@cache
def hsb() -> pd.DataFrame:
    return ml.datasets.hsb()


@cache
def fitted(model: str, method: str) -> ml.Fit:
    return ml.fit(MODELS[model], hsb(), method=method)


@pytest.fixture(scope="session")
def hsb_data() -> pd.DataFrame:
    return hsb()
