"""Design: ModelSpec + data -> the numeric matrices, the grouping and the centring state.

This is the only stage that sees a DataFrame. It checks the input (columns, types, groups,
constancy of level-2 predictors, collinearity), drops rows with missing values listwise and
reports it, centres variables, builds X with formulaic and Z per random term, and classifies
every fixed-effect column into HLM's (level-1 coefficient, level-2 predictor) pair.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import formulaic
import numpy as np
import pandas as pd
import scipy.linalg

from .data_checks import DataReport, check_outcome, check_values, select_rows
from .errors import DataError, SpecificationError, close_matches, preview
from .join import JoinReport
from .weights import ScaledWeights, Weights, check_weight_column
from .weights import scale as scale_weights
from .spec import Centering, ModelSpec

INTERCEPT = "Intercept"


@dataclass(frozen=True)
class Coefficient:
    """A level-1 coefficient B_q of HLM's level form, with its level-2 equation.

    `columns` are the indices in X of its gammas G_qs, `predictors` their level-2 predictors
    ("Intercept" for G_q0); `random` says whether U_q is in the model.
    """

    name: str
    random: bool
    columns: tuple[int, ...]
    predictors: tuple[str, ...]
    centering: Centering | None = None


@dataclass(frozen=True, eq=False)
class Design:
    """The numeric model: y (N,), X (N, p), Z (N, q), integer group codes (N,), and labels.

    `blocks` lists, per random-effect term, the Z columns it owns (each block gets its own
    lower-triangular factor of the relative covariance, lme4's Lambda).
    """

    spec: ModelSpec
    y: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    codes: np.ndarray
    group: str
    group_labels: tuple[str, ...]
    x_names: tuple[str, ...]
    z_names: tuple[str, ...]
    blocks: tuple[tuple[int, ...], ...]
    coefficients: tuple[Coefficient, ...]
    centering_means: dict[str, object]
    data_report: DataReport
    weights: ScaledWeights | None = None
    frame: pd.DataFrame | None = None  # the rows used, all columns, before centring (for residual files)
    x_model_spec: object = None  # formulaic's spec of X: builds X for new data (model graphs)

    def centred_frame(self) -> pd.DataFrame:
        """The rows used with centred variables as the model used them."""
        out = self.frame.reset_index(drop=True).copy()
        for var, state in self.centering_means.items():
            v = out[var].to_numpy(dtype=float)
            out[var] = v - (state[self.codes] if isinstance(state, np.ndarray) else state)
        return out

    levels: dict = dataclasses.field(default_factory=dict)  # text variable -> its levels (to rebuild X elsewhere)
    streamed: bool = False  # built chunk by chunk (`chunked`): the rows were not kept (y, X, Z, codes are None)
    n_rows: int = 0

    @property
    def n_obs(self) -> int:
        return self.n_rows if self.streamed else int(self.y.shape[0])

    def require_rows(self, what: str) -> None:
        if self.streamed:
            from .errors import SpecificationError

            raise SpecificationError(
                f"{what} needs the rows, which a fit from streamed or distributed data does not keep. Fit the data "
                "in memory for it (every estimate, test and EB residual of this fit is available)."
            )

    @property
    def n_groups(self) -> int:
        return len(self.group_labels)


@lru_cache(maxsize=512)
def _variables(expr: str) -> frozenset[str]:
    return frozenset(formulaic.Formula(expr).required_variables) if expr != "1" else frozenset()


def _term_factors(term: str) -> list[str]:
    return [f.expr for t in formulaic.Formula(term) if str(t) != "1" for f in t.factors] if term != "1" else []


def _check_columns(spec: ModelSpec, data: pd.DataFrame) -> list[str]:
    cols = [str(c) for c in data.columns]
    needed: dict[str, str] = {spec.outcome: "the outcome"}
    for g in spec.groups:
        needed.setdefault(g, "the grouping factor")
    for t in spec.fixed:
        for v in sorted(_variables(t)):
            needed.setdefault(v, f"the fixed-effect term '{t}'")
    for r in spec.random:
        for t in r.terms:
            for v in sorted(_variables(t)):
                needed.setdefault(v, f"the random-effect term '({' + '.join(r.terms)} | {r.group})'")
    for var, role in needed.items():
        if var not in data.columns:
            raise DataError(
                f"Column '{var}' (used in {role}) is not in the data." + close_matches(var, cols)
                + f" The data have {len(cols)} columns: {preview(cols, 15)}."
            )
    return list(needed)


def _center(data: pd.DataFrame, codes: np.ndarray, centering: dict[str, Centering]) -> tuple[pd.DataFrame, dict[str, object]]:
    """Centre the named variables on the rows used: group means (per code) or the grand mean."""
    if not centering:
        return data, {}
    data = data.copy()
    state: dict[str, object] = {}
    for var, kind in centering.items():
        x = data[var]
        if not pd.api.types.is_numeric_dtype(x) or pd.api.types.is_bool_dtype(x):
            raise DataError(f"'{var}' is centred but is not numeric (dtype {x.dtype}); only numbers can be centred.")
        xv = x.to_numpy(dtype=float)
        if kind == "group":
            means = np.bincount(codes, weights=xv) / np.bincount(codes)
            data[var] = xv - means[codes]
            state[var] = means
        else:
            m = float(xv.mean())
            data[var] = xv - m
            state[var] = m
    return data, state


def _varying_groups(values: pd.Series, codes: np.ndarray, labels: tuple[str, ...]) -> list[str]:
    """The units in which `values` is not constant."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and not values.isna().any():
        # two bincounts instead of a groupby: the spread around the unit mean, up to rounding
        x = values.to_numpy(dtype=float)
        J = len(labels)
        n = np.bincount(codes, minlength=J)
        dev = x - (np.bincount(codes, weights=x, minlength=J) / np.maximum(n, 1))[codes]
        spread = np.sqrt(np.bincount(codes, weights=dev * dev, minlength=J) / np.maximum(n, 1))
        tol = 1e-12 * max(float(np.abs(x).max()), 1e-300)
        return [labels[i] for i in np.flatnonzero(spread > tol)]
    nun = pd.Series(values.to_numpy()).groupby(codes).nunique(dropna=False)
    return [labels[i] for i in nun.index[nun.to_numpy() > 1]]


def _model_matrix(rhs: str, data: pd.DataFrame, what: str) -> pd.DataFrame:
    try:
        mm = formulaic.model_matrix(rhs, data, na_action="raise")
    except Exception as exc:
        raise SpecificationError(f"Cannot build the {what} from '{rhs}': {exc}") from exc
    return mm


def _check_rank(X: np.ndarray, names: tuple[str, ...]) -> None:
    """Name the fixed-effect columns that are constant or linear combinations of earlier ones."""
    if X.shape[1] == 0:
        return
    scale = np.sqrt((X**2).sum(axis=0))
    for j, s in enumerate(scale):
        if s == 0:
            raise DataError(f"The fixed-effect column '{names[j]}' is zero in every row used; remove it.")
    if INTERCEPT in names:
        for j, n in enumerate(names):
            if n != INTERCEPT and np.ptp(X[:, j]) == 0:
                raise DataError(
                    f"The predictor '{n}' has the same value ({X[0, j]:g}) in every row used, so its effect cannot be "
                    "told apart from the intercept. Remove it from the model (or check the rows selected)."
                )
    # Pivoted QR of the p x p factor B = S V' of the scaled Gram matrix (B'B = X'X/scale^2): the same
    # pivots and rank as a QR of the N x p X itself, at O(N p^2) BLAS cost instead of a QR of X.
    Xs = X / scale
    lam, V = np.linalg.eigh(Xs.T @ Xs)
    B = np.sqrt(np.clip(lam, 0.0, None))[:, None] * V.T
    _, r, piv = scipy.linalg.qr(B, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int((diag > diag[0] * 1e-9 * max(X.shape)).sum())
    if rank < X.shape[1]:
        dependent = sorted(piv[rank:].tolist())
        raise DataError(
            "The fixed effects are collinear: "
            + ", ".join(f"'{names[j]}'" for j in dependent)
            + (" is a linear combination" if len(dependent) == 1 else " are linear combinations")
            + " of the other columns ("
            + ", ".join(f"'{names[j]}'" for j in sorted(piv[:rank].tolist()))
            + "). Remove or recode one of them."
        )


def _classify(
    spec: ModelSpec,
    x_mm: pd.DataFrame,
    varying,
    z_names: tuple[str, ...],
) -> tuple[Coefficient, ...]:
    """Split each fixed-effect column into (level-1 coefficient, level-2 predictor).

    A factor of a term is level-2 when all its variables are constant within every unit; the
    product of the other factors is the level-1 coefficient it belongs to (HLM's B_q), the product
    of the level-2 factors its predictor (HLM's W_s, or INTRCPT2).
    """
    level_of: dict[str, int] = {}

    def is_level2(var: str) -> bool:
        if var not in level_of:
            level_of[var] = 1 if varying(var) else 2
        return level_of[var] == 2

    for var in sorted(spec.level2):
        for v in sorted(_variables(var)):
            units = varying(v)
            if units:
                raise DataError(
                    f"'{v}' is given as a level-2 predictor but varies within {len(units)} units "
                    f"({preview(units)}). A level-2 predictor must be constant within each unit: "
                    "use its unit mean or move it to the level-1 model."
                )
    structure = x_mm.model_spec.structure
    coef_cols: dict[str, list[int]] = {}
    coef_preds: dict[str, list[str]] = {}
    col = 0
    for entry in structure:
        term, columns = str(entry.term), list(entry.columns)
        factors = _term_factors(term)
        lvl2 = [all(is_level2(v) for v in _variables(f)) and bool(_variables(f)) for f in factors]
        for cname in columns:
            pieces = cname.split(":") if len(factors) > 1 else [cname]
            if len(pieces) != len(factors):  # a ':' inside a level name; treat the term as one
                pieces, flags = [cname], [all(lvl2)]
            else:
                flags = lvl2
            l1 = ":".join(p for p, f in zip(pieces, flags) if not f) or INTERCEPT
            l2 = ":".join(p for p, f in zip(pieces, flags) if f) or INTERCEPT
            if term == "1":
                l1, l2 = INTERCEPT, INTERCEPT
            coef_cols.setdefault(l1, []).append(col)
            coef_preds.setdefault(l1, []).append(l2)
            col += 1
    centre = spec.centering_map
    names = list(dict.fromkeys([*z_names, *coef_cols]))
    return tuple(
        Coefficient(
            name=n,
            random=n in z_names,
            columns=tuple(coef_cols.get(n, ())),
            predictors=tuple(coef_preds.get(n, ())),
            centering=centre.get(n),
        )
        for n in names
    )


def build_design(
    spec: ModelSpec,
    data: pd.DataFrame,
    level2_vars: tuple[str, ...] = (),
    level2_missing: str = "error",
    join: JoinReport | None = None,
    weights: Weights | None = None,
) -> Design:
    """Check the data against the spec and build the numeric design (see module doc).

    `level2_vars`: the variables of a level-2 table (see `join`); with those declared level-2 in
    the level equations they follow the level-2 missing-data rule (`data_checks`)."""
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    groups = spec.groups
    if len(groups) != 1:
        raise SpecificationError(
            f"This model has {len(groups)} grouping factors ({', '.join(groups)}); nested and crossed "
            "groupings are not supported yet. Use one grouping factor."
        )
    group = groups[0]
    variables = _check_columns(spec, data)
    for w in weights.columns if weights else []:
        if w not in data.columns:
            raise DataError(f"The weight column '{w}' is not in the data." + close_matches(w, [str(c) for c in data.columns]))
        if w not in variables:
            variables.append(w)
    data = check_values(data, variables, spec.outcome, group)
    zero_weight = 0
    if weights is not None:
        for w in weights.columns:
            check_weight_column(data[w], w)  # rows named as in the input
        if weights.level1 is not None:
            zero = (data[weights.level1] == 0).to_numpy()
            zero_weight = int(zero.sum())
            if zero_weight:
                attrs = dict(data.attrs)
                data = data.loc[~zero]
                data.attrs.update(attrs)
    y_raw = data[spec.outcome]
    if not pd.api.types.is_numeric_dtype(y_raw) or pd.api.types.is_bool_dtype(y_raw):
        raise DataError(
            f"The outcome '{spec.outcome}' is not numeric (dtype {y_raw.dtype}). A linear mixed model "
            "needs a numeric outcome: convert it, e.g. with pd.to_numeric."
        )
    declared = {v for expr in spec.level2 for v in _variables(expr)}
    l2 = [v for v in variables if v != group and (v in set(level2_vars) or v in declared)]
    used, report = select_rows(data, variables, group, l2, level2_missing, join)
    if zero_weight:
        report = dataclasses.replace(report, n_rows_in=report.n_rows_in + zero_weight, zero_weight_rows=zero_weight)
    if report.n_rows_used == 0:
        raise DataError("No row has all of the model's variables; every row has a missing value: " + str(report))
    codes, uniques = pd.factorize(used[group], sort=True)
    labels = tuple(str(u) for u in uniques)
    if len(labels) < 2:
        raise DataError(
            f"The grouping factor '{group}' has {len(labels)} unit(s) in the rows used; a multilevel "
            "model needs at least two (and in practice many more)."
        )
    frame = used
    used, centering_means = _center(used, codes, spec.centering_map)

    x_mm = _model_matrix(spec.fixed_formula(), used, "fixed-effects design")
    X = np.asarray(x_mm.to_numpy(dtype=float))
    x_names = tuple(str(c) for c in x_mm.columns)
    _check_rank(X, x_names)

    z_parts, blocks, z_names = [], [], []
    for term in spec.random:
        rhs = " + ".join(["1" if term.intercept else "0", *[t for t in term.terms if t != "1"]])
        zm = _model_matrix(rhs, used, f"random-effects design of '{rhs} | {term.group}'")
        names = [str(c) for c in zm.columns]
        dup = set(names) & set(z_names)
        if dup:
            raise SpecificationError(
                f"The random effect(s) {', '.join(sorted(dup))} of '{term.group}' appear in two terms; "
                "keep each in one term."
            )
        blocks.append(tuple(range(len(z_names), len(z_names) + len(names))))
        z_names.extend(names)
        z_parts.append(zm.to_numpy(dtype=float))
    Z = np.hstack(z_parts)

    coefficients = _classify(spec, x_mm, lambda v: _varying_groups(used[v], codes, labels), tuple(z_names))
    y = used[spec.outcome].to_numpy(dtype=float)
    check_outcome(y, spec.outcome)
    scaled = scale_weights(weights, used, codes, len(labels), labels) if weights else None
    return Design(
        spec=spec,
        y=y,
        X=X,
        Z=Z,
        codes=codes.astype(np.intp),
        group=group,
        group_labels=labels,
        x_names=x_names,
        z_names=tuple(z_names),
        blocks=tuple(blocks),
        coefficients=coefficients,
        centering_means=centering_means,
        data_report=report,
        weights=scaled,
        frame=frame,
        x_model_spec=x_mm.model_spec,
        levels={
            v: (list(used[v].cat.categories) if isinstance(used[v].dtype, pd.CategoricalDtype) else sorted(pd.unique(used[v].astype(str))))
            for v in variables
            if v != group and not pd.api.types.is_numeric_dtype(used[v])
        },
    )
