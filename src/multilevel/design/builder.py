"""Design: ModelSpec + data -> the numeric matrices, the grouping and the centring state.

This is the only stage that sees a DataFrame. It checks the input (columns, types, groups,
constancy of level-2 predictors), drops rows with missing values listwise and reports it, centres
variables, and describes the columns of X and Z (`columns.Columns`): as products of the data's own
numeric arrays where every term is such a product (formulaic's terms, order and names: from
`model.terms` for a formula of column names, else from formulaic on three stand-in rows), else as
formulaic's matrices. It classifies every fixed-effect
column into HLM's (level-1 coefficient, level-2 predictor) pair. The one pass over the rows
(`Design.summaries`) and the collinearity check on X'X (`check_rank`) follow it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import pandas as pd

from multilevel.data.checks import (
    DataReport,
    check_duplicate_columns,
    check_outcome,
    check_units,
    check_values,
    plain_column,
    select_rows,
    warn_outcome_kind,
)
from multilevel.data.join import JoinReport
from multilevel.data.weights import PrecisionWeights, SamplingWeights, ScaledWeights, check_precision_column, check_weight_column
from multilevel.data.weights import scale as scale_weights
from multilevel.design.columns import Columns
from multilevel.design.coordinates import Coordinates
from multilevel.design.coordinates import choose as choose_coordinates
from multilevel.design.nesting import PairCounts, check_distinct, implicit_nesting_notes, nesting
from multilevel.design.summaries import GroupSummaries
from multilevel.errors import DataError, SpecificationError, close_matches, plain_message, preview
from multilevel.model.expressions import Derived, derived_state, derived_values
from multilevel.model.level_equations import HLM_RANDOM_NAME, hlm_random_name_message
from multilevel.model.spec import Centering, ModelSpec, group_variables, term_factors
from multilevel.model.terms import numeric_spec
from multilevel.numerics.rowpass import group_ranges, kernel

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
    #: per predictor: "grand" (cgm(), mean over the rows), "units" (cgm() of a level-2 variable in
    #: level equations: mean over the units, HLM's) or "" (not centred)
    predictor_centering: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Grouping:
    """One grouping factor of the rows used: lme4's name of it, the level of each row, the levels.

    - `name`: a column ('school') or an interaction as lme4 names it ('class:school', 'c:(b:a)';
      `formula.grouping_factors`), whose levels are the combinations of its columns present.
    - `codes`: (N,) intp, the level 0..J-1 of each row used (every level has a row).
    - `units`: (J,) the levels in the order of the codes: a column's ids sorted
      (`pd.factorize(sort=True)`, numbers by value); an interaction's labels '<b>:<a>' (text),
      in R's order of the factor b:a (b's levels slowest, each column's levels sorted), with
      unused combinations dropped (lme4's `factor(b:a)`).
    """

    name: str
    codes: np.ndarray
    units: np.ndarray

    @property
    def n_levels(self) -> int:
        return len(self.units)

    @property
    def columns(self) -> tuple[str, ...]:
        """The data columns the factor reads ('class:school' -> ('class', 'school'))."""
        return group_variables(self.name)

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """The levels as text, as lme4 prints them: '12', 'a'; an interaction's '3:12' (R's paste of
        the levels of b and a with ':'; whole-number float ids without '.0')."""
        return _labels(self.units)


@dataclass(frozen=True, eq=False)
class Design:
    """The numeric model: y (N,), X (N, p), Z (N, q), integer group codes (N,), and labels.

    `blocks` lists, per random-effect term, the Z columns it owns (each block gets its own
    lower-triangular factor of the relative covariance, lme4's Lambda).

    Grouping factors: `groupings` holds every factor (`Grouping`), in `spec.groups` order, and
    `term_grouping[t]` the index in `groupings` of the factor of term t (`blocks[t]`). `group`,
    `codes` and `units` are the FIRST factor's (`groupings[0]`; the only one of a two-level
    model, the outermost of `(1 | a/b)`). With several factors (`n_factors > 1`): no
    `coefficients` (HLM's level form is of one grouping; empty), no sampling or precision
    weights, no level-2 joins, no cwc(); `summaries()` refuses (the one-factor pass) and
    `factor_summaries()` gives the blocked summaries; the random slopes are not shifted
    (`coordinates.z_shift` is None), only X and y are.
    """

    spec: ModelSpec
    columns: Columns | None  # [Z X y] as recipes over the data (`columns`); None when streamed
    codes: np.ndarray  # the unit code (0..J-1) of each row used; empty when streamed (no rows kept)
    group: str
    units: np.ndarray  # the unit ids, in the order of the codes (sorted)
    x_names: tuple[str, ...]
    z_names: tuple[str, ...]
    blocks: tuple[tuple[int, ...], ...]
    coefficients: tuple[Coefficient, ...]
    centering_means: dict[str, object]
    data_report: DataReport
    weights: ScaledWeights | None = None  # sampling weights (pseudo-likelihood), scaled
    precision_weights: PrecisionWeights | None = None  # lme4's weights= (Var(e_i) = sigma2 / w_i)
    frame: pd.DataFrame | None = None  # the rows used, all columns, before centring (for residual files)
    row_index: pd.Index | None = None  # the input's own index of the rows used (row-level outputs carry it)
    x_model_spec: object = None  # formulaic's spec of X: builds X for new data (model graphs)
    coordinates: Coordinates | None = None  # the shifts of X and y the summaries are in (`coordinates`)
    offset: np.ndarray | None = None  # lme4's offset per row used (subtracted from y in `columns`)

    def centred_frame(self) -> pd.DataFrame:
        """The rows used, with the derived columns (`cwc(ses)`, `I(x^2)`, ...) as the model used them."""
        out = self.rows_frame("The centred data").reset_index(drop=True).copy()
        column = _float_column(out)
        codes_of = {g.name: g.codes for g in self.groupings}
        for d in self.spec.derived:
            codes = codes_of[d.within] if d.within else self.codes  # HLM3/HLM4: the unit it is centred within
            for name, v in derived_values(d, column, codes, self.centering_means.get(d.name)).items():
                out[name] = v
        return out

    levels: dict = dataclasses.field(default_factory=dict)  # text variable -> its levels (to rebuild X elsewhere)
    streamed: bool = False  # built chunk by chunk (`chunked`): the rows were not kept (y, X, Z, codes are None)
    n_rows: int = 0
    #: every grouping factor, in `spec.groups` order (default: the one of `group`, `codes`, `units`)
    groupings: tuple[Grouping, ...] = ()
    #: per random-effect term (`blocks`), the index of its factor in `groupings`
    term_grouping: tuple[int, ...] = ()
    #: a streamed design of several factors (`chunked`): its blocked summaries and their order, as
    #: `factor_summaries` gives them, added up over the chunks (the rows are not kept)
    blocked: tuple[GroupSummaries, tuple[int, ...]] | None = None
    #: a streamed design of several factors: the level pairs of each two factors and their rows
    #: (`nesting.PairCounts`), counted over the chunks in place of the rows' codes
    level_pairs: PairCounts | None = None

    def __post_init__(self) -> None:
        if not self.groupings:  # one factor (also a streamed design): the one of `codes` and `units`
            object.__setattr__(self, "groupings", (Grouping(self.group, self.codes, self.units),))
        if not self.term_grouping:
            object.__setattr__(self, "term_grouping", (0,) * len(self.blocks))

    @property
    def n_factors(self) -> int:
        """The number of grouping factors (1: a two-level model)."""
        return len(self.groupings)

    @cached_property
    def nested(self) -> tuple[tuple[str, str], ...]:
        """The (inner, outer) pairs of grouping factors with every level of inner in one level of
        outer (`nesting.nesting`): (('class:school', 'school'),) for (1 | school/class); factors in
        no pair are crossed. Empty for one factor."""
        return nesting(self.groupings, self.level_pairs) if self.n_factors > 1 else ()

    def factor_blocks(self, f: int) -> tuple[int, ...]:
        """The Z columns of grouping factor f: those of its terms' blocks, in order."""
        return tuple(c for b, g in zip(self.blocks, self.term_grouping) if g == f for c in b)

    def factor_summaries(self) -> tuple[GroupSummaries, tuple[int, ...]]:
        """The blocked summaries of [Z X y]'[Z X y] by grouping factor (`GroupSummaries.of_factors`:
        each factor's terms' Z columns, its codes and levels; terms sorted by their number of
        levels, most first; `order[t]` is the index in `groupings` of summaries term t), in the
        internal coordinates of the one-factor pass (X and y shifted by `coords`; Z as the data
        have it unless a random slope was shifted, which only a one-factor design does). A streamed
        design gives those it added up over the chunks (`blocked`)."""
        if self.blocked is not None:
            return self.blocked
        columns = self.rows_columns("The summaries by grouping factor")
        if self.weights is not None or self.precision_weights is not None:
            raise SpecificationError("The summaries by grouping factor take no weights.")
        Z = columns.internal_matrix(range(columns.q))
        X = columns.internal_matrix(range(columns.q, columns.q + columns.p))
        y = columns.internal_column(columns.k - 1)
        Zs = tuple(Z[:, list(self.factor_blocks(f))] for f in range(self.n_factors))
        return GroupSummaries.of_factors(
            Zs, X, y, tuple(g.codes for g in self.groupings), tuple(g.n_levels for g in self.groupings),
            tuple(g.name for g in self.groupings),
        )

    @property
    def n_obs(self) -> int:
        return self.n_rows if self.columns is None else self.columns.n

    # The whole matrices, built on first use (the fit itself needs only the one pass).
    @property
    def y(self) -> np.ndarray | None:
        return None if self.columns is None else self.columns.y

    @property
    def X(self) -> np.ndarray | None:
        return None if self.columns is None else self.columns.X

    @property
    def Z(self) -> np.ndarray | None:
        return None if self.columns is None else self.columns.Z

    def summaries(self) -> GroupSummaries:
        """The per-unit cross-products: the one pass over the rows (`columns.Columns.summaries`), of
        the one grouping factor (several: `factor_summaries`)."""
        if self.n_factors > 1:
            names = ", ".join(g.name for g in self.groupings)
            raise SpecificationError(
                f"This model has {self.n_factors} grouping factors ({names}); the per-unit summaries are of one. "
                "Fits of nested and crossed groupings are not supported yet by this path (the design's "
                "factor_summaries() holds their blocks)."
            )
        columns = self.rows_columns("The one pass over the rows")
        if self.precision_weights is not None:
            return columns.summaries(self.codes, self.n_groups, precision_weights=self.precision_weights.values)
        w = self.weights
        return columns.summaries(
            self.codes, self.n_groups, None if w is None else w.row, None if w is None else w.unit
        )

    @property
    def weights_description(self) -> str:
        """Which kind of weights the fit used, and their columns ("" for none): for the reports."""
        from multilevel.data.weights import describe

        return describe(self.weights, self.precision_weights)

    def require_rows(self, what: str) -> None:
        if self.streamed:
            raise _no_rows(what)

    def rows_columns(self, what: str) -> Columns:
        """The columns of the rows used ([Z X y]); a streamed design keeps none (`require_rows`)."""
        if self.columns is None:
            raise _no_rows(what)
        return self.columns

    def rows_frame(self, what: str) -> pd.DataFrame:
        """The rows used, all columns; a streamed design keeps none (`require_rows`)."""
        if self.frame is None:
            raise _no_rows(what)
        return self.frame

    @property
    def n_groups(self) -> int:
        return len(self.units)

    @property
    def coords(self) -> Coordinates:
        """The internal coordinates of the summaries (identity when none were chosen)."""
        return self.coordinates if self.coordinates is not None else Coordinates.identity(len(self.x_names))

    @cached_property
    def group_labels(self) -> tuple[str, ...]:
        """The unit ids as text (made on first use: 60 ms for 200,000 units)."""
        return _labels(self.units)


def _no_rows(what: str) -> SpecificationError:
    return SpecificationError(
        f"{what} needs the rows, which a fit from streamed or distributed data does not keep. Fit the data "
        "in memory for it (every estimate, test and EB residual of this fit is available)."
    )


@lru_cache(maxsize=512)
def _variables(expr: str) -> frozenset[str]:
    """The columns formulaic looks up for a formulaic right-hand side (`ModelSpec.fixed_formula`):
    data columns and derived columns by name. (The data columns of a term: `ModelSpec.term_variables`.)"""
    if expr == "1":
        return frozenset()
    simple = numeric_spec(expr)
    if simple is not None:
        return frozenset(simple.variables)
    import formulaic  # here, not at import: only what `terms` cannot read needs it

    return frozenset(formulaic.Formula(expr).required_variables)


def _term_factors(term: str) -> tuple[str, ...]:
    return term_factors(term)


def _float_column(frame: pd.DataFrame):
    cache: dict[str, np.ndarray] = {}

    def column(v: str) -> np.ndarray:
        if v not in cache:
            cache[v] = frame[v].to_numpy(dtype=float)
        return cache[v]

    return column


def _check_columns(spec: ModelSpec, data: pd.DataFrame) -> list[str]:
    cols = [str(c) for c in data.columns]
    needed: dict[str, str] = {spec.outcome: "the outcome"}
    for g in spec.groups:
        for v in group_variables(g):
            needed.setdefault(v, "the grouping factor" if v == g else f"the grouping factor '{g}'")
    for t in spec.fixed:
        for v in sorted(spec.term_variables(t)):
            needed.setdefault(v, f"the fixed-effect term '{t}'")
    for r in spec.random:
        for t in r.terms:
            for v in sorted(spec.term_variables(t)):
                needed.setdefault(v, f"the random-effect term '({' + '.join(r.terms)} | {r.group})'")
    for o in spec.offsets:
        for v in o.variables:
            needed.setdefault(v, f"the offset '{o.source}'")
    clash = [c for c in cols if c in spec.derived_columns]
    if clash:
        raise DataError(
            f"The data have a column named '{clash[0]}', which is also the name of the model's derived column "
            f"'{clash[0]}'; rename the data column."
        )
    index_names = [str(n) for n in getattr(data.index, "names", []) if n is not None]
    for var, role in needed.items():
        if var not in data.columns:
            if var in index_names:
                # a frame after groupby()/set_index(): the ids are the row labels, not a column
                raise DataError(
                    f"Column '{var}' (used in {role}) is not a column of the data: it is the data's index (the row "
                    f"labels). Make it a column with df.reset_index() (or df.reset_index(level='{var}')) and fit that."
                )
            if var in spec.level2 and HLM_RANDOM_NAME.match(var):
                raise SpecificationError(hlm_random_name_message(var))
            raise DataError(
                f"Column '{var}' (used in {role}) is not in the data." + close_matches(var, cols)
                + f" The data have {len(cols)} columns: {preview(cols, 15)}."
            )
    return list(needed)


def check_derived_input(d: Derived, column) -> None:
    """The data columns of a derived column must be numbers."""
    for var in d.variables:
        x = column(var)
        if not pd.api.types.is_numeric_dtype(x) or pd.api.types.is_bool_dtype(x):
            what = "centred" if d.kind in ("group", "grand") else f"used in '{d.source}'"
            raise DataError(
                f"'{var}' is {what} but is not numeric (dtype {x.dtype}); only numbers can be {'centred' if d.kind in ('group', 'grand') else 'transformed'}."
            )


def check_within(d: Derived, constant: bool, group: str) -> None:
    """cwc(x) of a level-2 x (`constant` within every unit, to rounding) is zero in every row: refuse it."""
    if d.kind == "group" and constant:
        v = d.variables[0]
        raise DataError(
            f"cwc({v}): '{v}' is constant within every unit of '{group}' (a level-2 variable), so its within-unit "
            f"centred column is zero in every row. Use cgm({v}) (grand-mean centred) or {v} itself."
        )


def partly_missing_level2(data: pd.DataFrame, l2: list[str], codes: np.ndarray, units: np.ndarray) -> list[tuple[str, str, int, int]]:
    """(unit, variable, rows missing, rows) for each declared level-2 variable missing in some but
    not all rows of a unit (rows without a unit id are not counted)."""
    if not l2 or not codes.size:
        return []
    has = codes >= 0
    J = len(units)
    rows = np.bincount(codes[has], minlength=J)
    labels = None
    out = []
    for v in l2:
        miss = data[v].isna().to_numpy() & has
        if not miss.any():
            continue
        k = np.bincount(codes[miss], minlength=J)
        for j in np.flatnonzero((k > 0) & (k < rows)):
            labels = labels or _labels(units)
            out.append((labels[j], v, int(k[j]), int(rows[j])))
    return out


def check_partly_missing_level2(partial: list[tuple[str, str, int, int]], group: str) -> None:
    """Refuse level-2 values missing in some but not all rows of a unit (`partly_missing_level2`)."""
    if partial:
        shown = [f"{u} ({v}: missing in {k} of its {n} rows)" for u, v, k, n in partial]
        raise DataError(
            f"{len(partial)} unit{'s' if len(partial) > 1 else ''} of '{group}' {'have' if len(partial) > 1 else 'has'} a "
            f"level-2 value missing in only some of its rows: {preview(shown)}. A level-2 variable is constant within "
            "its unit, so a value missing in some rows only suggests a data problem (a bad merge, or a unit-level "
            "value entered row by row): check those units. HLM refuses missing level-2 data; fill the values in, or "
            "pass level2_missing='drop' to leave the whole unit out (all its rows; the data report lists them)."
        )


def partly_missing_notes(partial: list[tuple[str, str, int, int]], group: str) -> tuple[str, ...]:
    """The data report's notes on units dropped under level2_missing='drop' whose level-2 value
    was missing in only some rows."""
    return tuple(
        f"Unit {u} of '{group}': the level-2 variable '{v}' is missing in {k} of its {n} rows only (a level-2 "
        f"variable should be constant within the unit: check the data); the whole unit ({n} rows) was dropped "
        "under level2_missing='drop', HLM's rule."
        for u, v, k, n in partial
    )


def check_some_rows(report: DataReport) -> None:
    if report.n_rows_used == 0:
        raise DataError("No row has all of the model's variables; every row has a missing value: " + str(report))


def check_numeric_outcome(dtype, outcome: str) -> None:
    if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        raise DataError(
            f"The outcome '{outcome}' is not numeric (dtype {dtype}). A linear mixed model "
            "needs a numeric outcome: convert it, e.g. with pd.to_numeric."
        )


def check_two_units(J: int, group: str) -> None:
    if J < 2:
        raise DataError(
            f"The grouping factor '{group}' has {J} unit(s) in the rows used; a multilevel "
            "model needs at least two (and in practice many more)."
        )


def check_random_slopes_vary(z_names, z_factors, codes: np.ndarray, n_groups: int, group: str) -> None:
    """Refuse a random slope whose column is constant within every unit (a level-2 variable) beside
    a random intercept: within unit j it adds z_j b_j to every row, which is a shift of the unit's
    intercept, so the two variances (and their covariance) are not identified. The likelihood is
    flat along a ridge; the optimiser stops anywhere on it (correlation -1, a negative Hessian
    eigenvalue, NaN reliabilities). lme4 fits it without a word; HLM has no such model (a level-2
    variable is not a level-1 coefficient). A column constant within most but not all units is
    identified (by the units where it varies) and kept."""
    if INTERCEPT not in z_names:
        return
    for name, factors in zip(z_names, z_factors):
        if name == INTERCEPT or not factors:
            continue
        z = factors[0] if len(factors) == 1 else np.prod(np.vstack(factors), axis=0)
        if not _array_varies(z, codes, n_groups, 1e-10) and float(np.max(np.abs(z), initial=0.0)) > 0:
            raise random_slope_error(name, group)


def random_slope_error(name: str, group: str) -> DataError:
    return DataError(
        f"The random slope of '{name}' on '{group}': '{name}' is constant within every unit of '{group}' (a "
        f"level-2 variable), so its random slope shifts each unit's outcome by a constant and cannot be told "
        f"from the random intercept; its variance and correlation are not identified. Remove '{name}' from the "
        f"random part (e.g. (1 | {group}) in a formula; no 'u' in its level-2 equation in fit_levels) and keep "
        f"it as a fixed effect (a level-2 predictor of the intercept)."
    )


def level_centring_state(d: Derived, x: np.ndarray, groupings: dict[str, Grouping]) -> np.ndarray | float:
    """The centring state of cwc(x)/cgm(x) written at a level of an HLM3/HLM4 model (`Derived.within`,
    `Derived.counted`; `level_equations.THREE_LEVEL_DOC`), from x on the rows used:

    - cwc(x) of a level-1 x: the means of x over the rows of each unit of `within` (its level-2 unit);
    - cwc(w) of a level-2 w (HLM's group-mean centring at level 2): per level-3 unit k of `within`,
      the mean of w_jk over its level-2 units j of `counted`, each counted once: sum_j w_jk / J_k;
    - cgm(w) of a level-2 (level-3) w: the mean over all level-2 (level-3) units, each counted once:
      sum_jk w_jk / J (HLM's grand mean of a predictor in its own level's file).

    A variable counted per unit must be constant within those units (it is a predictor of that
    level): refused otherwise, naming a unit where it varies."""
    if d.counted:
        g = groupings[d.counted]
        n = np.bincount(g.codes, minlength=g.n_levels)
        lo = np.full(g.n_levels, np.inf)
        hi = np.full(g.n_levels, -np.inf)
        np.minimum.at(lo, g.codes, x)
        np.maximum.at(hi, g.codes, x)
        scale = max(float(np.max(np.abs(x), initial=0.0)), 1e-300)
        bad = np.flatnonzero(hi - lo > 1e-12 * scale)
        if bad.size:
            raise DataError(
                f"{d.source}: '{d.variables[0]}' is centred as a predictor of the units of '{d.counted}' (its value "
                f"counted once per unit, as HLM centres it in that level's file), but it varies within {bad.size} of them "
                f"(e.g. {_labels(g.units)[bad[0]]}: from {lo[bad[0]]:g} to {hi[bad[0]]:g}). Put it in the equations of "
                "the level where it varies, or check the data."
            )
        per_unit = np.bincount(g.codes, weights=x, minlength=g.n_levels) / n
        if d.kind == "grand":
            return float(per_unit.mean())
        w = groupings[d.within]
        w_of_unit = np.empty(g.n_levels, dtype=np.intp)
        w_of_unit[g.codes] = w.codes  # `counted` is nested in `within` (the levels of the model)
        return np.bincount(w_of_unit, weights=per_unit, minlength=w.n_levels) / np.bincount(w_of_unit, minlength=w.n_levels)
    if d.kind == "grand":
        return float(x.mean())
    w = groupings[d.within]
    return np.bincount(w.codes, weights=x, minlength=w.n_levels) / np.bincount(w.codes, minlength=w.n_levels)


def _center(spec: ModelSpec, data: pd.DataFrame, codes: np.ndarray, n_groups: int, group: str = "",
            groupings: tuple[Grouping, ...] = ()) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """The derived columns of `spec` (`cwc(x)`, `cgm(x)`, `I(x^2)`, `poly(...)`, ...) on the rows used,
    named as the model names them; the data are not copied. Returns them and the state of each
    stateful one (unit means, the grand mean, scale's (mean, sd), poly's coefficients) by name.
    `groupings`: every factor, for the centrings of HLM3/HLM4 level equations (`level_centring_state`)."""
    columns: dict[str, np.ndarray] = {}
    state: dict[str, object] = {}
    column = _column_cache(data)
    floats = _float_column(data)
    counts = np.bincount(codes, minlength=n_groups) if any(d.kind in ("group", "grand") for d in spec.derived) else None
    by_name = {g.name: g for g in groupings}
    for d in spec.derived:
        check_derived_input(d, column)
        if d.within or d.counted:
            st_level = level_centring_state(d, floats(d.variables[0]), by_name)
            values = derived_values(d, floats, by_name[d.within].codes if d.within else None, st_level)
            raw = floats(d.variables[0])
            if d.kind == "group" and np.all(np.abs(values[d.name]) <= 1e-12 * max(float(np.max(np.abs(raw), initial=0.0)), 1e-300)):
                v = d.variables[0]
                raise DataError(
                    f"{d.source}: '{v}' is constant within every unit of '{d.within}', so centred at those units' means it "
                    f"is zero in every row (it is a variable of that level or above). Use cgm({v}) (grand-mean centred) "
                    f"or {v} itself, in the equations of its own level."
                )
            columns.update(values)
            state[d.name] = st_level
            continue
        st = derived_state(d, floats, codes, n_groups, counts)
        values = derived_values(d, floats, codes, st)
        if d.kind == "group":
            raw = floats(d.variables[0])
            check_within(d, bool(np.all(np.abs(values[d.name]) <= 1e-12 * max(float(np.max(np.abs(raw), initial=0.0)), 1e-300))), group)
        columns.update(values)
        if st is not None:
            state[d.name] = st
    return columns, state


def _offset(spec: ModelSpec, data: pd.DataFrame, codes: np.ndarray) -> np.ndarray | None:
    """The sum of the offsets on the rows used (None without)."""
    if not spec.offsets:
        return None
    column = _column_cache(data)
    floats = _float_column(data)
    total = np.zeros(len(data))
    for o in spec.offsets:
        check_derived_input(o, column)
        total = total + derived_values(o, floats, codes, None)[o.name]
    return total


def _varies(values: pd.Series, codes: np.ndarray, n_groups: int) -> bool:
    """Whether `values` differs within some unit (numbers: beyond rounding, 1e-12 relative); for a
    level-1 variable this stops after a few rows (`rowpass.varies`)."""
    # (the rows used have no missing values; numpy numbers told by their kind, no pandas type tests)
    dt = values.dtype
    if (isinstance(dt, np.dtype) and dt.kind in "iuf") or (
            pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
        return _array_varies(values.to_numpy(dtype=float), codes, n_groups, 1e-12)
    # other values (text, categories, booleans): their codes (missing a value of its own) compared exactly
    value_codes = pd.factorize(values, use_na_sentinel=False)[0]
    return _array_varies(value_codes.astype(float), codes, n_groups, 0.0)


def _array_varies(x: np.ndarray, codes: np.ndarray, n_groups: int, tol: float) -> bool:
    """Whether x differs within some unit by more than `tol` relative (`rowpass.varies`: the
    compiled early-stopping test, a few rows when it does)."""
    x = np.ascontiguousarray(x, dtype=float)
    return bool(kernel("varies")(codes, x, np.empty(n_groups), np.zeros(n_groups, dtype=np.bool_), tol))


def check_unit_predictors(spec: ModelSpec, groupings, column) -> None:
    """A predictor that level equations write for the units of a factor (`ModelSpec.unit_predictors`)
    must be constant within one of them: a school variable in a level-3 equation, a row or a column
    variable in HCM2's row-and-column equations. Otherwise it is refused (as HLM, whose level files
    hold one value per unit), naming units where it varies, instead of moved to level 1 silently."""
    by_name = {g.name: g for g in groupings}
    for var, factors in spec.unit_predictors:
        for v in sorted(spec.factor_variables(var)):
            where = []
            for name in factors:
                g = by_name.get(name)
                if g is None:
                    break
                units = _varying_groups(column(v), g.codes, _labels(g.units))
                if not units:
                    break  # constant within this factor's units
                where.append(f"{len(units)} units of '{name}' ({preview(units, 3)})")
            else:
                if not where:
                    continue
                if len(factors) == 1:
                    raise DataError(
                        f"'{v}' is written in the level equations of the units of '{factors[0]}' but varies within "
                        f"{where[0]}: a predictor at that level has one value per unit (HLM's level files hold one "
                        f"record per unit). Write it at the level where it varies (the level-1 model for a variable "
                        f"that varies between rows), or use its unit means."
                    )
                raise DataError(
                    f"'{v}' is written in the row-and-column equations but varies within {' and within '.join(where)}: "
                    f"a row predictor has one value per row, a column predictor one per column. Move it to the level-1 "
                    f"model, or use its row or column means."
                )


def _varying_groups(values: pd.Series, codes: np.ndarray, labels: tuple[str, ...]) -> list[str]:
    """The units in which `values` is not constant (numbers: max - min per unit, beyond rounding)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and not values.hasnans:
        x = values.to_numpy(dtype=float)
        lo, hi = group_ranges(codes, x, len(labels))
        return varying_from_ranges(lo, hi, labels)
    nun = pd.Series(values.to_numpy()).groupby(codes).nunique(dropna=False)
    return [labels[i] for i in nun.index[nun.to_numpy() > 1]]


def varying_from_ranges(lo: np.ndarray, hi: np.ndarray, labels) -> list[str]:
    """The units whose range hi - lo (per unit) is beyond rounding: 1e-12 of the largest |value|."""
    tol = 1e-12 * max(float(np.max(np.abs(np.concatenate([lo, hi])), initial=0.0)), 1e-300)
    return [str(labels[i]) for i in np.flatnonzero(hi - lo > tol)]


def _model_matrix(rhs: str, data: pd.DataFrame, what: str) -> pd.DataFrame:
    # rhs holds only backticked look-ups and C(x) (`expressions`); an empty context keeps formulaic
    # from reaching this module's names
    import formulaic  # here, not at import: a model of numeric columns does not need it (`terms`)

    try:
        mm = formulaic.model_matrix(rhs, data, na_action="raise", context={})
    except Exception as exc:
        raise SpecificationError(f"Cannot build the {what} from '{rhs}': {plain_message(exc)}") from exc
    return mm


def check_rank(XtX: np.ndarray, names: tuple[str, ...], coords: Coordinates | None = None) -> None:
    """Name the fixed-effect columns that are zero, constant, or linear combinations of earlier
    ones, from the Gram matrix X'X (sum_j X_j'X_j of the summaries: no pass over the rows), in
    the summaries' coordinates (`coordinates`: column c shifted by shift[c])."""
    p = XtX.shape[0]
    if p == 0:
        return
    shift = coords.shift if coords is not None else np.zeros(p)
    d = np.diag(XtX).copy()
    for j in range(p):
        if d[j] == 0:
            if shift[j] != 0:
                raise DataError(
                    f"The predictor '{names[j]}' has the same value ({shift[j]:g}) in every row used, so its effect "
                    "cannot be told apart from the intercept. Remove it from the model (or check the rows selected)."
                )
            raise DataError(f"The fixed-effect column '{names[j]}' is zero in every row used; remove it.")
    if INTERCEPT in names:
        i0 = names.index(INTERCEPT)
        n = XtX[i0, i0]
        for j, name in enumerate(names):
            if j == i0:
                continue
            mean = XtX[i0, j] / n
            # the spread around the mean, relative to the sum of squares: zero up to rounding
            if d[j] - n * mean * mean <= 1e-13 * d[j]:
                raise DataError(
                    f"The predictor '{name}' has the same value ({mean + shift[j]:g}) in every row used, so its effect cannot "
                    "be told apart from the intercept. Remove it from the model (or check the rows selected)."
                )
    # Columns in their order, each kept when it adds to the rank of those kept before it (the
    # scaled Gram matrix's smallest eigenvalue stays clear of rounding), so that the later of two
    # dependent columns is the one named, whatever the rounding of the sums.
    scale = np.sqrt(d)
    R = XtX / np.outer(scale, scale)
    # Full rank, the usual case, in one eigen-decomposition: the eigenvalues of a leading block
    # interlace those of R (Cauchy), so each block's smallest is at least R's and its largest at
    # most R's; with R's smallest twice the threshold (a margin far beyond the rounding of the
    # eigenvalues), the loop below would keep every column.
    ev = np.linalg.eigvalsh(R)
    if ev[0] > 2e-12 * max(1.0, ev[-1]):
        return
    kept: list[int] = []
    dependent: list[int] = []
    for j in range(p):
        trial = kept + [j]
        ev = np.linalg.eigvalsh(R[np.ix_(trial, trial)])
        (kept if ev[0] > 1e-12 * max(1.0, ev[-1]) else dependent).append(j)
    rank = len(kept)
    if rank < p:
        raise DataError(
            "The fixed effects are collinear: "
            + ", ".join(f"'{names[j]}'" for j in dependent)
            + (" is a linear combination" if len(dependent) == 1 else " are linear combinations")
            + " of the other columns ("
            + ", ".join(f"'{names[j]}'" for j in kept)
            + "). Remove or recode one of them."
        )


def _classify(
    spec: ModelSpec,
    structure,
    varying,
    z_names: tuple[str, ...],
    varies=None,
) -> tuple[Coefficient, ...]:
    """Split each fixed-effect column into (level-1 coefficient, level-2 predictor).

    A factor of a term is level-2 when all its variables are constant within every unit; the
    product of the other factors is the level-1 coefficient it belongs to (HLM's B_q), the product
    of the level-2 factors its predictor (HLM's W_s, or INTRCPT2).
    """
    level_of: dict[str, int] = {}

    def is_level2(var: str) -> bool:
        if var not in level_of:
            level_of[var] = 1 if (varies(var) if varies else varying(var)) else 2
        return level_of[var] == 2

    for var in sorted(spec.level2):
        for v in sorted(spec.factor_variables(var)):
            units = varying(v) if (varies is None or varies(v)) else []
            if units:
                raise DataError(
                    f"'{v}' is given as a level-2 predictor but varies within {len(units)} units "
                    f"({preview(units)}). A level-2 predictor must be constant within each unit: "
                    "use its unit mean or move it to the level-1 model."
                )
    coef_cols: dict[str, list[int]] = {}
    coef_preds: dict[str, list[str]] = {}
    col = 0
    for entry in structure:
        term, columns = str(entry.term), list(entry.columns)
        factors = _term_factors(term)
        # a derived column is level-2 when its variables are (cwc(x) never is: it varies within units)
        lvl2 = [
            all(is_level2(v) for v in spec.factor_variables(f)) and bool(spec.factor_variables(f))
            and getattr(spec.derived_columns.get(f), "kind", "") != "group"
            for f in factors
        ]
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

    def predictor_centering(w: str) -> str:
        d = spec.derived_columns.get(w)
        if d is None or d.kind != "grand":
            return ""
        return "units" if d.over_units else "grand"

    names = list(dict.fromkeys([*z_names, *coef_cols]))
    return tuple(
        Coefficient(
            name=n,
            random=n in z_names,
            columns=tuple(coef_cols.get(n, ())),
            predictors=tuple(coef_preds.get(n, ())),
            centering=centre.get(n),
            predictor_centering=tuple(predictor_centering(w) for w in coef_preds.get(n, ())),
        )
        for n in names
    )


def build_design(
    spec: ModelSpec,
    data: pd.DataFrame,
    level2_vars: tuple[str, ...] = (),
    level2_missing: str = "error",
    join: JoinReport | None = None,
    weights: SamplingWeights | None = None,
    precision_weights: str | None = None,
) -> Design:
    """Check the data against the spec and build the numeric design (see module doc).

    `level2_vars`: the variables of a level-2 table (see `join`); with those declared level-2 in
    the level equations they follow the level-2 missing-data rule (`data_checks`)."""
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    check_duplicate_columns(data)
    groups = spec.groups
    check_several_factors(spec, level2_vars, join, weights, precision_weights)
    group = groups[0]
    id_columns = spec.grouping_columns  # every column a grouping factor reads (the first factor's first)
    # the id columns that are ids only (a further factor's column may also be a predictor, `sector`)
    predictors = {v for t in (*spec.fixed, *(t for r in spec.random for t in r.terms)) for v in spec.term_variables(t)}
    ids_only = {c for c in id_columns if c == id_columns[0] or c not in predictors}
    plain_group = group_variables(group) == (group,)  # the first factor is a column, not an interaction
    variables = _check_columns(spec, data)
    for w in weights.columns if weights else []:
        if w not in data.columns:
            raise DataError(f"The weight column '{w}' is not in the data." + close_matches(w, [str(c) for c in data.columns]))
        if w not in variables:
            variables.append(w)
    if precision_weights is not None:
        if precision_weights not in data.columns:
            raise DataError(
                f"The precision weight column '{precision_weights}' is not in the data."
                + close_matches(precision_weights, [str(c) for c in data.columns])
            )
        if precision_weights not in variables:
            variables.append(precision_weights)  # a missing weight drops its row listwise (lme4's na.omit)
    for w in weights.columns if weights else []:
        # before the value checks: a text weight is refused as a weight, not taken for a factor
        col = data[w]
        check_weight_column(col if plain_column(col) is None else plain_column(col), w)  # rows named as in the input
    column = _column_cache(data)
    id_codes: list = []  # a text id's codes, made by the checks (`join.normalise_ids`)
    checked, missing, notes = check_values(data, variables, spec.outcome, id_columns[0], column, id_codes=id_codes,
                                           other_groups=id_columns[1:])
    if checked is not data:  # columns were made plain (dtypes, blank ids, numbers in an object column)
        data, column = checked, _column_cache(checked)
    if precision_weights is not None:
        check_precision_column(data[precision_weights], precision_weights)  # rows named as in the input
    zero_weight = 0
    if weights is not None:
        if weights.level1 is not None:
            zero = (data[weights.level1] == 0).to_numpy()
            zero_weight = int(zero.sum())
            if zero_weight:
                attrs = dict(data.attrs)
                data = data.loc[~zero]
                data.attrs.update(attrs)
                column = _column_cache(data)
                id_codes = []  # those were the codes of all rows
    check_numeric_outcome(column(spec.outcome).dtype, spec.outcome)
    declared = {v for expr in spec.level2 for v in spec.factor_variables(expr)}
    l2 = [v for v in variables if v not in id_columns and (v in set(level2_vars) or v in declared)]
    if plain_group:
        codes_in, units_in = unit_codes(column(group), group, id_codes[0] if id_codes else None)
    else:
        codes_in, units_in = factor_codes(group, column)
    partial = partly_missing_level2(data, l2, codes_in, units_in)
    if level2_missing == "error":
        check_partly_missing_level2(partial, group)
    used, report, codes, uniques = select_rows(data, variables, group, l2, level2_missing, join, codes_in, units_in, missing, notes)
    # Row-level outputs carry the input's own index of the rows used; inside, rows are numbered 0..N-1.
    row_index = used.index
    if not (isinstance(row_index, pd.RangeIndex) and row_index.start == 0 and row_index.step == 1):
        used = used.reset_index(drop=True)
    if partial:  # level2_missing="drop": the whole unit went (HLM's rule); say that only some rows lacked it
        report = dataclasses.replace(report, notes=report.notes + partly_missing_notes(partial, group))
    if zero_weight:
        report = dataclasses.replace(report, n_rows_in=report.n_rows_in + zero_weight, zero_weight_rows=zero_weight)
    check_some_rows(report)
    if used is not data:  # rows were dropped: other columns
        column = _column_cache(used)
    used, dropped_levels = _drop_unused_categories(used, [v for v in variables if v not in ids_only], column)
    if dropped_levels:
        column = _column_cache(used)
        report = dataclasses.replace(report, notes=report.notes + tuple(dropped_levels))
    J = len(uniques)
    groupings: tuple[Grouping, ...] = (Grouping(group, codes, uniques),)
    for name in groups[1:]:
        groupings += (Grouping(name, *factor_codes(name, column)),)
    for g in groupings:
        check_two_units(g.n_levels, g.name)
        check_units(g.n_levels, report.n_rows_used, g.name)
    if len(groupings) > 1:
        check_distinct(groupings)
        check_unit_predictors(spec, groupings, column)
        report = dataclasses.replace(
            report, factor_units=tuple((g.name, g.n_levels) for g in groupings),
            notes=report.notes + implicit_nesting_notes(groupings, spec.groups),
        )
    centred, centering_means = _center(spec, used, codes, J, group, groupings)
    offset = _offset(spec, used, codes)
    x_rhs = spec.fixed_formula()
    z_rhs = [spec.random_formula(t) for t in spec.random]
    numeric = [_numeric_columns(rhs, used, column, centred) for rhs in (x_rhs, *z_rhs)]
    if all(n is not None for n in numeric):
        # every column is a product of numeric variables: recipes over the data's own arrays
        arrays: dict[str, np.ndarray] = {}

        def factor(v: str) -> np.ndarray:
            if v not in arrays:
                arrays[v] = centred[v] if v in centred else column(v).to_numpy(dtype=float)
            return arrays[v]

        x_names = tuple(name for name, _ in numeric[0][0])
        x_factors = [tuple(factor(v) for v in fs) for _, fs in numeric[0][0]]
        structure, x_model_spec = numeric[0][1].structure, numeric[0][1]
        z_groups = [([name for name, _ in n[0]], [tuple(factor(v) for v in fs) for _, fs in n[0]]) for n in numeric[1:]]
    else:
        mframe = used.assign(**centred) if centred else used
        x_mm = _model_matrix(x_rhs, mframe, "fixed-effects design")
        X = np.asarray(x_mm.to_numpy(dtype=float))
        x_names = tuple(str(c) for c in x_mm.columns)
        x_factors = [(X[:, c],) for c in range(X.shape[1])]
        structure, x_model_spec = x_mm.model_spec.structure, x_mm.model_spec
        z_groups = []
        for rhs, term in zip(z_rhs, spec.random):
            zm = _model_matrix(rhs, mframe, f"random-effects design of '{rhs} | {term.group}'")
            Zt = zm.to_numpy(dtype=float)
            z_groups.append(([str(c) for c in zm.columns], [(Zt[:, c],) for c in range(Zt.shape[1])]))
    blocks: list[tuple[int, ...]] = []
    z_names: list[str] = []
    z_factors: list = []
    term_grouping = tuple(groups.index(t.group) for t in spec.random)
    for (names, factors), term, f in zip(z_groups, spec.random, term_grouping):
        # a factor's random effects are named once (the same name on two factors is two effects)
        mine = {z_names[c] for b, g in zip(blocks, term_grouping) if g == f for c in b}
        dup = set(names) & mine
        if dup:
            raise SpecificationError(
                f"The random effect(s) {', '.join(sorted(dup))} of '{term.group}' appear in two terms; "
                "keep each in one term."
            )
        blocks.append(tuple(range(len(z_names), len(z_names) + len(names))))
        z_names.extend(names)
        z_factors.extend(factors)

    for f, g in enumerate(groupings):
        cols = [c for b, t in zip(blocks, term_grouping) if t == f for c in b]
        check_random_slopes_vary([z_names[c] for c in cols], [z_factors[c] for c in cols], g.codes, g.n_levels, g.name)
    if len(groupings) > 1:
        coefficients: tuple[Coefficient, ...] = ()  # HLM's level form is of one grouping (`Design` doc)
    else:
        coefficients = _classify(
            spec, structure, lambda v: _varying_groups(column(v), codes, _labels(uniques)), tuple(z_names),
            varies=lambda v: _varies(column(v), codes, J),
        )
    y = column(spec.outcome).to_numpy(dtype=float)
    check_outcome(y, spec.outcome)
    warn_outcome_kind(y, spec.outcome)
    if offset is not None:
        y = y - offset  # lme4: y = X beta + Z b + offset + e; fitted values add it back
    columns = Columns(tuple(z_factors) + tuple(x_factors) + ((y,),), len(z_names), len(x_names), int(y.shape[0]))
    # several factors: no random slope is shifted (a shift is the same model only within a term
    # with the intercept of the one factor the coordinates know; `coordinates`)
    coordinates, maps = choose_coordinates(columns, x_names, tuple(z_names), spec.outcome, INTERCEPT,
                                           tuple(blocks) if len(groupings) == 1 else ())
    columns = columns.with_affine(*maps)
    scaled = scale_weights(weights, used, codes, J, _labels(uniques)) if weights else None
    precision = None
    if precision_weights is not None:
        precision = PrecisionWeights(precision_weights, np.ascontiguousarray(column(precision_weights).to_numpy(dtype=float)))
    return Design(
        spec=spec,
        columns=columns,
        codes=codes,
        group=group,
        units=uniques,
        x_names=x_names,
        z_names=tuple(z_names),
        blocks=tuple(blocks),
        coefficients=coefficients,
        centering_means=centering_means,
        data_report=report,
        weights=scaled,
        precision_weights=precision,
        frame=used,
        row_index=row_index,
        x_model_spec=x_model_spec,
        coordinates=coordinates,
        offset=offset,
        levels={
            v: (list(column(v).cat.categories) if isinstance(column(v).dtype, pd.CategoricalDtype) else sorted(pd.unique(column(v).astype(str))))
            for v in variables
            if v not in ids_only and not pd.api.types.is_numeric_dtype(column(v))
        },
        groupings=groupings,
        term_grouping=term_grouping,
    )


def check_several_factors(spec: ModelSpec, level2_vars, join, weights, precision_weights) -> None:
    """What a model with several grouping factors (or an interaction factor) cannot take yet, each
    refused with what to do instead of computing something of the wrong factor."""
    groups = spec.groups
    several = len(groups) > 1
    interaction = any(group_variables(g) != (g,) for g in groups)
    names = ", ".join(f"'{g}'" for g in groups)
    what = f"{len(groups)} grouping factors ({names})" if several else f"the interaction grouping factor {names}"
    if several:
        cwc = [d.source for d in spec.derived if d.kind == "group" and not d.within]  # level equations name the unit
        if cwc:
            raise SpecificationError(
                f"{cwc[0]} (group-mean centring) needs one grouping factor, and this model has {what}: the unit whose "
                "mean is subtracted is not defined. With several, compute the group means of the factor you mean "
                "yourself (e.g. df['x_c'] = df['x'] - df.groupby('school')['x'].transform('mean')) and use that column."
            )
        if spec.level2:
            raise SpecificationError(f"Level equations describe one grouping factor; this model has {what}.")
        if weights is not None or precision_weights is not None:
            raise SpecificationError(
                f"Weights (sampling_weights= or precision_weights=) are not supported with {what} yet; fit it unweighted."
            )
    if (several or interaction) and (level2_vars or join is not None):
        raise SpecificationError(
            f"A level-2 table (level2=) joins by one id column; this model has {what}. Join the tables "
            "first (df.merge(level2_table, on=...)) and fit the joined rows."
        )


def factor_codes(name: str, column) -> tuple[np.ndarray, np.ndarray]:
    """(codes, units) of a grouping factor over the rows of `column` (a column look-up), -1 where
    an id is missing: a column's `unit_codes`; an interaction 'b:a' numbers the combinations of
    its columns' levels present, in R's order of b:a (the first column's levels slowest) and
    labels them '<b>:<a>' (text, each part as its own factor labels it: `_labels`)."""
    cols = group_variables(name)
    if len(cols) == 1:
        return unit_codes(column(cols[0]), cols[0])
    codes, units = unit_codes(column(cols[0]), cols[0])
    labels = np.asarray(_labels(units), dtype=object)
    for c in cols[1:]:
        codes2, units2 = unit_codes(column(c), c)
        J2 = len(units2)
        valid = (codes >= 0) & (codes2 >= 0)
        key = codes[valid].astype(np.int64) * J2 + codes2[valid]
        pairs, inverse = np.unique(key, return_inverse=True)  # sorted: the first column's levels slowest
        codes = np.full(valid.size, -1, dtype=np.intp)
        codes[valid] = inverse.ravel()
        labels = labels[pairs // J2] + ":" + np.asarray(_labels(units2), dtype=object)[pairs % J2]
    return codes, labels


def _drop_unused_categories(used: pd.DataFrame, variables: list[str], column=None) -> tuple[pd.DataFrame, list[str]]:
    """Categorical predictors lose the categories no row used has (R's droplevels(), which lme4
    needs as well): a category with no row would give a fixed-effect column of zeros. A text
    column's levels are those of the rows used already, so both give the same fit. Returns the
    frame (a shallow copy when a column changed) and a data-report note per column. `column`:
    used[v], cached (`_column_cache` of `used`)."""
    notes: list[str] = []
    out = used
    column = column or used.__getitem__
    for v in variables:
        col = column(v)
        if not isinstance(col.dtype, pd.CategoricalDtype):
            continue
        present = set(pd.unique(col.dropna()))
        unused = [c for c in col.cat.categories if c not in present]
        if not unused:
            continue
        if out is used:
            out = used.copy(deep=False)
            out.attrs = dict(used.attrs)
        out[v] = col.cat.remove_unused_categories()
        notes.append(
            f"'{v}' is a categorical column with {len(unused)} categor{'y' if len(unused) == 1 else 'ies'} no row used has "
            f"({preview([repr(c) for c in unused], 5)}): dropped from its levels (R's droplevels()), as a text column's."
        )
    return out, notes


def unit_codes(ids: pd.Series, group: str, factorized: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..J-1 of the units, in the sorted order of their ids (`pd.factorize(sort=True)`;
    -1 for a missing id). Integer ids already in order, the usual layout of grouped files, take one
    comparison pass instead of a hash table; a categorical column's codes and a text column's
    `factorized` (codes, distinct ids) made by the checks (`join.normalise_ids`) are renumbered
    in the sorted order of their distinct ids, without hashing the rows again."""
    if factorized is not None:
        codes, distinct = factorized
        return _sorted_codes(codes, distinct, np.argsort(distinct, kind="stable"))
    if isinstance(ids.dtype, pd.CategoricalDtype):
        # pd.factorize(sort=True) of a categorical: the categories in use, in the categories' order
        codes = ids.cat.codes.to_numpy().astype(np.intp)
        categories = np.asarray(ids.cat.categories)
        used = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(categories)))
        full = np.full(len(categories), -1, dtype=np.intp)
        full[used] = np.arange(used.size)
        codes = np.where(codes >= 0, full[codes], -1)
        return _whole_number_units(codes, categories[used])
    v = ids.to_numpy()
    if v.dtype.kind in "iu" and v.size > 1:
        codes = np.empty(v.size, dtype=np.intp)
        J = kernel("sorted_codes")(v, codes)
        if J > 0:
            starts = np.empty(J, dtype=np.intp)
            starts[0] = 0
            starts[1:] = np.flatnonzero(codes[1:] != codes[:-1]) + 1
            return codes, v[starts]
        lo, hi = int(v.min()), int(v.max())
        if hi - lo < 4 * v.size and np.can_cast(v.dtype, np.intp):
            # ids in a range not much wider than the rows (0..J-1, 1..J, ...): the ids present marked
            # in a table of the range, each numbered by its rank there (pd.factorize(sort=True)'s
            # codes and units, without a hash table and its sort); `codes` takes the offsets first
            np.subtract(v, lo, out=codes, dtype=np.intp)
            present = np.zeros(hi - lo + 1, dtype=np.intp)
            present[codes] = 1
            rank = np.cumsum(present) - 1
            return rank[codes], (np.flatnonzero(present) + lo).astype(v.dtype)
        codes, uniques = pd.factorize(v, sort=True)  # the same of the array, without the Series' wrapping
        return _whole_number_units(codes.astype(np.intp, copy=False), np.asarray(uniques))
    codes, uniques = pd.factorize(ids, sort=True)
    return _whole_number_units(codes.astype(np.intp, copy=False), np.asarray(uniques))


def _sorted_codes(codes: np.ndarray, distinct: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes into `distinct` renumbered so that the units are `distinct[order]` (-1 kept)."""
    rank = np.empty(order.size + 1, dtype=np.intp)
    rank[order] = np.arange(order.size)
    rank[-1] = -1  # code -1 (a missing id) indexes the last entry
    return rank[codes], distinct[order]


def _whole_number_units(codes: np.ndarray, uniques: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if uniques.dtype.kind == "f" and uniques.size and np.all(np.floor(uniques) == uniques) and np.abs(uniques).max() < 2**63:
        # whole-number ids in a float column (a CSV column with a missing id): the units 12, not 12.0,
        # as a level-2 join (`join.canonical_ids`) and an integer column name them; every whole float
        # below 2**63 is an int64 exactly (above 2**53 the float may already have lost digits when
        # the column was read: `data_checks.check_values` says so in the data report)
        uniques = uniques.astype(np.int64)
    return codes, uniques


def _labels(uniques: np.ndarray) -> tuple[str, ...]:
    if isinstance(uniques, np.ndarray) and uniques.dtype.kind in "iuf":
        return tuple(map(str, uniques.tolist()))
    if isinstance(uniques, np.ndarray) and uniques.dtype.kind in "mM":
        # dates and durations as pandas writes them ('2020-01-31 00:00:00'), as `join.canonical_ids`
        return tuple(str(u) for u in pd.Index(uniques))
    return tuple(str(u) for u in uniques)


def _column_cache(frame: pd.DataFrame):
    """frame[v], each column taken once (a DataFrame lookup costs tens of microseconds)."""
    cache: dict[str, pd.Series] = {}

    def column(v: str) -> pd.Series:
        if v not in cache:
            cache[v] = frame[v]
        return cache[v]

    return column


def _numeric_columns(rhs: str, frame: pd.DataFrame, column=None, derived: dict | None = None):
    """((column name, its factor variables), ...), formulaic's model spec) when every column
    formulaic makes from `rhs` is a product of numeric variables of `frame` or `derived` columns
    (numbers by construction); None otherwise."""
    column = column or frame.__getitem__
    derived = derived or {}
    variables = sorted(_variables(rhs))
    for v in variables:
        if v in derived:
            continue
        if v not in frame.columns:
            return None
        dt = column(v).dtype
        if isinstance(dt, np.dtype) and dt.kind in "iuf":
            continue  # numpy numbers (no pandas type tests)
        if not pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt):
            return None
    return _numeric_structure(rhs, tuple(variables))


@lru_cache(maxsize=256)
def _numeric_structure(rhs: str, variables: tuple[str, ...]):
    simple = numeric_spec(rhs, INTERCEPT)
    if simple is not None:  # column look-ups only: formulaic's structure without formulaic (`terms`)
        return tuple((e.columns[0], _term_factors(e.term)) for e in simple.structure), simple
    import formulaic

    # formulaic decides the terms, their order and names, on three rows of stand-in numbers
    dummy = pd.DataFrame({v: np.arange(1.0, 4.0) * (i + 2) for i, v in enumerate(variables)})
    try:
        mm = formulaic.model_matrix(rhs, dummy, na_action="raise", context={})
    except Exception:
        return None  # the general path raises the error with its message
    cols = []
    for entry in mm.model_spec.structure:
        factors = _term_factors(str(entry.term))
        if len(entry.columns) != 1 or any(f not in variables for f in factors):
            return None
        cols.append((str(entry.columns[0]), tuple(factors)))
    return tuple(cols), mm.model_spec
