"""HLM's residual files and the empirical Bayes quantities in them (docs/hlm-statistics.md section 8).

For unit j, with D_j = sigma2 Lambda M_j^-1 Lambda' (lme4's condVar), M = Var(gamma-hat) and W_j the
q x p matrix that maps gamma to the unit's fixed part of each random coefficient
(beta_j = W_j gamma + u_j; W_j[q, c] = the level-2 predictor of column c in B_q's equation):

    u*_j   = D_j Z_j'(y_j - X_j gamma)/sigma2                      EB residual (lme4 ranef)
    EC_j   = W_j gamma + u*_j                                      EB coefficient
    PV_j   = D_j + G_j M G_j',      G_j = D_j Z_j'X_j / sigma2     Var(u_j - u*_j): with gamma's uncertainty
    PVC_j  = D_j + (W_j - G_j) M (W_j - G_j)'                      Var(beta_j - EC_j)
    OL_j   = beta_hat_j - W_j gamma                                 OLS residual (units with full-rank Z_j)
    MDIST_j = OL_j' (T + V_j)^-1 OL_j,   V_j = sigma2 (Z_j'Z_j)^-1  (R&B ch. 9; chi2_q under normality)
    CHIPCT_j = F^-1_chi2_q((r_j - 0.5)/J*)                          r_j the rank of MDIST_j among the J* units
    LNTOTVAR = ln SD(y_j) (divisor n_j - 1);  OLSRSVAR = ln of the residual SD of the unit's OLS on the full
    level-1 model (divisor n_j - Q - 1);  MDRSVAR = ln of the SD of y - X gamma - Z u* (divisor n_j).
The level-1 file has, per row, the fitted values from the fixed part and from fixed + EB, the
residuals, the predictors as used in the model, and any extra columns of the data. Its rows carry
the input table's own index (of the rows used), so `df["r"] = fit.residuals(level=1)["resid"]`
lands on the right rows when rows were dropped; the level-2 file is indexed by the unit ids (as
`fit.ranef`), and keeps them in a column too.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from multilevel.design.builder import INTERCEPT, _varying_groups
from multilevel.diagnostics.hlm_statistics import UnitOLS
from multilevel.errors import DataError, MultilevelWarning, SpecificationError, close_matches, preview
from multilevel.inference import distributions as dist
from multilevel.results.estimates import Estimates


@dataclass(frozen=True, eq=False)
class Rows:
    """The rows an in-memory fit keeps beside its summaries: y (less any offset), X, Z and the data
    frame of the rows used (all columns, before centring)."""

    y: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    frame: pd.DataFrame


def rows(fit: Estimates, what: str) -> Rows:
    """The fit's rows, or the SpecificationError of `Design.require_rows` naming `what` for a fit
    from streamed or distributed data, which keeps none."""
    d = fit.design
    d.require_rows(what)
    y, X, Z, frame = d.y, d.X, d.Z, d.frame
    # an in-memory design has all four (`design.builder.build_design`): said to the type checker
    assert y is not None and X is not None and Z is not None and frame is not None
    return Rows(y, X, Z, frame)


def unit_ids(fit: Estimates) -> np.ndarray:
    """The unit ids with their own type (integers stay integers: `df[g].map(fit.ranef[...])`
    works), in the order of the codes (`design.units`); `design.group_labels` are their text
    forms, for printing."""
    return np.asarray(fit.design.units)


def unit_W(fit: Estimates) -> np.ndarray:
    """W_j (J, q, p): W_j[k, c] = (Z'X)_j[k, c] / (Z'Z)_j[k, k] for the columns c of coefficient k's
    equation (exact: the level-2 predictor is constant within the unit); NaN where z_k is all 0."""
    s, d = fit.summaries, fit.design
    J, q, p = s.n_groups, s.q, s.p
    W = np.zeros((J, q, p))
    z = list(d.z_names)
    for c in d.coefficients:
        if c.random and c.columns:
            k = z.index(c.name)
            zz = fit.ZtZ[:, k, k]
            with np.errstate(invalid="ignore", divide="ignore"):
                W[:, k, list(c.columns)] = fit.ZtX[:, k, list(c.columns)] / zz[:, None]
    return W


def eb_quantities(fit: Estimates, u: np.ndarray, D: np.ndarray) -> dict[str, np.ndarray]:
    """u*, D, PV, EC and PVC of the module doc, for every unit, from the EB residuals u* (J, q) and
    their conditional covariances D (J, q, q) in the data's coordinates."""
    s, coords = fit.summaries, fit.coordinates
    # G M G' and H M H' in the summaries' coordinates (`coordinates`), where nothing cancels:
    # with D = S_z D' S_z', Z'X = S_z^-T Z'X' S^-1 and M = S M' S', G = D Z'X / sigma2 is
    # S_z G' S^-1, so G M G' = S_z G' M' G'' S_z', and H M H' = (H S) M' (H S)'
    D_int = fit.sigma2 * fit.solution.relative_condvar
    G_int = D_int @ s.ZtX / fit.sigma2
    M_int = fit.vcov_internal
    PV = coords.tau(D_int + G_int @ M_int @ np.swapaxes(G_int, 1, 2))
    W = unit_W(fit)
    beta = fit.beta.to_numpy()
    fv = W @ beta
    HS = W @ coords.S - (coords.S_z @ G_int if not coords.z_identity else G_int)
    PVC = D + HS @ M_int @ np.swapaxes(HS, 1, 2)
    return {"u": u, "D": D, "PV": PV, "FV": fv, "EC": fv + u, "PVC": PVC, "W": W}


def _full_level1_columns(fit: Estimates) -> list[int]:
    """Columns of [Z X y] making the full level-1 model of a unit: Z, plus the own column of each
    non-random level-1 coefficient (its INTRCPT2 column)."""
    d = fit.design
    cols = list(range(fit.summaries.q))
    for c in d.coefficients:
        if not c.random and c.name != INTERCEPT and c.columns:
            own = [col for col, w in zip(c.columns, c.predictors) if w == INTERCEPT]
            cols.append(fit.summaries.q + (own[0] if own else c.columns[0]))
    return cols


def _full_rank(G: np.ndarray) -> bool:
    """Whether the cross-product matrix G = X_j'X_j of a unit's level-1 design has full rank, judged
    on the scale-free G_s = D^-1/2 G D^-1/2 (D = diag G; columns scaled to unit length) with the
    tolerance k * 1e3 * eps * the largest eigenvalue of G_s (numpy's matrix_rank rule, with room for
    the rounding of G's shifted coordinates). On G itself the cut is
    relative to the largest column, so a constant column (proportional to the intercept) of small
    size passed in some units and not in others; on G_s it is the same for all (the 2 x 2 block of
    a column and a multiple of it is [[1, 1], [1, 1]] whatever their sizes). A column that is all 0
    in the unit is rank deficient."""
    d = np.diag(G)
    if not np.all(d > 0):
        return False
    r = 1.0 / np.sqrt(d)
    Gs = G * r[:, None] * r[None, :]
    ev = np.linalg.eigvalsh(Gs)
    return bool(ev[0] > ev[-1] * len(d) * 1e3 * np.finfo(float).eps)


def unit_level1_ols(fit: Estimates) -> tuple[np.ndarray, np.ndarray, int]:
    """(RSS_j, f_j, Q) of each unit's OLS of y on the full level-1 model; f_j = n_j - Q - 1, and
    RSS is NaN for units whose design is not of full rank or has f_j <= 0."""
    s = fit.summaries
    cols = _full_level1_columns(fit)
    # with a random intercept, y's and X's shifts (`coordinates`) are absorbed by it: the RSS is
    # the same in the summaries' coordinates, where it is exact; without, use the data's own
    C = s.C if INTERCEPT in fit.design.z_names else fit.design.coords.original_C(s)
    G = C[:, cols][:, :, cols]
    g = C[:, cols, -1]
    k = len(cols)
    rss = np.full(s.n_groups, np.nan)
    for j in range(s.n_groups):
        if _full_rank(G[j]) and s.n[j] > k:
            b = np.linalg.solve(G[j], g[j])
            rss[j] = C[j, -1, -1] - g[j] @ b
    Q = k - 1 if INTERCEPT in fit.design.z_names else k
    return rss, s.n - k, Q


def mdist_chipct(fit: Estimates, ols: UnitOLS) -> tuple[np.ndarray, np.ndarray]:
    """MDIST and CHIPCT (module doc); NaN for units without sufficient data (`ols.used`)."""
    J, q = fit.n_groups, len(fit.design.z_names)
    mdist = np.full(J, np.nan)
    used = np.flatnonzero(ols.used)
    # delta' (T + V)^-1 delta is the same in the summaries' coordinates (`coordinates`: T = S_z T' S_z',
    # V likewise, delta = S_z delta'), where T + V is not near-singular
    # V likewise, delta = S_z delta'), where T + V is not near-singular. There delta' is the units'
    # OLS of the marginal residual e = y - X gamma on Z' (b_OLS - W gamma = (Z'Z)^-1 Z'e, since X gamma
    # = Z W gamma + the fixed-only columns), from the summaries: (Z'Z')^-1 (Z'y' - Z'X' gamma')
    s = fit.summaries
    T = fit.tau_internal
    ZtZ = s.ZtZ[used]
    V = fit.sigma2 * np.linalg.inv(ZtZ)
    Zte = s.Zty[used] - s.ZtX[used] @ fit.solution.beta
    delta = np.linalg.solve(ZtZ, Zte[:, :, None])[:, :, 0]
    mdist[used] = np.einsum("ja,ja->j", delta, np.linalg.solve(T + V, delta[:, :, None])[:, :, 0])
    chipct = np.full(J, np.nan)
    import scipy.stats  # here, not at import: it costs a third of a second, more than a small fit

    r = scipy.stats.rankdata(mdist[used])
    chipct[used] = dist.chi2_ppf((r - 0.5) / used.size, q)
    return mdist, chipct


def level2_predictors(fit: Estimates) -> list[str]:
    """The level-2 predictors of the model (the W of the level-2 equations), as data columns."""
    names: list[str] = []
    frame = fit.design.frame
    if frame is None:  # a streamed fit keeps no rows: its predictors are not data columns here
        return names
    columns = frame.columns
    for c in fit.design.coefficients:
        for w in c.predictors:
            for part in w.split(":"):
                if part == INTERCEPT:
                    continue
                if part not in columns:
                    # a factor's contrast column (sector_lab[T.pub], C(sector_lab)[T.pub]): its data
                    # column, whose value per unit (the level's text) goes into the file as a numeric
                    # level-2 predictor's does
                    m = re.fullmatch(r"(?:(?:C|factor)\((.+?)\)|(.+?))\[.*\]", part)
                    part = next((g for g in m.groups() if g), part) if m else part
                if part in columns and part not in names:
                    names.append(part)
    return names


def _missing_columns(columns, frame: pd.DataFrame) -> None:
    """A DataError for columns not in the fit's data, with a 'Did you mean' for each."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        hints = "".join(close_matches(str(m), map(str, frame.columns)) for m in missing)
        raise DataError(
            f"Extra column(s) {', '.join(repr(m) for m in missing)} are not in the data of this fit.{hints} "
            f"The data have the columns {preview(map(str, frame.columns), 20)}."
        )


def _unit_values(fit: Estimates, columns: list[str]) -> pd.DataFrame:
    """The value of each column in each unit. A level-2 file holds level-2 variables only (as
    HLM's): a column that varies within a unit has no single value there, and taking one of its
    rows would be silently wrong, so it is refused with the units where it varies."""
    d = fit.design
    frame = rows(fit, "A level-2 residual file").frame
    _missing_columns(columns, frame)
    labels = d.group_labels
    for c in columns:
        units = _varying_groups(frame[c].reset_index(drop=True), d.codes, labels)
        if units:
            raise DataError(
                f"'{c}' varies within {len(units)} of the {len(labels)} units ({preview(units)}): it is a level-1 "
                "variable, and a level-2 residual file holds one value per unit (HLM's level-2 file has level-2 "
                f"variables only). Use its unit mean, e.g. df['{c}_mean'] = df.groupby('{d.group}')['{c}'].transform('mean') "
                "as a level-2 column, or the level-1 file (fit.residuals(level=1, extra=[...]))."
            )
    first = frame.groupby(d.codes, sort=True)[columns].first()
    return first.reset_index(drop=True)


def level2_table(fit: Estimates, eb: dict[str, np.ndarray], ols: UnitOLS, extra: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """HLM's level-2 residual file as a DataFrame (module doc), one row per unit, from the EB
    quantities (`eb_quantities`) and the units' OLS (`hlm_statistics.unit_ols`)."""
    d, s = fit.design, fit.summaries
    r = rows(fit, "The level-2 residual file")
    mdist, chipct = mdist_chipct(fit, ols)
    n = s.n
    y, codes = r.y, d.codes
    mean = np.bincount(codes, weights=y) / n
    ss = np.bincount(codes, weights=(y - mean[codes]) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        lntotvar = 0.5 * np.log(ss / (n - 1))
        rss, f, _ = unit_level1_ols(fit)
        olsrsvar = 0.5 * np.log(rss / f)
        cond = y - r.X @ fit.beta.to_numpy() - np.einsum("ia,ia->i", r.Z, eb["u"][codes])
        mdrsvar = 0.5 * np.log(np.bincount(codes, weights=cond**2) / n)
    units = unit_ids(fit)
    out = pd.DataFrame({d.group: units, "nj": n.astype(int), "chipct": chipct, "mdist": mdist,
                        "lntotvar": lntotvar, "olsrsvar": olsrsvar, "mdrsvar": mdrsvar})
    z = list(d.z_names)
    ol = np.full((len(n), len(z)), np.nan)
    ol[ols.used] = ols.beta_hat - ols.fitted
    for k, name in enumerate(z):
        out[f"eb_{name}"] = eb["u"][:, k]
        out[f"ol_{name}"] = ol[:, k]
        out[f"fv_{name}"] = eb["FV"][:, k]
        out[f"ec_{name}"] = eb["EC"][:, k]
    for a in range(len(z)):
        for b in range(a + 1):
            out[f"pv_{z[a]}_{z[b]}"] = eb["PV"][:, a, b]
    for a in range(len(z)):
        for b in range(a + 1):
            out[f"pvc_{z[a]}_{z[b]}"] = eb["PVC"][:, a, b]
    cols = level2_predictors(fit) + [c for c in extra if c not in out.columns]
    if cols:
        out = pd.concat([out, _unit_values(fit, list(dict.fromkeys(cols)))], axis=1)
    out.index = pd.Index(units)  # unnamed: the column of the same name keeps the ids
    return out


def level1_table(fit: Estimates, u: np.ndarray, extra: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """HLM's level-1 residual file as a DataFrame, one row per row used; u the EB residuals (J, q)."""
    d = fit.design
    r = rows(fit, "The level-1 residual file (for Dask data: ml.dask_residuals)")
    # an offset (lme4's offset(z)) is part of the fitted values, as in lme4's fitted(); d.y is y - offset
    off = 0.0 if d.offset is None else d.offset
    fixed = r.X @ fit.beta.to_numpy() + off
    fitted = fixed + np.einsum("ia,ia->i", r.Z, u[d.codes])
    y = r.y + off
    out = pd.DataFrame({
        d.group: unit_ids(fit)[d.codes],
        d.spec.outcome: y,
        "fitted_fixed": fixed,
        "fitted": fitted,
        "resid_fixed": y - fixed,
        "resid": y - fitted,
        "sigma": np.sqrt(fit.sigma2),
    })
    predictors = pd.DataFrame(r.X, columns=list(d.x_names)).drop(columns=[INTERCEPT], errors="ignore")
    out = pd.concat([out, predictors], axis=1)
    if extra:
        _missing_columns(extra, r.frame)
        out = pd.concat([out, r.frame[list(extra)].reset_index(drop=True)], axis=1)
    if d.row_index is not None:
        out.index = d.row_index  # the input's own index of the rows used
    return out


def _safe_names(columns, limit: int) -> list[str]:
    """Variable names SPSS and Stata accept: letters, digits and _, starting with a letter, unique."""
    out = []
    for c in columns:
        name = re.sub(r"\W+", "_", str(c)).strip("_") or "v"
        if not name[0].isalpha():
            name = "v_" + name
        name = name[:limit]
        base, k = name, 1
        while name in out:
            k += 1
            name = f"{base[: limit - len(str(k)) - 1]}_{k}"
        out.append(name)
    return out


def save(table: pd.DataFrame, path) -> Path:
    """Write a residual file by its extension: .csv, .parquet, .sav (SPSS) or .dta (Stata)."""
    from multilevel.data.reading import _need
    from multilevel.output import output_path

    p = output_path(path, "The residual file")
    ext = p.suffix.lower()
    if ext == ".csv":
        table.to_csv(p, index=False)
    elif ext in (".parquet", ".pq"):
        _need("pyarrow", "parquet", "Parquet files")
        table.to_parquet(p, index=False)
    elif ext in (".sav", ".dta"):
        pyreadstat = _need("pyreadstat", "files", f"{ext} files")
        t = table.copy()
        original = [str(c) for c in t.columns]
        t.columns = _safe_names(t.columns, 64 if ext == ".sav" else 32)
        renamed = [(o, n) for o, n in zip(original, t.columns) if o != n]
        # the original names go into the file as variable labels (SPSS/Stata show them), and the
        # renaming is said: a column read back under another name must not pass unnoticed
        labels = {n: o[:80] if ext == ".dta" else o for o, n in zip(original, t.columns)}
        (pyreadstat.write_sav if ext == ".sav" else pyreadstat.write_dta)(t, str(p), column_labels=labels)
        if renamed:
            warnings.warn(
                f"{len(renamed)} column name(s) are not valid {ext} variable names and were renamed in '{p.name}' "
                f"(the original names are kept as variable labels): "
                + preview([f"{o!r} -> {n!r}" for o, n in renamed], 30) + ".",
                MultilevelWarning, stacklevel=3,
            )
    else:
        raise SpecificationError(f"Cannot write '{p}': use .csv, .parquet, .sav or .dta.")
    return p


def homogeneity_test(fit: Estimates, min_df: int = 10) -> dict:
    """H test of homogeneous level-1 variance (R&B 2002 eq. 9.5-9.6; docs/hlm-statistics.md section 4a):
    s_j^2 = RSS_j/f_j from the unit's OLS on the full level-1 model, f_j = n_j - Q - 1, over the
    units with f_j >= min_df; d_j = (ln s_j^2 - lbar)/sqrt(2/f_j), lbar = sum f_j ln s_j^2 / sum f_j;
    H = sum d_j^2 ~ chi2 with J' - 1 df."""
    if isinstance(min_df, (bool, np.bool_)) or not isinstance(min_df, (int, np.integer)) or min_df < 1:
        raise SpecificationError(
            f"min_df must be a whole number of residual degrees of freedom, at least 1 (HLM uses 10); got {min_df!r}."
        )
    min_df = int(min_df)
    rss, f, _ = unit_level1_ols(fit)
    use = np.isfinite(rss) & (f >= min_df) & (rss > 0)
    if use.sum() < 2:
        raise DataError(f"Fewer than two units have at least {min_df} residual df for the homogeneity test; lower min_df.")
    ls = np.log(rss[use] / f[use])
    lbar = float(np.sum(f[use] * ls) / np.sum(f[use]))
    dj = (ls - lbar) / np.sqrt(2 / f[use])
    H = float(np.sum(dj**2))
    df = int(use.sum() - 1)
    return {"chisq": H, "df": df, "p": float(dist.chi2_sf(H, df)), "units_used": int(use.sum()),
            "units_left_out": int(fit.n_groups - use.sum()), "min_df": min_df}
