"""The blocked profiled deviance of several grouping factors (`engine.blocked`) against the dense
computation from its definition (n x n V, numpy only), for nested, crossed and mixed structures,
random slopes at every factor, by REML and ML: the value, the analytic gradient (against central
differences of the dense value), the solution and the conditional variances."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import block_diag

from conftest import dense_Z, factor_codes, parent_levels, simulated_factors
from multilevel.design.summaries import GroupSummaries
from multilevel.engine.blocked import BlockedObjective, Structure, optimize_blocked
from multilevel.engine.covariance import LambdaTemplate

SIZES = {"nested": (40, 12, 4), "crossed": (30, 9, 5), "mixed": (40, 10, 6)}


def _case(seed: int, kind: str, qs: tuple[int, ...], N: int = 300):
    """`conftest.simulated_factors` with this module's sizes."""
    return simulated_factors(seed, kind, qs, N, SIZES, 2.0, 1.5)









def _dense(theta, case, reml: bool):
    """(deviance, beta, u, M^-1) from the definitions: V = I + Z Lambda Lambda' Z'."""
    _s, order, templates, Zs, codes, J, X, y = case
    lam_blocks, Z_blocks, at = [], [], 0
    for t, f in enumerate(order):
        tp = templates[t]
        lam_blocks.append(np.kron(np.eye(J[f]), tp.lam(theta[at : at + tp.size])))
        Z_blocks.append(dense_Z(codes[f], Zs[f], J[f]))
        at += tp.size
    Lam, Z = block_diag(*lam_blocks), np.hstack(Z_blocks)
    n, p = X.shape
    Vi = np.linalg.inv(np.eye(n) + Z @ Lam @ Lam.T @ Z.T)
    XVX = X.T @ Vi @ X
    beta = np.linalg.solve(XVX, X.T @ Vi @ y)
    M = Lam.T @ Z.T @ Z @ Lam + np.eye(Lam.shape[0])
    u = np.linalg.solve(M, Lam.T @ Z.T @ (y - X @ beta))
    pwrss = np.sum((y - X @ beta - Z @ Lam @ u) ** 2) + u @ u
    nu = n - p if reml else n
    d = np.linalg.slogdet(M)[1] + nu * (1 + np.log(2 * np.pi * pwrss / nu)) + (np.linalg.slogdet(XVX)[1] if reml else 0.0)
    return d, beta, u, np.linalg.inv(M), np.linalg.inv(XVX)


def _theta(templates, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    diag = np.concatenate([t.is_diagonal for t in templates])
    return np.where(diag, 0.5 + rng.random(diag.size), 0.3 * rng.normal(size=diag.size))


STRUCTURES = [("nested", 3), ("crossed", 1), ("mixed", 2)]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("qs", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 2, 2)])
@pytest.mark.parametrize("kind,chain", STRUCTURES)
def test_the_blocked_deviance_and_gradient_equal_the_dense_computation(kind, chain, qs, reml):
    case = _case(1, kind, qs)
    s, _order, templates = case[:3]
    obj = BlockedObjective(s, templates, reml)
    assert obj.st.m == chain  # the nesting found from the cross blocks
    theta = _theta(templates, 5)
    d, g = obj.value_and_grad(theta)
    assert d == pytest.approx(_dense(theta, case, reml)[0], rel=1e-12)
    h = 1e-6
    numeric = np.array([(_dense(theta + h * e, case, reml)[0] - _dense(theta - h * e, case, reml)[0]) / (2 * h)
                        for e in np.eye(theta.size)])
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("kind,chain", STRUCTURES)
def test_the_solution_and_the_selected_inverse_equal_the_dense_ones(kind, chain):
    case = _case(2, kind, (2, 1, 2))
    s, order, templates, _Zs, _codes, _J = case[:6]
    obj = BlockedObjective(s, templates, True)
    theta = _theta(templates, 7)
    f = obj.factor(theta)
    beta, u_rest, u_chain, _, _, P = obj.solution(f)
    _d, beta_d, u_d, Minv, P_d = _dense(theta, case, True)
    np.testing.assert_allclose(beta, beta_d, rtol=1e-9)
    np.testing.assert_allclose(P, P_d, rtol=1e-9)
    S_rest, S_diag, _, _ = obj.selected_inverse(f)
    at = 0
    st = obj.st
    for t, _fac in enumerate(order):
        q, Jf = st.q[t], st.J[t]
        seg = slice(at, at + Jf * q)
        u = u_chain[t] if t < st.m else u_rest[st.offsets[st.rest.index(t)] :][: Jf * q].reshape(Jf, q)
        np.testing.assert_allclose(u.ravel(), u_d[seg], rtol=1e-8, atol=1e-10)
        blocks = np.stack([Minv[seg, seg][j * q : (j + 1) * q, j * q : (j + 1) * q] for j in range(Jf)])
        mine = S_diag[t] if t < st.m else np.stack([S_rest[st.offsets[st.rest.index(t)] + j * q :][:q, st.offsets[st.rest.index(t)] + j * q :][:, :q] for j in range(Jf)])
        np.testing.assert_allclose(mine, blocks, rtol=1e-9, atol=1e-12)
        at += Jf * q


def test_the_chain_is_the_longest_run_of_nested_factors():
    s = _case(3, "mixed", (1, 1, 1))[0]
    st = Structure.of(s)
    assert (st.m, st.rest) == (2, (2,))
    # every entry of the inner factor maps to an entry of its ancestor with the same level of the rest
    ent, anc = st.entries[0], st.entries[1]
    pos = st.to_ancestor[0][0]
    assert np.array_equal(anc.rest[pos], ent.rest)
    assert np.array_equal(anc.level[pos], st.links[0][0].level[ent.level])


@pytest.mark.parametrize("kind", ["nested", "crossed", "mixed"])
def test_the_optimum_is_checked_and_is_the_dense_minimum(kind):
    case = _case(4, kind, (2, 1, 1), N=400)
    s, _order, templates = case[:3]
    theta, record, obj = optimize_blocked(s, templates, True)
    assert record.converged and record.checked
    d = _dense(theta, case, True)[0]
    # no point nearby is lower (the dense deviance, each parameter moved both ways)
    for e in np.eye(theta.size):
        for h in (1e-3, -1e-3):
            moved = np.maximum(theta + h * e, obj.lower)
            assert _dense(moved, case, True)[0] >= d - 1e-9


def _four_levels(seed: int, qs: tuple[int, ...], crossed: bool):
    """Rows in four nested factors (0 in 1 in 2 in 3), and optionally a fifth crossed with them."""
    rng = np.random.default_rng(seed)
    N, J = 400, (60, 20, 8, 3, 2)  # the crossed factor has the fewest levels: the rest
    c0 = factor_codes(rng, J[0], N)
    c1 = parent_levels(rng, J[0], J[1])[c0]
    c2 = parent_levels(rng, J[1], J[2])[c1]
    codes = [c0, c1, c2, parent_levels(rng, J[2], J[3])[c2], factor_codes(rng, J[4], N)]
    F = 5 if crossed else 4
    x = rng.normal(2.0, 1.5, N)
    X = np.column_stack([np.ones(N), x])
    y = X @ [1.0, 0.5] + sum(rng.normal(size=j)[c] for j, c in zip(J[:F], codes)) + rng.normal(size=N)
    Zs = tuple(np.column_stack([np.ones(N), x])[:, :q] for q in qs[:F])
    names = tuple(f"g{f}" for f in range(F))
    s, order = GroupSummaries.of_factors(Zs, X, y, tuple(codes[:F]), J[:F], names)
    templates = tuple(LambdaTemplate.from_blocks((tuple(range(qs[f])),), ("Intercept", "x")[: qs[f]], names[f]) for f in order)
    return s, order, templates, Zs, codes[:F], J[:F], X, y


def _everything(obj: BlockedObjective, theta: np.ndarray) -> np.ndarray:
    """The value, gradient, solution and selected inverse, as one vector."""
    v, g = obj.value_and_grad(theta)
    f = obj.factor(theta)
    parts = [np.array([v]), g]

    def add(x):
        if isinstance(x, (list, tuple)):
            for y in x:
                add(y)
        else:
            parts.append(np.ravel(x))

    add(obj.solution(f))
    add(obj.selected_inverse(f))
    return np.concatenate(parts)


@pytest.mark.parametrize("qs,crossed", [((1, 1, 1, 1), False), ((2, 1, 2, 1), False), ((2, 2, 2, 2), True), ((1, 2, 1, 2, 2), True)])
def test_the_compiled_chain_loops_equal_their_numpy_versions_and_the_dense_value(qs, crossed, monkeypatch):
    """Four nested levels (links to three ancestors), mixed q (padded flat layout) and a crossed
    factor (entries): the compiled loops of `numerics.blocked` and their numpy versions give the
    same numbers, and the value is the dense one."""
    case = _four_levels(8, qs + (1,) * (5 - len(qs)), crossed)
    s, _order, templates = case[:3]
    theta = _theta(templates, 3)
    out = {}
    for mode in ("numpy", "compiled"):
        monkeypatch.setenv("MULTILEVEL_LOOPS", mode)
        obj = BlockedObjective(s, templates, True)
        assert obj.st.m == 4
        out[mode] = _everything(obj, theta)
    np.testing.assert_allclose(out["compiled"], out["numpy"], rtol=1e-10, atol=1e-12 * np.abs(out["numpy"]).max())
    assert out["compiled"][0] == pytest.approx(_dense(theta, case, True)[0], rel=1e-12)
