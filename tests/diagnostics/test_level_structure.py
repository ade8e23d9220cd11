"""Issue 14: the level structure of nested models of any depth (`diagnostics.level_structure`) and the
HLM4 report: reliabilities at every level against HLM3's at levels 2 and 3 and against an independent
dense computation per unit at level 4; the report's sections in both forms and its refusals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import block_diag

import multilevel as ml
from multilevel.diagnostics.hlm3_statistics import HLM3Statistics
from multilevel.diagnostics.level_structure import LevelStatistics, LevelStructure


def four_levels(seed: int = 7) -> pd.DataFrame:
    """Rows in c in b in a (ids restart within their parent); uneven sizes, a level-4 w and a level-3 v."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(8):
        w, ua = rng.normal(), rng.normal(0, 1.0)
        for b in range(int(rng.integers(2, 5))):
            v, ub = rng.normal(), rng.normal(0, [0.7, 0.3])
            for c in range(int(rng.integers(1, 5))):
                uc = rng.normal(0, 0.5)
                for _ in range(int(rng.integers(1, 7))):
                    x = rng.normal()
                    y = 2 + 0.5 * x + 0.8 * w + 0.3 * v + ua + ub[0] + ub[1] * x + uc + rng.normal()
                    rows.append((f"a{a}", f"b{b}", f"c{c}", x, v, w, y))
    return pd.DataFrame(rows, columns=["a", "b", "c", "x", "v", "w", "y"])


L1 = "y ~ 1 + x"
L2 = {"Intercept": "random"}
L3 = {"Intercept": {"Intercept": "v + random"}, "x": {"Intercept": "random"}}
L4 = {"Intercept": {"Intercept": {"Intercept": "w + random", "v": ""}}}


@pytest.fixture(scope="module")
def fit4():
    return ml.fit_levels(L1, L2, level3=L3, level4=L4, group=("c", "b", "a"), data=four_levels(), method="ML")


def _dense_reliability(fit, st: LevelStatistics, level: int) -> np.ndarray:
    """Per unit u of `level`, C_u = Z_k' V_<k^-1 Z_k with V_<k built densely from the rows, then
    mean tau / (tau + diag(C^-1)) over the units with full-rank C."""
    d, est = fit.design, fit.estimates
    Z = d.Z
    s = st.structure
    gs = [d.groupings[est.factors[f].grouping] for f in s.factors]
    zc = [list(est.factors[f].z_columns) for f in s.factors]
    N = len(gs[0].codes)
    V = est.sigma2 * np.eye(N)
    for lv in range(2, level):
        g, cols, T = gs[lv - 2], zc[lv - 2], st.tau(lv).to_numpy()
        big = np.zeros((N, g.n_levels * len(cols)))
        for i, c in enumerate(cols):
            big[np.arange(N), g.codes * len(cols) + i] = Z[:, c]
        V += big @ block_diag(*[T] * g.n_levels) @ big.T
    g, cols, T = gs[level - 2], zc[level - 2], st.tau(level).to_numpy()
    vs = []
    for u in range(g.n_levels):
        r = g.codes == u
        Zu = Z[np.ix_(r, cols)]
        C = Zu.T @ np.linalg.solve(V[np.ix_(r, r)], Zu)
        if np.linalg.matrix_rank(C) == len(cols):
            vs.append(np.diag(np.linalg.inv(C)))
    t = np.diag(T)
    return (t / (t + np.array(vs))).mean(axis=0)


@pytest.mark.parametrize("level", [2, 3, 4])
def test_reliabilities_equal_a_dense_computation(fit4, level):
    st = LevelStatistics(fit4.estimates)
    np.testing.assert_allclose(st.reliability(level).to_numpy(), _dense_reliability(fit4, st, level), rtol=1e-9)


def test_three_levels_equal_hlm3s_reliabilities():
    df = four_levels()
    fit = ml.fit_levels("y ~ 1 + x", {"Intercept": "random", "x": "random"}, level3={"Intercept": {"Intercept": "w + random"}},
                        group=("c", "b"), data=df.assign(b=df["a"] + df["b"]), method="ML")
    st, h3 = LevelStatistics(fit.estimates), HLM3Statistics(fit.estimates)
    np.testing.assert_allclose(st.reliability(2).to_numpy(), h3.reliability2.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(st.reliability(3).to_numpy(), h3.reliability3.to_numpy(), rtol=1e-10)
    assert st.n_sufficient(2) == h3.n_level2_sufficient and st.n_sufficient(3) == h3.n_level3_sufficient


def test_structure_labels_and_levels(fit4):
    s = LevelStructure.of(fit4.estimates)
    assert s.names == ("c:(b:a)", "b:a", "a") and s.n_levels == 4
    assert [n.label for n in s.roots] == ["P0", "P1"]
    assert [(n.label, n.name, n.random) for n in s.nodes(3)] == [("G000", "Intercept", True), ("G001", "v", False),
                                                                  ("G100", "Intercept", False)]
    assert [(n.label, n.name) for n in s.nodes(4)] == [("D0000", "Intercept"), ("D0001", "w"), ("D0010", "Intercept"),
                                                       ("D1000", "Intercept")]
    assert s.level_of == {"x": 1, "v": 3, "w": 4}


def test_hlm4_report_both_forms_and_sections(fit4):
    text = fit4.report()
    for part in ("Specifications for this HLM4 run", "Number of level-4 units        = 8   (a)", "Level-1 Model", "Level-4 Model",
                 "Mixed Model", "tau (level 2)", "tau (level 3)", "tau (level 4)", "Random level-3 coefficient",
                 "Final estimation of fixed effects", "CR0 clustered at level 4", "Final estimation of variance components",
                 "Deviance                       =", "rule for them is not known to us"):
        assert part in text, part
    assert "    y = P0 + P1*(x) + E" in text
    assert "    B00 = G000 + G001*(v) + U00" in text and "    B10 = G100 + U10" in text
    assert "    G000 = D0000 + D0001*(w) + V000" in text
    assert "    y = D0000 + D0001*w + D0010*v + D1000*x + R0 + U00 + U10*x + V000 + E" in text
    assert f"{fit4.deviance:.6f}" in text
    # the numbers printed are the fit's
    st = LevelStatistics(fit4.estimates)
    assert f"{st.reliability(4).iloc[0]:.3f}" in text and f"{fit4.beta['w']:.6f}" in text


def test_crossed_three_factors_are_refused():
    df = four_levels()
    fit = ml.fit("y ~ x + (1 | a) + (1 | b) + (1 | c)", df, method="ML")
    with pytest.raises(ml.SpecificationError, match=r"not one chain of nested factors"):
        fit.report()
