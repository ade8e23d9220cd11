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


# ----- several grouping factors: simulated data for the engine's tests ---------------------------
def factor_codes(rng, J: int, N: int):
    """N rows' levels of a factor of J levels, every level with a row."""
    import numpy as np

    return np.concatenate([np.arange(J), rng.integers(0, J, N - J)])


def parent_levels(rng, J_inner: int, J_outer: int):
    """Each inner level's outer level (every outer level with an inner one): a nesting."""
    import numpy as np

    return np.concatenate([np.arange(J_outer), rng.integers(0, J_outer, J_inner - J_outer)])


def dense_Z(codes, z, J: int):
    """Z of one factor, N by J q: the q columns of each level side by side (lme4's layout)."""
    import numpy as np

    N, q = z.shape
    Z = np.zeros((N, J, q))
    Z[np.arange(N), codes, :] = z
    return Z.reshape(N, J * q)


def simulated_factors(seed: int, kind: str, qs: tuple[int, ...], N: int, sizes: dict, x_loc: float, x_scale: float):
    """Rows with three grouping factors, `kind` "nested" (0 in 1 in 2), "crossed", or "mixed" (0 in
    1, 2 crossed), of `sizes[kind]` levels, random effects (1, x)[:q] per factor, X = (1, x, w):
    (summaries, order, templates, Zs, codes, J, X, y) as `GroupSummaries.of_factors` makes them."""
    import numpy as np

    from multilevel.design.summaries import GroupSummaries
    from multilevel.engine.covariance import LambdaTemplate

    rng = np.random.default_rng(seed)
    J = sizes[kind]
    if kind == "nested":
        c0 = factor_codes(rng, J[0], N)
        c1 = parent_levels(rng, J[0], J[1])[c0]
        codes = [c0, c1, parent_levels(rng, J[1], J[2])[c1]]
    elif kind == "crossed":
        codes = [factor_codes(rng, j, N) for j in J]
    else:
        c0 = factor_codes(rng, J[0], N)
        codes = [c0, parent_levels(rng, J[0], J[1])[c0], factor_codes(rng, J[2], N)]
    x = rng.normal(x_loc, x_scale, N)
    X = np.column_stack([np.ones(N), x, rng.normal(size=N)])
    Zs = [np.column_stack([np.ones(N), x])[:, :q] for q in qs]
    y = X @ [1.0, 0.5, -0.3] + sum(rng.normal(size=j)[c] for j, c in zip(J, codes)) + rng.normal(size=N)
    names = ("g0", "g1", "g2")
    s, order = GroupSummaries.of_factors(tuple(Zs), X, y, tuple(codes), J, names)
    templates = tuple(LambdaTemplate.from_blocks((tuple(range(qs[f])),), ("Intercept", "x")[: qs[f]], names[f]) for f in order)
    return s, order, templates, Zs, codes, J, X, y
