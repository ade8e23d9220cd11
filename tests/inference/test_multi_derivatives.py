"""Satterthwaite and Kenward-Roger pieces of models with several grouping factors
(`inference.multi_derivatives`): against the dense n x n algebra on small simulated nested,
crossed and mixed data, and against lmerTest / pbkrtest on the reference cases of refs/multi."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import block_diag

from conftest import dense_Z, simulated_factors
from multilevel.design.summaries import GroupSummaries
from multilevel.engine.blocked import BlockedObjective, optimize_blocked
from multilevel.engine.covariance import LambdaTemplate
from multilevel.errors import SpecificationError
from multilevel.inference.kenward_roger import KenwardRoger
from multilevel.inference.multi_derivatives import MultiParts, multi_df, variance_derivatives_multi

ROOT = Path(__file__).resolve().parents[2]
REFS = ROOT / "refs" / "multi"

SIZES = {"nested": (30, 9, 3), "crossed": (20, 8, 5), "mixed": (30, 8, 6)}


def _case(seed: int, kind: str, qs: tuple[int, ...], N: int = 160):
    """`conftest.simulated_factors` with this module's sizes."""
    return simulated_factors(seed, kind, qs, N, SIZES, 1.0, 1.2)



# ----- small simulated data against the dense algebra ------------------------------------------






def _dense_parts(case, theta):
    """Z, Lambda (level-major, term order) and every E_i (the tau elements, templates' order)."""
    _s, order, templates, Zs, codes, J, _X, _y = case
    lam_blocks, Z_blocks, Es, at = [], [], [], 0
    sizes = [J[f] * templates[t].q for t, f in enumerate(order)]
    offs = np.cumsum([0] + sizes)
    for t, f in enumerate(order):
        tp = templates[t]
        lam_blocks.append(np.kron(np.eye(J[f]), tp.lam(theta[at : at + tp.size])))
        Z_blocks.append(dense_Z(codes[f], Zs[f], J[f]))
        for a, b in zip(tp.rows, tp.cols):
            e = np.zeros((tp.q, tp.q))
            e[a, b] = e[b, a] = 1.0
            E = np.zeros((offs[-1], offs[-1]))
            E[offs[t] : offs[t + 1], offs[t] : offs[t + 1]] = np.kron(np.eye(J[f]), e)
            Es.append(E)
        at += tp.size
    return np.hstack(Z_blocks), block_diag(*lam_blocks), Es


def _dense_deviance(case, theta, sigma2, reml):
    """-2 log L (REML or ML, beta profiled, sigma2 not), from V = sigma2 (I + Z Lambda Lambda' Z')."""
    X, y = case[6], case[7]
    Z, Lam, _ = _dense_parts(case, theta)
    n = len(y)
    V = sigma2 * (np.eye(n) + Z @ Lam @ Lam.T @ Z.T)
    W = np.linalg.inv(V)
    XWX = X.T @ W @ X
    beta = np.linalg.solve(XWX, X.T @ W @ y)
    e = y - X @ beta
    d = np.linalg.slogdet(V)[1] + e @ W @ e
    return d + np.linalg.slogdet(XWX)[1] if reml else d


def _theta(templates, seed):
    rng = np.random.default_rng(seed)
    diag = np.concatenate([t.is_diagonal for t in templates])
    return np.where(diag, 0.5 + rng.random(diag.size), 0.3 * rng.normal(size=diag.size))


STRUCTURES = ["nested", "crossed", "mixed"]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("qs", [(1, 1, 1), (2, 1, 2), (2, 2, 2)])
@pytest.mark.parametrize("kind", STRUCTURES)
def test_the_pieces_equal_the_dense_n_by_n_algebra(kind, qs, reml):
    case = _case(1, kind, qs)
    s, _order, templates, *_rest, X, y = case
    obj = BlockedObjective(s, templates, reml)
    theta = _theta(templates, 3)
    sigma2 = 1.7  # any point, not only the optimum: the pieces are identities in (theta, sigma2)
    vd = variance_derivatives_multi(obj, theta, sigma2)
    Z, Lam, Es = _dense_parts(case, theta)
    n = len(y)
    V = sigma2 * (np.eye(n) + Z @ Lam @ Lam.T @ Z.T)
    W = np.linalg.inv(V)
    G = [Z @ E @ Z.T for E in Es] + [np.eye(n)]
    k = len(G)
    assert vd.k == k
    Phi = np.linalg.inv(X.T @ W @ X)
    beta = Phi @ X.T @ W @ y
    e = y - X @ beta
    WG = [W @ g for g in G]
    P = np.array([-X.T @ wg @ W @ X for wg in WG])
    Q = np.array([[X.T @ wg @ wh @ W @ X for wh in WG] for wg in WG])
    T = np.array([[np.trace(wg @ wh) for wh in WG] for wg in WG])
    eGGe = np.array([[e @ wg @ wh @ W @ e for wh in WG] for wg in WG])
    eGX = np.array([e @ wg @ W @ X for wg in WG])
    np.testing.assert_allclose(vd.Phi, Phi, rtol=1e-9)
    np.testing.assert_allclose(vd.P, P, rtol=1e-9, atol=1e-10 * np.abs(P).max())
    np.testing.assert_allclose(vd.Q, Q, rtol=1e-9, atol=1e-10 * np.abs(Q).max())
    np.testing.assert_allclose(vd.T, T, rtol=1e-9, atol=1e-10 * np.abs(T).max())
    np.testing.assert_allclose(vd.eGGe, eGGe, rtol=1e-9, atol=1e-10 * np.abs(eGGe).max())
    np.testing.assert_allclose(vd.eGX, eGX, rtol=1e-9, atol=1e-10 * np.abs(eGX).max())
    np.testing.assert_allclose(vd.trWG, [np.trace(wg) for wg in WG], rtol=1e-9)
    np.testing.assert_allclose(vd.eGe, [e @ wg @ W @ e for wg in WG], rtol=1e-9)
    # psi: V = sum psi_i G_i
    np.testing.assert_allclose(sum(p * g for p, g in zip(vd.psi, G)), V, atol=1e-12 * np.abs(V).max())


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("kind", STRUCTURES)
def test_the_gradient_and_hessian_in_theta_equal_differences_of_the_dense_deviance(kind, reml):
    case = _case(2, kind, (2, 1, 2))
    s, _order, templates = case[:3]
    obj = BlockedObjective(s, templates, reml)
    theta = _theta(templates, 4)
    sigma2 = 1.3
    vd = variance_derivatives_multi(obj, theta, sigma2)
    phi = np.append(theta, sigma2)

    def dev(x):
        return _dense_deviance(case, x[:-1], x[-1], reml)

    k = phi.size
    h = 1e-4
    E = np.eye(k) * h
    grad = np.array([(dev(phi + E[a]) - dev(phi - E[a])) / (2 * h) for a in range(k)])
    J, _ = vd.theta_map
    np.testing.assert_allclose(J.T @ vd.gradient, grad, rtol=1e-6, atol=1e-6 * np.abs(grad).max())
    H = np.empty((k, k))
    for a in range(k):
        for b in range(a, k):
            H[a, b] = H[b, a] = (dev(phi + E[a] + E[b]) - dev(phi + E[a] - E[b]) - dev(phi - E[a] + E[b])
                                 + dev(phi - E[a] - E[b])) / (4 * h * h)
    np.testing.assert_allclose(vd.hessian_theta, H, rtol=1e-5, atol=1e-5 * np.abs(H).max())


def test_at_the_optimum_the_df_do_not_depend_on_the_scale_and_kr_runs():
    case = _case(6, "mixed", (2, 1, 1), N=300)
    s, _order, templates = case[:3]
    theta, record, obj = optimize_blocked(s, templates, True)
    assert record.converged
    vd = variance_derivatives_multi(obj, theta)
    assert np.abs(vd.gradient).max() < 1e-4 * np.abs(vd.hessian).max()
    from multilevel.inference.satterthwaite import df_1d

    for l in np.eye(3):
        g = np.einsum("a,kab,b->k", l, vd.dPhi(), l)
        tau_scale = 2 * (l @ vd.Phi @ l) ** 2 / (g @ vd.asymptotic_vcov @ g)
        assert df_1d(vd, l) == pytest.approx(tau_scale, rel=1e-6)
    tab = multi_df(MultiParts(obj, theta, ("a", "b", "c")), method="kenward-roger", vd=vd)
    assert list(tab.index) == ["a", "b", "c"]
    assert np.all(tab["se"] >= np.sqrt(np.diag(vd.Phi)))  # KR inflates the SEs here
    np.testing.assert_allclose(tab["se"] ** 2, np.diag(KenwardRoger(vd).vcov_adjusted), rtol=1e-12)


def test_too_many_random_effects_are_refused_with_the_reason():
    case = _case(6, "crossed", (1, 1, 1))
    obj = BlockedObjective(case[0], case[2], True)
    theta = _theta(case[2], 1)
    with pytest.raises(SpecificationError, match="not available yet: 33 random effects"):
        variance_derivatives_multi(obj, theta, max_q=10)


def test_kenward_roger_of_an_ml_fit_is_refused():
    case = _case(6, "nested", (1, 1, 1))
    obj = BlockedObjective(case[0], case[2], False)
    with pytest.raises(SpecificationError, match="REML"):
        multi_df(MultiParts(obj, _theta(case[2], 1)), method="kenward-roger")


# ----- the reference cases: lmerTest's Satterthwaite and pbkrtest's Kenward-Roger df ----------
#: per case: the fixed-effect terms (lme4's names; "a:b" a product, a text column's treatment
#: contrasts), and the grouping factors as lme4 names them, with their id columns and random effects
SPECS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]]] = {
    "eg_intercepts": (("year",), (("childid:schoolid", ("childid", "schoolid"), ("1",)), ("schoolid", ("schoolid",), ("1",)))),
    "eg_growth": (("year",), (("schoolid:childid", ("schoolid", "childid"), ("1", "year")), ("schoolid", ("schoolid",), ("1", "year")))),
    "eg_lowinc": (("year", "lowinc", "year:lowinc"), (("childid", ("childid",), ("1", "year")), ("schoolid", ("schoolid",), ("1", "year")))),
    "eg_hlm": (("year", "black", "hispanic", "lowinc", "year:black", "year:hispanic", "year:lowinc"),
               (("childid", ("childid",), ("1", "year")), ("schoolid", ("schoolid",), ("1", "year")))),
    "chem97": (("gcsecnt",), (("school:lea", ("school", "lea"), ("1",)), ("lea", ("lea",), ("1",)))),
    "sim4": (("x", "w"), (("a:b:c", ("a", "b", "c"), ("1",)), ("a:b", ("a", "b"), ("1", "x")), ("a", ("a",), ("1",)))),
    "machines_nested": (("Machine",), (("Worker:Machine", ("Worker", "Machine"), ("1",)), ("Worker", ("Worker",), ("1",)))),
    "machines_corr": (("Machine",), (("Worker", ("Worker",), ("1", "Machine")),)),
    "penicillin": ((), (("plate", ("plate",), ("1",)), ("sample", ("sample",), ("1",)))),
    "singular_nested": (("x",), (("b:a", ("b", "a"), ("1",)), ("a", ("a",), ("1",)))),
}


def _ref(case: str) -> dict:
    path = REFS / f"{case}.json"
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not in this tree (made by refs/make_refs_multi.R)")
    return json.loads(path.read_text())


def _columns(df: pd.DataFrame, term: str) -> tuple[list[str], np.ndarray]:
    """lme4's model-matrix columns of one term: 1, a number, a product a:b, or a text column's
    treatment contrasts (first level the reference)."""
    if term == "1":
        return ["Intercept"], np.ones((len(df), 1))
    if ":" in term:
        a, b = term.split(":")
        return [term], (df[a].to_numpy(float) * df[b].to_numpy(float))[:, None]
    col = df[term]
    if not pd.api.types.is_numeric_dtype(col):
        levels = sorted(col.unique())
        return [f"{term}{v}" for v in levels[1:]], np.column_stack([(col == v).to_numpy(float) for v in levels[1:]])
    return [term], col.to_numpy(float)[:, None]


def _build(case: str, ref: dict):
    x_terms, factors = SPECS[case]
    path = REFS / ref["data_file"]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        df = pd.read_csv(fh, dtype={c: str for c in ref["id_columns"]})
    names, cols = [], []
    for term in ("1",) + x_terms:
        nm, c = _columns(df, term)
        names += nm
        cols.append(c)
    X = np.hstack(cols)
    y = df[ref["formula"].split("~")[0].strip()].to_numpy(float)
    Zs, codes, J, z_names = [], [], [], []
    for _name, ids, z_terms in factors:
        key = df[list(ids)].astype(str).agg(":".join, axis=1)
        c, uniques = pd.factorize(key)
        codes.append(c)
        J.append(len(uniques))
        zn, zc = zip(*(_columns(df, t) for t in z_terms))
        Zs.append(np.hstack(zc))
        z_names.append(tuple(n for part in zn for n in part))
    fnames = tuple(f[0] for f in factors)
    s, order = GroupSummaries.of_factors(tuple(Zs), X, y, tuple(codes), tuple(J), fnames)
    templates = tuple(LambdaTemplate.from_blocks((tuple(range(len(z_names[f]))),), z_names[f], fnames[f]) for f in order)
    return s, templates, tuple(names)


_FITS: dict = {}


def _fitted(case: str, method: str):
    if (case, method) not in _FITS:
        ref = _ref(case)
        s, templates, names = _build(case, ref)
        theta, record, obj = optimize_blocked(s, templates, method == "REML")
        _FITS[case, method] = (ref[method], obj, theta, record, names, variance_derivatives_multi(obj, theta))
    return _FITS[case, method]


_LME4: dict = {}


def _at_lme4(case: str):
    """The REML reference and variance derivatives at lme4's own theta (the df formulas alone, without the
    differences between two optimisers' stopping points)."""
    if case not in _LME4:
        ref, obj, _theta, _record, names, _vd = _fitted(case, "REML")
        theta = np.array(ref["theta"]["values"])
        _LME4[case] = (ref, obj, theta, names, variance_derivatives_multi(obj, theta))
    return _LME4[case]


CASES = [(c, m) for c in SPECS for m in ("REML", "ML")]


@pytest.mark.parametrize("case,method", CASES)
def test_the_reference_fit_is_lme4s(case, method):
    """Our own fit of each case (summaries from the rows, `optimize_blocked`) is lme4's: the
    criterion to 1e-12 relative, the fixed effects to 1e-5 of their SEs (at most 2.4e-6 seen),
    theta to 1e-4 relative (the criterion is flat to 1e-10 along some directions: eg_hlm ML's
    school covariance differs by 7e-5 relative; most thetas by < 1e-6)."""
    ref, obj, theta, record, names, _vd = _fitted(case, method)
    assert record.converged
    assert [n.replace("Intercept", "(Intercept)") for n in names] == ref["fixed_effects"]["names"]
    assert [n.replace(".Intercept", ".(Intercept)") for t in obj.templates for n in t.names] == ref["theta"]["names"]
    assert obj.value(theta) == pytest.approx(ref["criterion"]["value"], rel=1e-12)
    f = obj.factor(theta)
    beta = obj.solution(f)[0]
    se = np.array(ref["fixed_effects"]["se"])
    assert np.abs((beta - ref["fixed_effects"]["estimate"]) / se).max() < 1e-5
    np.testing.assert_allclose(theta, ref["theta"]["values"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case,method", CASES)
def test_satterthwaite_df_of_our_fit_match_lmerTest(case, method):
    """df to 2e-5 relative (at most 8e-6 seen: eg_lowinc ML, whose theta differs from lme4's by
    up to 2e-5), SEs to 5e-6 (lme4's to the same fit differences)."""
    ref, obj, theta, _record, names, vd = _fitted(case, method)
    tab = multi_df(MultiParts(obj, theta, names), vd=vd)
    r = ref["satterthwaite"]
    np.testing.assert_allclose(tab["df"], r["df"], rtol=2e-5)
    np.testing.assert_allclose(tab["se"], ref["fixed_effects"]["se"], rtol=5e-6)
    np.testing.assert_allclose(tab["p"], r["p"], rtol=1e-3)


def _kr_ref(ref: dict, case: str) -> dict:
    r = ref["kenward_roger"]
    if "df" not in r:
        pytest.skip(f"no pbkrtest reference for {case}: {r.get('skipped', 'not computed')}")
    return r


@pytest.mark.parametrize("case", list(SPECS))
def test_kenward_roger_of_our_fit_match_pbkrtest(case):
    ref, obj, theta, _record, names, vd = _fitted(case, "REML")
    r = _kr_ref(ref, case)
    tab = multi_df(MultiParts(obj, theta, names), method="kenward-roger", vd=vd)
    np.testing.assert_allclose(tab["df"], r["df"], rtol=2e-5)
    np.testing.assert_allclose(tab["se"], r["se"], rtol=2e-6)


@pytest.mark.parametrize("case", list(SPECS))
def test_at_lme4s_theta_the_df_are_lmerTests_and_pbkrtests(case):
    """At lme4's own estimates: Kenward-Roger (pbkrtest: exact algebra) to 1e-9; Satterthwaite
    to 5e-6 (lmerTest differentiates the deviance and Var(beta) numerically, with numDeriv's
    Richardson steps: we see up to 2e-6, sim4's intercept)."""
    ref, obj, theta, names, vd = _at_lme4(case)
    sat = multi_df(MultiParts(obj, theta, names), vd=vd)
    np.testing.assert_allclose(sat["se"], ref["fixed_effects"]["se"], rtol=1e-9)
    np.testing.assert_allclose(sat["df"], ref["satterthwaite"]["df"], rtol=5e-6)
    r = _kr_ref(ref, case)
    kr = multi_df(MultiParts(obj, theta, names), method="kenward-roger", vd=vd)
    np.testing.assert_allclose(kr["df"], r["df"], rtol=1e-9)
    np.testing.assert_allclose(kr["se"], r["se"], rtol=1e-9)


def test_the_pieces_are_sums_over_the_components_of_a_nested_model(monkeypatch):
    """A nested model's pieces by one chunk per top-level unit equal those of one chunk for all."""
    import multilevel.inference.multi_derivatives as md

    case = _case(7, "nested", (2, 1, 1), N=200)
    obj = BlockedObjective(case[0], case[2], True)
    theta = _theta(case[2], 2)
    whole = variance_derivatives_multi(obj, theta)
    monkeypatch.setattr(md, "CHUNK", 1)
    assert len(md._components(md._sparse_blocks(obj, md._layout(obj))[0], 10_000)) == 3
    parts = variance_derivatives_multi(obj, theta)
    for name in ("P", "Q", "T", "eGGe", "eGX", "trWG", "eGe"):
        np.testing.assert_allclose(getattr(parts, name), getattr(whole, name), rtol=1e-10, atol=1e-12)


def test_a_fit_in_shifted_coordinates_gives_the_data_coordinates_table():
    """`multi_df` of a `MultiEstimates` whose summaries are in shifted coordinates (X' = X S,
    y' = y - m_y; `design.coordinates`) is the table of the fit on the data's own columns."""
    from types import SimpleNamespace

    from multilevel.design.coordinates import Coordinates
    from multilevel.results.multi import FactorTerms, MultiEstimates

    case = _case(6, "mixed", (2, 1, 1), N=300)
    s, order, templates, Zs, codes, J, X, y = case
    theta, _record, obj = optimize_blocked(s, templates, True)
    plain = multi_df(MultiParts(obj, theta, ("Intercept", "x", "w")), method="kenward-roger")
    coords = Coordinates(np.array([0.0, 3.0, -2.0]), 5.0, 0)
    s2, order2 = GroupSummaries.of_factors(tuple(Zs), X @ coords.S, y - 5.0, tuple(codes), J, ("g0", "g1", "g2"))
    assert order2 == order
    design = SimpleNamespace(coords=coords, x_names=("Intercept", "x", "w"))
    factors = tuple(FactorTerms(t.names[0].split(".")[0], f, (), ("Intercept", "x")[: t.q], t) for t, f in zip(templates, order))
    shifted_obj = BlockedObjective(s2, templates, True)
    est = MultiEstimates.in_frame(design, s2, factors, "REML", theta, None, (), shifted_obj)  # type: ignore[arg-type]
    for method in ("satterthwaite", "kenward-roger"):
        tab = multi_df(est, method=method)
        ref = plain if method == "kenward-roger" else multi_df(MultiParts(obj, theta, ("Intercept", "x", "w")))
        assert list(tab.index) == ["Intercept", "x", "w"]
        np.testing.assert_allclose(tab.to_numpy(), ref.to_numpy(), rtol=1e-7)
