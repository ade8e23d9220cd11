"""Issue 14: HLM3's statistics (docs/hlm-statistics.md section 14) against independent dense
computations per unit, the EG model written as HLM3 equations against lme4 (refs/multi/eg_hlm.json),
and HLM3's report: every section, its numbers, and the refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import block_diag

import multilevel as ml
from multilevel.diagnostics.hlm3_statistics import HLM3Statistics

ROOT = Path(__file__).resolve().parents[2]


def pupils(seed: int = 3) -> pd.DataFrame:
    """Rows in rooms in schools: level-1 x and z, level-2 w2, level-3 w3; uneven sizes, one room
    with one row (insufficient data for (1, x)) and one with x constant."""
    rng = np.random.default_rng(seed)
    rows = []
    room_id = 0
    for s in range(9):
        w3 = rng.normal()
        u = rng.normal(0, [0.8, 0.3])
        for _r in range(int(rng.integers(2, 6))):
            room_id += 1
            w2 = rng.normal()
            r = rng.normal(0, [1.0, 0.4])
            n = int(rng.integers(2, 7))
            for _i in range(n):
                x, z = rng.normal(), rng.normal()
                y = 1 + 0.5 * w3 + 0.3 * w2 + u[0] + r[0] + (0.7 + u[1] + r[1]) * x + 0.2 * z + rng.normal(0, 0.7)
                rows.append((s, room_id, x, z, w2, w3, y))
    df = pd.DataFrame(rows, columns=["school", "room", "x", "z", "w2", "w3", "y"])
    first = df.index[df["room"] == 1]
    df = df.drop(first[1:])  # room 1: one row
    df.loc[df["room"] == 2, "x"] = 0.5  # room 2: x constant
    return df.reset_index(drop=True)


L1 = "y ~ 1 + x + z"
L2 = {"Intercept": "w2 + random", "x": "random"}
L3 = {"Intercept": {"Intercept": "w3 + random"}, "x": {"Intercept": "random"}}


@pytest.fixture(scope="module")
def small():
    df = pupils()
    fit = ml.fit_levels(L1, L2, level3=L3, group=("room", "school"), data=df, method="ML")
    return df, fit, HLM3Statistics(fit.estimates)


def dense_units(df: pd.DataFrame, fit, st: HLM3Statistics):
    """Per school: rows, Z2 blocks, Z3, X, y, W_k and V_k as dense matrices."""
    d = fit.design
    X, y = d.X, d.y
    T2, T3, s2 = st.tau_pi.to_numpy(), st.tau_beta.to_numpy(), fit.sigma2
    out = []
    for _s, rows in df.groupby("school").indices.items():
        rooms = df["room"].to_numpy()[rows]
        xs = df["x"].to_numpy()[rows]
        blocks = [np.column_stack([np.ones((rooms == r).sum()), xs[rooms == r]]) for r in dict.fromkeys(rooms)]
        Z2 = block_diag(*blocks)
        Z3 = np.column_stack([np.ones(len(rows)), xs])
        W = s2 * np.eye(len(rows)) + Z2 @ np.kron(np.eye(len(blocks)), T2) @ Z2.T
        V = W + Z3 @ T3 @ Z3.T
        out.append((rows, rooms, Z3, X[rows], y[rows], W, V))
    return out


def test_structure_read_from_the_data(small):
    _df, _fit, st = small
    s = st.structure
    assert s.coefficients == ("Intercept", "x", "z")
    assert s.predictors[0] == ("Intercept", "w2")
    assert s.level_of == {"w3": 3, "w2": 2, "x": 1, "z": 1}
    assert [g.label for g in s.gammas] == ["G000", "G001", "G010", "G100", "G200"]
    assert s.random2 == (0, 1) and s.random3 == ((0, 0), (1, 0))


def test_level2_reliability_and_chi_square_against_dense_per_unit(small):
    df, fit, st = small
    gamma = fit.beta
    s2 = fit.sigma2
    tau = np.diag(st.tau_pi.to_numpy())
    rel, pis, vs, units = [], [], [], []
    for _room, g in df.groupby("room"):
        A = np.column_stack([np.ones(len(g)), g["x"]])
        if np.linalg.matrix_rank(A) < 2:
            continue
        ytil = g["y"].to_numpy() - gamma["z"] * g["z"].to_numpy()  # z: the one coefficient not random at level 2
        inv = np.linalg.inv(A.T @ A)
        pis.append(inv @ A.T @ ytil)
        vs.append(s2 * np.diag(inv))
        units.append((g["school"].iloc[0], g["w2"].iloc[0]))
        rel.append(tau / (tau + vs[-1]))
    assert st.n_level2_sufficient == len(pis) == df["room"].nunique() - 2
    np.testing.assert_allclose(st.reliability2.to_numpy(), np.mean(rel, axis=0), rtol=1e-10)
    pis, vs = np.array(pis), np.array(vs)
    schools = np.array([u[0] for u in units])
    w2 = np.array([u[1] for u in units])
    for a, design in enumerate(([1, "w2"], [1])):  # P0's level-2 predictors: 1, w2; P1's: 1
        chi, df_ = 0.0, 0
        for s in np.unique(schools):
            m = schools == s
            D = np.column_stack([np.ones(m.sum()) if c == 1 else w2[m] for c in design])
            Wt = np.diag(1 / vs[m, a])
            b = np.linalg.pinv(D.T @ Wt @ D) @ D.T @ Wt @ pis[m, a]
            chi += float(((pis[m, a] - D @ b) ** 2 / vs[m, a]).sum())
            df_ += int(m.sum()) - np.linalg.matrix_rank(D)
        assert st.chi_square2["chisq"].iloc[a] == pytest.approx(chi, rel=1e-9)
        assert st.chi_square2["df"].iloc[a] == df_


def test_level3_reliability_chi_square_and_robust_against_dense(small):
    df, fit, st = small
    gamma = fit.beta.to_numpy()
    names = list(fit.beta.index)
    tau = np.diag(st.tau_beta.to_numpy())
    # columns not under a random level-3 coefficient (B00: Intercept, w3; B10: x): w2, z
    A = [names.index("w2"), names.index("z")]
    bh, vs, fitted, M, meat = [], [], [], 0.0, 0.0
    for rows, _rooms, Z3, X, y, W, V in dense_units(df, fit, st):
        Wi = np.linalg.inv(W)
        C = Z3.T @ Wi @ Z3
        Ci = np.linalg.inv(C)
        bh.append(Ci @ Z3.T @ Wi @ (y - X[:, A] @ gamma[A]))
        vs.append(np.diag(Ci))
        w3 = df["w3"].to_numpy()[rows][0]
        fitted.append([gamma[names.index("Intercept")] + gamma[names.index("w3")] * w3, gamma[names.index("x")]])
        Vi = np.linalg.inv(V)
        e = y - X @ gamma
        M = M + X.T @ Vi @ X
        s = X.T @ Vi @ e
        meat = meat + np.outer(s, s)
    bh, vs, fitted = np.array(bh), np.array(vs), np.array(fitted)
    np.testing.assert_allclose(st.reliability3.to_numpy(), (tau / (tau + vs)).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(st.chi_square3["chisq"].to_numpy(), ((bh - fitted) ** 2 / vs).sum(axis=0), rtol=1e-8)
    np.testing.assert_array_equal(st.chi_square3["df"].to_numpy(), [9 - 2, 9 - 1])
    Mi = np.linalg.inv(M)
    np.testing.assert_allclose(Mi, fit.vcov.to_numpy(), rtol=1e-7)  # model-based = (X'V^-1X)^-1
    np.testing.assert_allclose(st.vcov_robust.to_numpy(), Mi @ meat @ Mi, rtol=1e-7, atol=1e-14)


def test_approximate_df_and_parameter_count(small):
    df, fit, st = small
    J, K = df["room"].nunique(), df["school"].nunique()
    # G000, G001 (B00 random at 3: 2 gammas); G010 (w2 in P0, B01 fixed, P0 random at 2: J - 1); G100 (B10 random
    # at 3: 1 gamma); G200 (z: fixed at both levels: N - F)
    assert st.df.to_dict() == {"Intercept": K - 2, "w3": K - 2, "w2": J - 1, "x": K - 1, "z": len(df) - 5}
    assert st.n_params == 5 + 3 + 3 + 1  # ML: F, tau_pi (3), tau_beta (3), sigma2
    reml = HLM3Statistics(fit.refit("REML").estimates)
    assert reml.n_params == 7


def test_eg_model_written_as_hlm3_equations_gives_lme4s_ml_numbers():
    ref = json.loads((ROOT / "refs/multi/eg_hlm.json").read_text())["ML"]
    data = pd.read_csv(ROOT / "refs/multi/data/egsingle.csv")
    fit = ml.fit_levels(
        "math ~ 1 + year", {"Intercept": "black + hispanic + random", "year": "black + hispanic + random"},
        level3={"Intercept": {"Intercept": "lowinc + random"}, "year": {"Intercept": "lowinc + random"}},
        group=("childid", "schoolid"), data=data, method="ML",
    )
    ours = {":".join(sorted(n.split(":"))): v for n, v in fit.beta.items()}
    for name, est in zip(ref["fixed_effects"]["names"], ref["fixed_effects"]["estimate"]):
        key = "Intercept" if name == "(Intercept)" else ":".join(sorted(name.split(":")))
        assert ours[key] == pytest.approx(est, rel=1e-5, abs=1e-8)
    assert fit.deviance == pytest.approx(ref["deviance"], rel=1e-9)
    assert np.sqrt(fit.sigma2) == pytest.approx(ref["sigma"], rel=1e-5)
    vc = pd.DataFrame(ref["varcorr"])
    sch = vc[(vc.grp == "schoolid") & vc.var2.isna()].vcov.to_numpy()
    chi = vc[(vc.grp == "childid") & vc.var2.isna()].vcov.to_numpy()
    np.testing.assert_allclose(np.diag(fit.tau["schoolid"]), sch, rtol=1e-4)
    np.testing.assert_allclose(np.diag(fit.tau["childid:schoolid"]), chi, rtol=1e-4)
    st = HLM3Statistics(fit.estimates)
    assert (st.n_level2, st.n_level3) == (1721, 60)
    assert st.df["lowinc"] == 58 and st.df["black"] == 1719
    text = fit.report()
    assert "Number of level-3 units        = 60" in text
    assert "B00 = G000 + G001*(lowinc) + U00" in text
    assert f"{ref['deviance']:.4f}" in text


def test_report_prints_every_hlm3_section(small):
    _df, fit, st = small
    text = fit.report()
    sections = [
        "Specifications for this HLM3 run", "Number of level-2 units", "Number of level-3 units",
        "The model specified for the fixed effects was:", "Level-1 Model", "Level-2 Model", "Level-3 Model",
        "Mixed Model", "sigma^2 =", "tau(pi)", "tau(pi) (as correlations)", "Random level-1 coefficient",
        "tau(beta)", "tau(beta) (as correlations)", "Random level-2 coefficient", "log-likelihood function",
        "Final estimation of fixed effects:", "(with robust standard errors, clustered at level 3)",
        "Final estimation of level-1 and level-2 variance components:", "Final estimation of level-3 variance components:",
        "Deviance", "Number of estimated parameters",
    ]
    at = [text.index(s) for s in sections]
    assert at == sorted(at)
    assert "y = P0 + P1*(x) + P2*(z) + E" in text
    assert "P0 = B00 + B01*(w2) + R0" in text and "P2 = B20\n" in text
    assert "B00 = G000 + G001*(w3) + U00" in text and "B10 = G100 + U10" in text
    assert "y = G000 + G001*w3 + G010*w2 + G100*x + G200*z + R0 + R1*x + U00 + U10*x + E" in text
    # numbers: the reliabilities, chi-squares, robust SE and deviance as the statistics give them
    assert f"{st.reliability2.iloc[0]:.3f}" in text and f"{st.reliability3.iloc[1]:.3f}" in text
    assert f"{st.chi_square2['chisq'].iloc[0]:.5f}" in text and f"{st.chi_square3['chisq'].iloc[1]:.5f}" in text
    assert f"{np.sqrt(st.vcov_robust.iloc[0, 0]):.6f}" in text
    assert f"Number of estimated parameters = {st.n_params}" in text
    assert f"based on only {st.n_level2_sufficient} of {st.n_level2} level-2 units" in text
    assert "HLM3 fits by full maximum likelihood only" not in text
    assert "HLM3 fits by full maximum likelihood only" in fit.refit("REML").report()


def test_report_of_a_formula_fit_reads_the_levels_from_the_data(small):
    df, fit, _st = small
    f = ml.fit("y ~ w3 + w2 + x + z + (1 + x | school) + (1 + x | school:room)", df, method="ML")
    assert f.report().split("Summary of the model specified")[1].split("Mixed Model")[0] == \
        fit.report().split("Summary of the model specified")[1].split("Mixed Model")[0]


def test_report_refusals(small):
    df, _fit, _st = small
    crossed = df.assign(rater=np.arange(len(df)) % 4)
    f = ml.fit("y ~ x + (1 | school) + (1 | rater)", crossed)
    with pytest.raises(ml.SpecificationError, match=r"HLM3's report is of two nested grouping factors.*crossed"):
        _ = HLM3Statistics(f.estimates).structure
    assert "Specifications for this HCM2 run" in f.report()  # crossed: HCM2's report (tests/reports/test_hcm2_report.py)
    # a level-3 variable's random slope over level-3 units is refused before (not identified: the builder)
    with pytest.raises(ml.DataError, match=r"'w3' is constant within every unit of 'school'"):
        ml.fit("y ~ x + w3 + (1 + w3 | school) + (1 | room:school)", df)


def test_random_level2_predictor_at_level3(small):
    df, _fit, _st = small
    f = ml.fit_levels("y ~ 1 + x", {"Intercept": "w2 + random"}, level3={"Intercept": {"Intercept": "random", "w2": "random"}},
                      group=("room", "school"), data=df, method="ML")
    text = f.report()
    assert "B01 = G010 + U01" in text and "INTRCPT1/w2, U01" in text
    st = HLM3Statistics(f.estimates)
    assert st.df["w2"] == df["school"].nunique() - 1
