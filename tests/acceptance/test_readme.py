"""Every ```python block of README.md runs as written (issue 11: "Every code block of the README
runs in the test suite, as written").

The blocks run in order in one namespace (later blocks use the fits of earlier ones), in a
temporary folder holding the files they name: `students.sav` and `schools.dta` (the HSB data, as
SPSS and Stata files), `imp1.csv.gz` ... `imp5.csv.gz` (refs/hsb/mi), and `big.parquet` and
`folder/` (simulated Parquet data). Nothing is skipped silently: a block that cannot run here would
be listed in CANNOT_RUN with the reason (none is today).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, hsb

README = ROOT / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.M | re.S)

#: blocks that cannot run in the test suite, by their first line, with the reason (none today)
CANNOT_RUN: dict[str, str] = {}


def _prepare(folder: Path) -> None:
    """The files the README's blocks name."""
    pyreadstat = pytest.importorskip("pyreadstat")
    d = hsb()
    rng = np.random.default_rng(11)
    students = d[["school", "minority", "female", "ses", "mathach"]].copy()
    students["w1"] = rng.uniform(0.5, 2.0, len(students)).round(3)  # a student's sampling weight
    school_w = pd.Series(rng.uniform(0.5, 2.0, d["school"].nunique()).round(3), index=d["school"].unique())
    students["w2"] = d["school"].map(school_w).to_numpy()  # the school's, constant within schools
    pyreadstat.write_sav(students, str(folder / "students.sav"))
    schools = d.groupby("school", sort=True)[["size", "sector", "pracad", "disclim", "himinty", "meanses"]].first()
    pyreadstat.write_dta(schools.reset_index(), str(folder / "schools.dta"))
    shutil.copy(ROOT / "refs" / "multi" / "data" / "egsingle.csv", folder / "egsingle.csv")
    shutil.copy(ROOT / "refs" / "multi" / "data" / "penicillin.csv", folder / "penicillin.csv")
    for f in sorted((ROOT / "refs" / "hsb" / "mi").glob("imp*.csv.gz")):
        shutil.copy(f, folder / f.name)
    # Parquet data: y on a level-1 x and a level-2 w, 300 units of 20 rows, a random slope of x
    pytest.importorskip("pyarrow")
    J, n = 300, 20
    g = np.repeat(np.arange(J), n)
    w = rng.normal(size=J)[g]
    x = rng.normal(size=J * n)
    u0, u1 = rng.normal(0, [1.0, 0.5], size=(J, 2)).T
    y = 1 + 0.5 * x + 0.3 * w + 0.2 * x * w + u0[g] + u1[g] * x + rng.normal(size=J * n)
    big = pd.DataFrame({"g": g, "x": x, "w": w, "y": y})
    big.to_parquet(folder / "big.parquet")
    (folder / "folder").mkdir()
    for k, part in enumerate(np.array_split(np.arange(J * n), 3)):
        big.iloc[part].to_parquet(folder / "folder" / f"part{k}.parquet")


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    _prepare(folder)
    here = os.getcwd()
    os.chdir(folder)
    try:
        yield {"__name__": "readme"}
    finally:
        os.chdir(here)


def test_the_readme_has_its_blocks():
    assert len(BLOCKS) == README.read_text().count("```python") >= 7  # every block found, whole
    firsts = [b.splitlines()[0] for b in BLOCKS]
    assert all(k in firsts for k in CANNOT_RUN), "CANNOT_RUN names a block the README no longer has"


@pytest.mark.parametrize("number", range(len(BLOCKS)), ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_block_runs_as_written(number, namespace, recwarn):
    block = BLOCKS[number]
    first = block.splitlines()[0]
    if first in CANNOT_RUN:
        pytest.skip(f"README block {number + 1} ({first!r}) cannot run here: {CANNOT_RUN[first]}")
    exec(compile(block, f"README.md, python block {number + 1}", "exec"), namespace)
