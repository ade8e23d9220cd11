"""The design of data that are not in memory (`sources`: Parquet row groups, Dask partitions), with
the checks, messages and numbers of the in-memory design (`builder.build_design`).

The likelihood needs only the per-unit summaries, and summaries of chunks add up. Two passes:

  pass 1 (small state per chunk, combined in order): the in-memory value checks on each chunk
         (`checks.check_values`; what needs all rows is gathered as `ValueFacts` and judged once,
         `checks.judge_values`), the unit ids, rows in and used, missing values per variable, the
         unit sums of centred variables (their means are only known after the whole pass), the
         levels of text variables, and each variable's range within each unit (HLM's level of each
         predictor); then the structure (`Plan`: columns, levels, centring state, units) with the
         in-memory checks of units, rows, level-2 values and random slopes;
  pass 2 (per chunk, `prepare_chunk`): listwise deletion, centring with the pass-1 state, X and Z
         with one formulaic model spec for all chunks, and the unit summaries, added up.

A Parquet batch of numbers (integer or text ids, integer or float columns: `numeric_arrays`) skips
pandas: its columns go to numpy arrays, its ids to codes into the chunk's own units (a comparison
pass when they are in order, else one hash lookup per row), and both passes run on the arrays
(bincount, reduceat, the compiled row loops), so a pass costs about what the in-memory design
costs for the same rows. Anything else (text or category predictors, true/false, padded or
missing ids, Dask partitions) takes the general path through pandas; both give the same facts.

Several grouping factors (nested, crossed, interactions such as `schoolid:childid`; the blocked
design of `summaries`): pass 1 also keeps each factor's distinct id combinations in the rows used
(and the first factor's in the rows with its ids: the units in), from which `FactorLevels` numbers
each factor's levels as the in-memory design does (`builder.factor_codes`: sorted, the same labels
and ranef order); pass 2 (`pass2_blocks`) looks each chunk's rows up among them and adds the
chunk's blocked summaries (`GroupSummaries.of_factors`: each factor's diagonal blocks, the sparse
Z_t'Z_s by level pair), the rows of each pair of levels (the nesting facts, `nesting.PairCounts`)
and each random slope's range within each level (`builder.check_random_slopes_vary`) into
`BlockedTotal`. The design holds the total (`Design.blocked`), which `Design.factor_summaries`
gives the blocked engine. These chunks take the path through pandas.

Memory is bounded by one chunk plus O(J k^2) for the summaries (J units, k = q + p + 1 columns),
whatever the number of rows; with several factors, O(sum_t J_t k_t^2 + level pairs). The design keeps no rows, so what needs them (level-1 residuals,
effect sizes, plots) is refused for it, with the reason.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from multilevel.data.checks import (
    DataReport,
    OutcomeKind,
    ValueFacts,
    check_duplicate_columns,
    check_level2_missing,
    check_outcome,
    check_units,
    check_values,
    judge_values,
    warn_outcome_kind,
)
from multilevel.design.builder import (
    INTERCEPT,
    Design,
    Grouping,
    _check_columns,
    _classify,
    _float_column,
    _labels,
    _numeric_columns,
    check_derived_input,
    check_numeric_outcome,
    check_partly_missing_level2,
    check_several_factors,
    check_some_rows,
    check_two_units,
    check_within,
    factor_codes,
    random_slope_error,
    varying_from_ranges,
)
from multilevel.design.columns import Columns
from multilevel.design.coordinates import SAMPLE_ROWS
from multilevel.design.coordinates import choose as choose_coordinates
from multilevel.design.nesting import check_distinct, implicit_nesting_notes
from multilevel.design.sources import DaskSource, ParquetSource, Source
from multilevel.design.summaries import CrossBlock, GroupSummaries, TermBlock
from multilevel.errors import DataError, SpecificationError
from multilevel.model.expressions import centring_state, derived_values, not_finite_error
from multilevel.model.spec import ModelSpec, group_variables
from multilevel.numerics.rowpass import accumulate_into, group_ranges, kernel, mirror_upper


# ----- pass 1 ----------------------------------------------------------------------------------
@dataclass
class Pass1:
    """What pass 1 learns of the chunks seen so far; `combine` joins those of consecutive chunks."""

    facts: ValueFacts = field(default_factory=ValueFacts)
    error: DataError | None = None  # the first error of the in-memory checks on one chunk (chunks in order)
    not_finite: dict = field(default_factory=dict)  # transform -> rows used where it is not a finite number
    rows_used: int = 0
    outcome_dtype: object = None  # the dtype of a non-numeric outcome
    outcome_kind: OutcomeKind = field(default_factory=OutcomeKind)  # a 0/1 or count outcome? (`checks.warn_outcome_kind`)
    ids_in: np.ndarray = field(default_factory=lambda: np.empty(0))  # the distinct ids of the rows (with an id)
    counts: pd.Series | None = None  # rows used per id
    sums: dict = field(default_factory=dict)  # centred variable -> Series of per-unit sums, by id
    lo: dict = field(default_factory=dict)  # numeric variable -> Series of per-id minimum; text: first value
    hi: dict = field(default_factory=dict)
    varies: dict = field(default_factory=dict)  # text variable -> set of ids where it varies
    levels: dict = field(default_factory=dict)  # text variable -> its values in the rows used
    l2_rows: pd.Series | None = None  # declared level-2 variables: rows with an id, per id
    l2_missing: dict = field(default_factory=dict)  # level-2 variable -> rows missing it, per id
    # several grouping factors: per factor, its distinct id combinations in the rows used (a frame of
    # its columns); the first factor's in the rows with its ids (`keys_in`: the units in)
    keys: dict = field(default_factory=dict)
    keys_in: pd.DataFrame | None = None


class _Reduce:
    """Per-unit Series of several chunks reduced to one per unit (sum, min, max): their ids
    concatenated and factorized once for all Series on the same indexes (a chunk's statistics
    share one), then numpy's bincount and ufunc.at (a pandas group-by per statistic costs ~50x)."""

    def __init__(self) -> None:
        self.codes: dict[tuple[int, ...], tuple[np.ndarray, pd.Index]] = {}

    def __call__(self, series: list[pd.Series], how: str) -> pd.Series | None:
        if not series:
            return None
        key = tuple(id(x.index) for x in series)  # the Series are alive here: ids are not reused
        if key not in self.codes:
            index = series[0].index.append([x.index for x in series[1:]]) if len(series) > 1 else series[0].index
            codes, units = pd.factorize(index)
            self.codes[key] = codes, pd.Index(units)
        codes, units = self.codes[key]
        values = np.concatenate([x.to_numpy() for x in series])
        if how == "sum":
            total = np.bincount(codes, weights=values.astype(np.float64, copy=False), minlength=len(units))
            return pd.Series(total.astype(values.dtype) if values.dtype.kind in "iu" else total, index=units)
        out = np.full(len(units), np.inf if how == "min" else -np.inf)
        (np.minimum if how == "min" else np.maximum).at(out, codes, values.astype(np.float64, copy=False))
        return pd.Series(out, index=units)


def combine(parts: list[Pass1]) -> Pass1:
    """The pass-1 statistics of consecutive chunks, in their order: the per-unit counts, sums,
    minima and maxima concatenated and reduced once each (`_Reduce`; merging chunk by chunk would
    align two indexes of up to J units each time: quadratic in the chunks at 10^8 rows)."""
    if len(parts) == 1:
        return parts[0]
    _add = _Reduce()
    out = Pass1()
    for o in parts:
        out.facts.add(o.facts)
        out.error = out.error or o.error
        for k, v in o.not_finite.items():
            out.not_finite[k] = out.not_finite.get(k, 0) + v
        out.rows_used += o.rows_used
        out.outcome_kind = out.outcome_kind.add(o.outcome_kind)
        out.outcome_dtype = out.outcome_dtype if out.outcome_dtype is not None else o.outcome_dtype
        for k, v in o.levels.items():
            out.levels.setdefault(k, set()).update(v)
    out.ids_in = np.asarray(pd.unique(np.concatenate([o.ids_in for o in parts])))
    for k in {k for o in parts for k in o.keys}:
        out.keys[k] = _distinct([o.keys[k] for o in parts if k in o.keys])
    ins = [o.keys_in for o in parts if o.keys_in is not None]
    out.keys_in = _distinct(ins) if ins else None
    out.counts = _add([o.counts for o in parts if o.counts is not None], "sum")
    out.l2_rows = _add([o.l2_rows for o in parts if o.l2_rows is not None], "sum")
    for k in {k for o in parts for k in o.l2_missing}:
        out.l2_missing[k] = _add([o.l2_missing[k] for o in parts if k in o.l2_missing], "sum")
    for k in {k for o in parts for k in o.sums}:
        out.sums[k] = _add([o.sums[k] for o in parts if k in o.sums], "sum")
    text = {k for o in parts for k in o.varies}
    for k in {k for o in parts for k in o.lo} - text:
        out.lo[k] = _add([o.lo[k] for o in parts if k in o.lo], "min")
        out.hi[k] = _add([o.hi[k] for o in parts if k in o.hi], "max")
    for k in text:  # text variables (rare, small): a unit varies within a chunk, or its first values differ
        firsts = [o.lo[k] for o in parts if k in o.lo]
        out.varies[k] = set().union(*(o.varies.get(k, set()) for o in parts))
        both = pd.concat(firsts)
        n_first = both.groupby(level=0).nunique()
        out.varies[k] |= set(n_first.index[n_first.to_numpy() > 1])
        out.lo[k] = both[~both.index.duplicated()]
    return out


def _distinct(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The distinct rows of several frames of the same columns (id combinations)."""
    both = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return both.drop_duplicates(ignore_index=True)


def several(spec: ModelSpec) -> bool:
    """Whether the model has several grouping factors (the blocked design, `factor_levels`)."""
    return len(spec.groups) > 1


def ids_only(spec: ModelSpec) -> set[str]:
    """The id columns that are ids only, not also predictors (as `builder.build_design` tells them):
    they get no levels as text variables and no unit ranges."""
    ids = spec.grouping_columns
    predictors = {v for t in (*spec.fixed, *(t for r in spec.random for t in r.terms)) for v in spec.term_variables(t)}
    return {c for c in ids if c == ids[0] or c not in predictors}


def _numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _checked(chunk: pd.DataFrame, spec: ModelSpec, variables: list[str], group: str, facts: ValueFacts | None) -> pd.DataFrame:
    """The model's columns of a chunk as the in-memory checks leave them (`checks.check_values`:
    plain dtypes, ids normalised, numbers written as text read as numbers)."""
    check_duplicate_columns(chunk)
    sub = chunk[variables]
    checked, _, _ = check_values(sub, variables, spec.outcome, group, facts=facts if facts is not None else ValueFacts(),
                                 other_groups=spec.grouping_columns[1:])
    return checked


def _frame(chunk: Any) -> pd.DataFrame:
    """A chunk as pandas: a Parquet batch through pyarrow's `to_pandas` (as `ParquetSource.chunks`)."""
    return chunk if isinstance(chunk, pd.DataFrame) else chunk.to_pandas()



def _count_not_finite(spec: ModelSpec, floats, st: Pass1, column=None) -> None:
    """Add to `st.not_finite` the rows of this chunk where a stateless transform is not finite
    (counted over all chunks, raised once by `plan_of`, as `expressions.derived_values` does in
    memory). `column`: the chunk's column reader, to check each transform's input first."""
    for d in spec.derived:
        if not d.stateful and d.kind not in ("poly", "scale"):
            if column is not None:
                check_derived_input(d, column)
            with np.errstate(all="ignore"):
                bad = int((~np.isfinite(derived_values(d, floats, None, None, check=False)[d.name])).sum())
            if bad:
                st.not_finite[d.name] = bad


def pass1(chunk: Any, spec: ModelSpec, variables: list[str], group: str, level2: tuple[str, ...]) -> Pass1:
    """What pass 1 learns of one chunk (a DataFrame, or a Parquet batch: `numeric_arrays`; a model
    of several grouping factors takes the path through pandas)."""
    cols = numeric_arrays(chunk, variables, group) if not several(spec) else None
    if cols is not None:
        return pass1_arrays(cols, spec, variables, group, level2)
    chunk = _frame(chunk)
    st = Pass1()
    try:
        sub = _checked(chunk, spec, variables, group, st.facts)
    except DataError as e:  # raised after the pass, if no earlier chunk has one (`plan_of`)
        st.error = e
        return st
    if st.facts.not_single:
        return st
    if not _numeric(sub[spec.outcome]):
        st.outcome_dtype = sub[spec.outcome].dtype
        return st
    miss = sub.isna()
    has_id = ~miss[group].to_numpy()
    if level2:  # HLM's rule on level-2 values missing (`builder.partly_missing_level2`, `checks.select_rows`)
        ids_all = sub[group].to_numpy()[has_id]
        st.l2_rows = pd.Series(ids_all).value_counts()
        for v in level2:
            st.l2_missing[v] = pd.Series(ids_all[miss[v].to_numpy()[has_id]]).value_counts()
    keep = ~miss.any(axis=1).to_numpy()  # rows without an id too: dropped and counted, as in memory
    used = sub.loc[keep]
    ids = used[group].to_numpy()
    st.rows_used = int(keep.sum())
    st.ids_in = np.asarray(pd.unique(sub[group].dropna()))
    st.counts = used[group].value_counts()
    st.outcome_kind = OutcomeKind.of(used[spec.outcome].to_numpy(dtype=float))
    if several(spec):  # each factor's id combinations (`factor_levels`), the first's in the rows with its ids too
        for name in spec.groups:
            st.keys[name] = used[list(group_variables(name))].drop_duplicates()
        first = list(group_variables(spec.groups[0]))
        st.keys_in = sub.loc[sub[first].notna().all(axis=1).to_numpy(), first].drop_duplicates()
    for d in spec.derived:  # the centred columns' unit sums, by their names ("cwc(ses)")
        if d.kind in ("group", "grand"):
            check_derived_input(d, used.__getitem__)
            st.sums[d.name] = used[d.variables[0]].astype(float).groupby(ids).sum()
    floats = _float_column(used)
    _count_not_finite(spec, floats, st, used.__getitem__)
    skip = ids_only(spec)
    for v in variables:
        if v == group or v in skip:
            continue
        col = used[v]
        if _numeric(col):
            g = col.groupby(ids)
            st.lo[v], st.hi[v] = g.min(), g.max()
        else:
            st.levels[v] = set(pd.unique(col.astype(str)))
            g = col.astype(str).groupby(ids)
            st.lo[v] = g.first()
            nun = g.nunique()
            st.varies[v] = set(nun.index[nun.to_numpy() > 1])
    return st


@dataclass(frozen=True)
class TextIds:
    """A chunk's text ids as pyarrow's dictionary encoding gives them, without a Python string per
    row: codes into the chunk's distinct ids `units` (in order of appearance)."""

    codes: np.ndarray
    units: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows: np.ndarray) -> TextIds:
        return TextIds(self.codes[rows], self.units)

    def values(self) -> np.ndarray:
        return self.units[self.codes]


def numeric_arrays(chunk: Any, variables: list[str], group: str) -> dict[str, Any] | None:
    """The model's columns of a Parquet batch (a pyarrow RecordBatch) as numpy arrays, when the
    in-memory checks (`checks.check_values`) would leave every one as `to_pandas` makes it and
    find nothing but missing and infinite values to count: ids 64-bit integers, or text without
    blanks or surrounding spaces (`TextIds`; `join.normalise_ids` would change those), none
    missing; the other columns integers with none missing or floating-point numbers (32 or 64
    bits; a missing value is NaN, as in pandas). Else None (a pandas chunk, a Dask partition,
    text, categories, true/false, dates ...): the chunk takes the general path through pandas."""
    if isinstance(chunk, pd.DataFrame):
        return None
    import pyarrow as pa

    names = chunk.schema.names
    if len(set(names)) != len(names) or any(v not in names for v in variables):
        return None
    out: dict[str, Any] = {}
    for v in variables:
        col = chunk.column(v)
        t = col.type
        if v == group and (pa.types.is_string(t) or pa.types.is_large_string(t)) and col.null_count == 0:
            enc = col.dictionary_encode()
            units = np.asarray(enc.dictionary.to_pylist(), dtype=object)
            if any(not u or u != u.strip() for u in units):
                return None
            out[v] = TextIds(enc.indices.to_numpy().astype(np.intp), units)
            continue
        if v == group:
            ok = t == pa.int64() and col.null_count == 0
        else:
            ok = (pa.types.is_integer(t) and col.null_count == 0) or t in (pa.float32(), pa.float64())
        if not ok:
            return None
        out[v] = np.ascontiguousarray(col.to_numpy(zero_copy_only=False))
    return out


def local_units(ids: np.ndarray | TextIds) -> tuple[np.ndarray, np.ndarray, bool]:
    """(codes, units, in order) of one chunk's ids: codes 0..J_c-1 into the chunk's distinct ids.
    Ids in order (grouped files: `in order`, each unit one run of rows) take one comparison pass
    (`rowpass.sorted_codes`), others one hash lookup per row (`pd.factorize`, the units in order
    of appearance; text ids: pyarrow's dictionary encoding, `TextIds`)."""
    if isinstance(ids, TextIds):
        return ids.codes, ids.units, False
    codes = np.empty(ids.size, dtype=np.intp)
    if kernel("sorted_codes")(ids, codes) >= 0:
        return codes, ids[_run_starts(codes)], True
    codes, units = pd.factorize(ids)
    return codes.astype(np.intp, copy=False), np.asarray(units), False


def _run_starts(codes: np.ndarray) -> np.ndarray:
    """The first row of each run of equal codes."""
    if not codes.size:
        return np.empty(0, dtype=np.intp)
    return np.concatenate(([0], np.flatnonzero(codes[1:] != codes[:-1]) + 1))


def _rows_kept(cols: dict[str, np.ndarray], missing: dict[str, int]) -> np.ndarray | None:
    """The rows without a missing value (listwise deletion), or None when every row is kept."""
    gaps = [np.isnan(cols[v]) for v, k in missing.items() if k]
    return None if not gaps else ~np.logical_or.reduce(gaps)


def _nan_counts(cols: dict[str, np.ndarray]) -> dict[str, int]:
    return {v: int(kernel("nonfinite")(a)[0]) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else 0 for v, a in cols.items()}


def _floats(cols: dict[str, np.ndarray]):
    """cols[v] as float64 (made once per column)."""
    cache: dict[str, np.ndarray] = {}

    def column(v: str) -> np.ndarray:
        if v not in cache:
            cache[v] = cols[v].astype(np.float64, copy=False)
        return cache[v]

    return column


def pass1_arrays(cols: dict[str, np.ndarray], spec: ModelSpec, variables: list[str], group: str, level2: tuple[str, ...]) -> Pass1:
    """`pass1` of a chunk of numbers (`numeric_arrays`), with the same result: the per-unit
    statistics over the chunk's own units (`local_units`), by bincount and the compiled range
    loop (`rowpass.group_ranges`) instead of pandas group-bys."""
    st = Pass1()
    facts = st.facts
    n = len(cols[group])
    facts.rows = n
    for v in variables:  # `checks.missing_and_infinite`: one compiled pass per float column
        a = cols[v]
        nan, inf = kernel("nonfinite")(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else (0, 0)
        facts.missing[v] = int(nan)
        if inf:
            facts.infinite[v] = np.flatnonzero(np.isinf(a)).tolist()
    codes, units, in_order = local_units(cols[group])
    J = len(units)
    st.ids_in = units
    if level2:  # HLM's rule on level-2 values missing (every row has an id here)
        units_index = pd.Index(units)
        st.l2_rows = pd.Series(np.bincount(codes, minlength=J), index=units_index)
        for v in level2:
            gaps = codes[np.isnan(cols[v])] if facts.missing[v] else codes[:0]
            st.l2_missing[v] = pd.Series(np.bincount(gaps, minlength=J), index=units_index)
    keep = _rows_kept(cols, facts.missing)
    used = cols if keep is None else {v: a[keep] for v, a in cols.items()}
    ucodes = codes if keep is None else codes[keep]
    st.rows_used = len(ucodes)
    if in_order:  # each unit a run of rows: counts, minima and maxima by run (numpy's reduceat)
        starts = _run_starts(ucodes)
        present = ucodes[starts]
        counts = np.diff(np.append(starts, len(ucodes)))
    else:
        counts = np.bincount(ucodes, minlength=J)
        present = np.flatnonzero(counts)
        counts = counts[present]
    ids = pd.Index(units[present])
    st.counts = pd.Series(counts, index=ids)
    floats = _floats(used)
    st.outcome_kind = OutcomeKind.of(floats(spec.outcome))
    for d in spec.derived:  # the centred columns' unit sums, by their names ("cwc(ses)")
        if d.kind in ("group", "grand"):
            st.sums[d.name] = pd.Series(np.bincount(ucodes, weights=floats(d.variables[0]), minlength=J)[present], index=ids)
    _count_not_finite(spec, floats, st)
    for v in variables:
        if v == group:
            continue
        if in_order:
            x = floats(v)
            lo, hi = (np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)) if len(x) else (x, x)
        else:
            lo, hi = group_ranges(ucodes, floats(v), J)
            lo, hi = lo[present], hi[present]
        st.lo[v], st.hi[v] = pd.Series(lo, index=ids), pd.Series(hi, index=ids)
    return st


# ----- the structure -----------------------------------------------------------------------------
@dataclass
class Plan:
    """The structure of the model apart from the rows, fixed after pass 1: what pass 2 needs."""

    spec: ModelSpec
    variables: list[str]
    group: str
    ids: pd.Index  # sorted unit ids: the codes
    centring: dict  # cwc()/cgm() column -> its state (`expressions.centring_state`): unit means over codes, or a mean
    levels: dict  # text variable -> sorted levels
    x_spec: Any = None  # formulaic's ModelSpec of X
    z_specs: list = field(default_factory=list)
    numeric: list | None = None  # per part (each random term, then X): the factor variables of each column
    q: int = 0
    p: int = 0
    n_columns: int = 0
    affine: tuple | None = None  # the internal coordinates: (shift, scale) and factor centres per column (`coordinates`)
    gaps: bool = True  # some variable has a missing value (pass 1): pass 2 looks for them
    factors: list = field(default_factory=list)  # several grouping factors: each one's `FactorLevels`
    term_grouping: tuple[int, ...] = ()  # per random-effect term, its factor (`Design.term_grouping`)
    blocks: tuple[tuple[int, ...], ...] = ()  # per random-effect term, its columns of Z


def prepare_arrays(cols: dict[str, np.ndarray], plan: Plan) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`prepare_chunk` of a chunk of numbers (`numeric_arrays`; checked in pass 1, which found
    nothing that changes them): the rows used, the derived columns, and the unit codes, found by
    one hash lookup of the chunk's own units (`local_units`) among the units of pass 1."""
    codes, units, _ = local_units(cols[plan.group])
    codes = plan.ids.get_indexer(units)[codes]
    keep = _rows_kept(cols, _nan_counts(cols)) if plan.gaps else None
    used = cols if keep is None else {v: a[keep] for v, a in cols.items()}
    codes = codes if keep is None else codes[keep]
    used = dict(used)
    floats = _floats(used)
    for d in plan.spec.derived:  # derived columns under their own names (the data's stay as they are)
        with np.errstate(all="ignore"):
            for name, v in derived_values(d, floats, codes, plan.centring.get(d.name), check=True).items():
                used[name] = v
    return used, codes


def _arrays_for(chunk: Any, plan: Plan, recipes: bool = True) -> dict[str, np.ndarray] | None:
    """The chunk's columns as arrays when pass 2 can take them so: numbers only, no text levels,
    and (`recipes`) the columns of the model products of numeric variables (`Plan.numeric`)."""
    if (recipes and plan.numeric is None) or plan.levels or plan.factors:
        return None
    return numeric_arrays(chunk, plan.variables, plan.group)


def prepare_chunk(chunk: Any, plan: Plan, codes_of=None, drop: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of a chunk as the model uses them: checked as in pass 1, the rows with a missing
    value dropped (`drop`), the derived columns (centred with pass 1's state) under their own names,
    text variables as categoricals of all the levels; and the rows' unit codes (-1: no unit)."""
    sub = _checked(_frame(chunk), plan.spec, plan.variables, plan.group, None)
    used = sub.loc[~sub.isna().any(axis=1).to_numpy()].copy() if drop else sub.copy()
    codes = (codes_of or plan.ids.get_indexer)(used[plan.group])
    floats = _float_column(used)
    for d in plan.spec.derived:  # derived columns under their own names (the data's stay as they are)
        check_derived_input(d, used.__getitem__)
        with np.errstate(all="ignore"):
            for name, v in derived_values(d, floats, codes, plan.centring.get(d.name), check=drop).items():
                used[name] = v
    for var, levels in plan.levels.items():
        used[var] = pd.Categorical(used[var].astype(str).where(used[var].notna()), categories=levels)
    return used, codes


def check_streamable(spec: ModelSpec) -> None:
    """What a streamed fit cannot do yet: statistics over all rows other than means, offsets, one
    grouping factor that is an interaction; and what a model of several grouping factors cannot
    take in memory either (`builder.check_several_factors`), with its message."""
    check_several_factors(spec, (), None, None, None)
    if len(spec.groups) == 1 and group_variables(spec.groups[0]) != spec.groups:
        raise SpecificationError(
            f"Streamed and Dask fits take a model's only grouping factor as a column, not the interaction "
            f"'{spec.groups[0]}': make a column of its combinations first (interactions beside other factors stream)."
        )
    for d in spec.derived:
        if d.within or d.counted:  # the means per level-2/level-3 unit of level equations: in memory only
            raise SpecificationError(
                f"{d.source}: centring at a level of a three- or four-level model (HLM3/HLM4 level equations) is computed "
                "in memory only for now; fit the data in memory, or centre the column in the files first."
            )
        if d.stateful and d.kind not in ("group", "grand"):
            raise SpecificationError(
                f"'{d.source}' needs statistics over all rows, which a streamed or distributed fit does not compute; "
                "use cgm(x) for centring, poly(x, k, raw = TRUE) for polynomials, or fit the data in memory."
            )
    if spec.offsets:
        raise SpecificationError(
            "An offset (offset(...)) is not supported for streamed or distributed data yet; subtract it from the "
            "outcome in the files, or fit the data in memory."
        )


#: formulaic's matrices are made one at a time: Dask runs pass 2 in threads, and formulaic parses
#: its factors with `ast`, whose constructor in CPython 3.11 can fail when two threads build trees
#: at once ("SystemError: AST constructor recursion depth mismatch", cpython gh-106905)
_FORMULAIC = threading.Lock()


def chunk_columns(used: pd.DataFrame | dict[str, np.ndarray], plan: Plan) -> Columns:
    """[Z X y] of a prepared chunk (a frame, or the arrays of `prepare_arrays`): recipes over its
    arrays when every column is a product of numeric variables (as `builder.build_design` does),
    else formulaic's matrices."""
    if isinstance(used, dict) and plan.numeric is None:
        used = pd.DataFrame(used)
    if plan.numeric is not None:
        arrays: dict[str, np.ndarray] = {}

        def factor(v: str) -> np.ndarray:
            if v not in arrays:
                arrays[v] = np.asarray(used[v], dtype=float)
            return arrays[v]

        factors = [tuple(factor(v) for v in fs) for part in plan.numeric for fs in part]
        y = np.asarray(used[plan.spec.outcome], dtype=float)
        cols = Columns(tuple(factors) + ((y,),), plan.q, plan.p, len(y))
    else:
        with _FORMULAIC:
            X = np.asarray(plan.x_spec.get_model_matrix(used).to_numpy(dtype=float))
            Z = np.hstack([np.asarray(zs.get_model_matrix(used).to_numpy(dtype=float)) for zs in plan.z_specs])
        cols = Columns.of_matrices(Z, X, np.asarray(used[plan.spec.outcome], dtype=float))
    return cols if plan.affine is None else cols.with_affine(*plan.affine)


def _level2_rules(spec: ModelSpec, stats: Pass1, group: str, level2_missing: str) -> None:
    """The in-memory level-2 missing-data rules (`builder.check_partly_missing_level2`, then
    `checks.check_level2_missing`), from the per-unit counts of pass 1."""
    if stats.l2_rows is None or not stats.l2_missing:
        return
    units = stats.l2_rows.index.sort_values()
    labels = _labels(np.asarray(units))
    rows = stats.l2_rows.reindex(units).to_numpy()
    partial: list[tuple[str, str, int, int]] = []
    whole: dict[str, list[str]] = {}
    for v, m in stats.l2_missing.items():
        k = m.reindex(units, fill_value=0).to_numpy()
        partial += [(labels[j], v, int(k[j]), int(rows[j])) for j in np.flatnonzero((k > 0) & (k < rows))]
        for j in np.flatnonzero(k > 0):
            whole.setdefault(labels[j], []).append(v)
    if level2_missing == "error":
        check_partly_missing_level2(partial, group)
        check_level2_missing({u: tuple(vs) for u, vs in whole.items()})
    elif whole:
        raise SpecificationError(
            "level2_missing='drop' with units missing a level-2 value is not supported for streamed or distributed "
            "data yet; fit the data in memory, or fill the values in."
        )


def first_rows(source: Source, plan: Plan, rows: int) -> pd.DataFrame:
    """The first `rows` rows used, prepared (`prepare_chunk`), from as many chunks as hold them: the
    rows an in-memory design chooses its coordinates from (`coordinates.SAMPLE_ROWS`)."""
    parts: list[pd.DataFrame] = []
    n = 0
    if isinstance(source, ParquetSource):  # batches of about the rows wanted: pyarrow decodes no more
        source = dataclasses.replace(source, batch_rows=min(rows, source.batch_rows or rows))
    for chunk in _chunks(source):
        cols = _arrays_for(chunk, plan, recipes=False)  # the recipes are chosen on these rows
        used = (pd.DataFrame({v: a.values() if isinstance(a, TextIds) else a for v, a in prepare_arrays(cols, plan)[0].items()})
                if cols is not None else prepare_chunk(chunk, plan)[0])
        if len(used):
            parts.append(used)
            n += len(used)
        if n >= rows:
            break
    return pd.concat(parts, ignore_index=True).iloc[:rows] if len(parts) > 1 else parts[0].iloc[:rows].reset_index(drop=True)


def plan_of(spec: ModelSpec, source: Source, stats: Pass1, variables: list[str], level2_missing: str) -> tuple[Plan, Design]:
    """The structure (`Plan`) and the row-free Design from pass 1's statistics and the first rows
    used (`first_rows`), with the in-memory checks and their messages. Several grouping factors: each
    factor's levels (`factor_levels`) and its checks; the report's singletons and nesting notes
    follow from pass 2 (`blocked_design`)."""
    group = spec.grouping_columns[0]  # the first factor's (first) column: pass 1's per-unit statistics
    if stats.error is not None and not stats.facts.not_single:
        raise stats.error
    notes = judge_values(stats.facts, variables, group)
    if stats.outcome_dtype is not None:
        check_numeric_outcome(stats.outcome_dtype, spec.outcome)
    _level2_rules(spec, stats, group, level2_missing)
    counted = stats.counts if stats.counts is not None else pd.Series(dtype=float)
    ids = np.sort(np.array(list(counted.index)))
    if ids.dtype.kind == "f" and ids.size and np.all(np.floor(ids) == ids) and np.abs(ids).max() < 2**63:
        ids = ids.astype(np.int64)  # whole-number float ids are the units 12, not 12.0 (as in memory)
    ids = pd.Index(ids)
    J = len(ids)
    counts = counted.reindex(ids).to_numpy(dtype=float)
    missing = stats.facts.missing
    if several(spec):
        factors = [factor_levels(name, stats.keys[name]) for name in spec.groups]
        units_in = factor_levels(spec.groups[0], stats.keys_in).units if stats.keys_in is not None else factors[0].units
        used_units = set(map(str, factors[0].units.tolist()))
        report = DataReport(
            n_rows_in=stats.facts.rows,
            n_rows_used=stats.rows_used,
            dropped_by_variable=tuple((v, n) for v, n in missing.items() if n),
            n_units_in=len(units_in),
            n_units_used=factors[0].J,
            units_dropped=tuple(str(u) for u in units_in.tolist() if str(u) not in used_units),
            source=source.description,
            notes=notes,
            factor_units=tuple((f.name, f.J) for f in factors),
        )
        check_some_rows(report)
        for f in factors:
            check_two_units(f.J, f.name)
            check_units(f.J, stats.rows_used, f.name)
    report = report if several(spec) else DataReport(
        n_rows_in=stats.facts.rows,
        n_rows_used=stats.rows_used,
        dropped_by_variable=tuple((v, n) for v, n in missing.items() if n),
        n_units_in=len(stats.ids_in),
        n_units_used=J,
        # every unit used is a unit in: units were dropped only when there are more in
        units_dropped=tuple(str(u) for u in sorted(set(stats.ids_in.tolist()) - set(ids.tolist()), key=str))
        if len(stats.ids_in) > J else (),
        singleton_units=tuple(sorted(str(i) for i in ids[counts == 1].tolist())),
        source=source.description,
        notes=notes,
    )
    if not several(spec):
        check_some_rows(report)
        check_two_units(J, group)
        check_units(J, stats.rows_used, group)
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def unit_range(v: str) -> tuple[np.ndarray, np.ndarray]:
        if v not in ranges:
            ranges[v] = stats.lo[v].reindex(ids).to_numpy(dtype=float), stats.hi[v].reindex(ids).to_numpy(dtype=float)
        return ranges[v]

    def varying(v: str) -> list[str]:
        if v in stats.varies:
            return sorted(str(i) for i in stats.varies[v])
        if v in stats.lo:
            return varying_from_ranges(*unit_range(v), _labels(np.asarray(ids)))
        return []

    def varies(v: str) -> bool:
        """varying(v) is not empty, without naming the units (`builder.varying_from_ranges`' rule)."""
        if v in stats.varies:
            return bool(stats.varies[v])
        if v in stats.lo:
            lo, hi = unit_range(v)
            return bool(np.any(hi - lo > 1e-12 * max(float(np.max(np.abs(np.concatenate([lo, hi])), initial=0.0)), 1e-300)))
        return False

    centring: dict[str, object] = {}
    for d in spec.derived:  # the centring state from the units' sums, as in memory (`expressions.centring_state`)
        if stats.not_finite.get(d.name):
            raise not_finite_error(d, stats.not_finite[d.name])
        if d.kind == "group":
            check_within(d, not varies(d.variables[0]), group)
        if d.kind in ("group", "grand"):
            centring[d.name] = centring_state(d, stats.sums[d.name].reindex(ids).to_numpy(dtype=float), counts)
    levels = {v: sorted(lv) for v, lv in stats.levels.items() if v != spec.outcome}
    plan = Plan(spec, variables, group, ids, centring, levels, gaps=any(stats.facts.missing.values()),
                factors=factors if several(spec) else [])
    import formulaic  # here, not at import: an in-memory fit of numeric columns does not need it

    # one formulaic spec for every chunk: made on a frame holding every level of each text variable
    sample = first_rows(source, plan, SAMPLE_ROWS)
    x_mm = formulaic.model_matrix(spec.fixed_formula(), sample, na_action="raise", context={})
    plan.x_spec = x_mm.model_spec
    z_names: list[str] = []
    blocks = []
    for rhs in [spec.random_formula(t) for t in spec.random]:
        zm = formulaic.model_matrix(rhs, sample, na_action="raise", context={})
        plan.z_specs.append(zm.model_spec)
        names = [str(c) for c in zm.columns]
        blocks.append(tuple(range(len(z_names), len(z_names) + len(names))))
        z_names.extend(names)
    plan.q, plan.p = len(z_names), x_mm.shape[1]
    numeric = [_numeric_columns(rhs, sample) for rhs in [spec.random_formula(t) for t in spec.random] + [spec.fixed_formula()]]
    if all(m is not None for m in numeric):
        plan.numeric = [[fs for _, fs in m[0]] for m in numeric]
    plan.n_columns = plan.q + plan.p + 1
    plan.blocks = tuple(blocks)
    if several(spec):
        plan.term_grouping = tuple(spec.groups.index(t.group) for t in spec.random)
        _check_terms_of_factors(spec, plan.term_grouping, plan.blocks, z_names)
    if INTERCEPT in z_names and not several(spec):  # `builder.check_random_slopes_vary`: a slope of variables all level-2
        for name in z_names:
            pieces = [] if name == INTERCEPT else name.split(":")
            if any(getattr(spec.derived_columns.get(f), "kind", "") == "group" for f in pieces):
                continue  # cwc(): varies within units (`check_within` refused it otherwise)
            vs = set().union(*(spec.factor_variables(f) for f in pieces)) if pieces else set()
            if vs and all(v in stats.lo and v not in stats.varies and not varies(v) for v in vs):
                raise random_slope_error(name, group)
    # HLM's level form is of one grouping (`Design` doc)
    coefficients = () if several(spec) else _classify(spec, x_mm.model_spec.structure, varying, tuple(z_names), varies=varies)
    check_outcome(np.array([float(stats.lo[spec.outcome].min()), float(stats.hi[spec.outcome].max())]), spec.outcome)
    warn_outcome_kind(stats.outcome_kind, spec.outcome)
    # the internal coordinates (`coordinates`) from the first rows used, as in memory: any shift is exact
    x_names = tuple(str(c) for c in x_mm.columns)
    # (several factors: no random slope is shifted, as in memory)
    coordinates, plan.affine = choose_coordinates(chunk_columns(sample, plan), x_names, tuple(z_names), spec.outcome, INTERCEPT,
                                                  () if several(spec) else tuple(blocks))
    no_rows = np.empty(0, dtype=np.intp)
    groupings = tuple(Grouping(f.name, no_rows, f.units) for f in plan.factors)
    design = Design(
        spec=spec, columns=None, codes=no_rows, group=spec.groups[0],
        units=groupings[0].units if groupings else np.asarray(ids),
        x_names=x_names, z_names=tuple(z_names), blocks=tuple(blocks),
        coefficients=coefficients, centering_means=dict(centring), data_report=report,
        x_model_spec=x_mm.model_spec, streamed=True, n_rows=stats.rows_used, levels=levels,
        coordinates=coordinates, groupings=groupings, term_grouping=plan.term_grouping,
    )
    return plan, design


def _check_terms_of_factors(spec: ModelSpec, term_grouping: tuple[int, ...], blocks, z_names: list[str]) -> None:
    """A factor's random effects are named once (`builder.build_design`'s check and message)."""
    seen: dict[int, set[str]] = {}
    for term, f, block in zip(spec.random, term_grouping, blocks):
        names = [z_names[c] for c in block]
        dup = set(names) & seen.setdefault(f, set())
        if dup:
            raise SpecificationError(
                f"The random effect(s) {', '.join(sorted(dup))} of '{term.group}' appear in two terms; "
                "keep each in one term."
            )
        seen[f].update(names)


# ----- pass 2 ----------------------------------------------------------------------------------
def _chunks(source: Source) -> Iterator[Any]:
    """The chunks of a source: Parquet batches as pyarrow reads them (`numeric_arrays` takes their
    numbers without pandas), a Dask DataFrame's partitions as DataFrames."""
    return source.batches() if isinstance(source, ParquetSource) else source.chunks()


def pass2_into(chunk: Any, plan: Plan, C: np.ndarray, n: np.ndarray) -> None:
    """Add one chunk's cross-products into C (upper triangles) and its rows per unit into n."""
    cols = _arrays_for(chunk, plan)
    used, codes = prepare_arrays(cols, plan) if cols is not None else prepare_chunk(chunk, plan)
    if len(codes):
        accumulate_into(*chunk_columns(used, plan).recipe(), codes, C, counts=n)


def pass2(chunk: pd.DataFrame, plan: Plan) -> GroupSummaries:
    """One chunk's (or partition's) summaries, to be added to the others'."""
    J, k = len(plan.ids), plan.n_columns
    C, n = np.zeros((J, k, k)), np.zeros(J)
    pass2_into(chunk, plan, C, n)
    return GroupSummaries(mirror_upper(C), n, plan.q, plan.p)


# ----- several grouping factors ---------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FactorLevels:
    """A grouping factor's levels over all chunks, numbered as the in-memory design numbers them
    (`builder.factor_codes` of the factor's distinct id combinations: the same sorted levels and
    labels as over the rows), and the lookup of a chunk's rows among them (`codes`)."""

    name: str
    columns: tuple[str, ...]
    keys: pd.Index  # the distinct ids (a MultiIndex of the combinations for an interaction)
    key_codes: np.ndarray  # the level of each key
    units: np.ndarray  # the levels in the order of their codes (`builder.Grouping.units`)

    @property
    def J(self) -> int:
        return len(self.units)

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """The level of each row of `frame` (-1: ids not among the levels)."""
        if len(self.columns) == 1:
            target: pd.Index = pd.Index(frame[self.columns[0]])
        else:
            target = pd.MultiIndex.from_arrays([frame[c] for c in self.columns])
        at = self.keys.get_indexer(target)
        return np.where(at >= 0, self.key_codes[at], -1).astype(np.intp)


def factor_levels(name: str, keys: pd.DataFrame) -> FactorLevels:
    """The levels of factor `name` from its distinct id combinations (`Pass1.keys`)."""
    cols = group_variables(name)
    keys = keys.reset_index(drop=True)
    codes, units = factor_codes(name, keys.__getitem__)
    index = pd.Index(keys[cols[0]]) if len(cols) == 1 else pd.MultiIndex.from_frame(keys[list(cols)])
    return FactorLevels(name, cols, index, np.asarray(codes, dtype=np.intp), np.asarray(units))


class _KeyedSum:
    """Arrays summed by an integer key over the chunks (the sparse blocks Z_t'Z_s by level pair, the
    rows per level pair): each chunk's are listed, and merged (sorted, summed per key) when the listed
    entries outnumber the merged ones; memory O(distinct keys + a chunk's), merging O(P log P) per
    doubling of P, whatever the number of chunks."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.keys = np.empty(0, dtype=np.int64)
        self.values = np.zeros((0, *shape))
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.listed = 0

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.pending.append((keys.astype(np.int64, copy=False), values))
        self.listed += keys.size
        if self.listed > max(self.keys.size, 1 << 16):
            self.merge()

    def merge(self) -> tuple[np.ndarray, np.ndarray]:
        if self.pending:
            keys = np.concatenate([self.keys, *(k for k, _ in self.pending)])
            values = np.concatenate([self.values, *(v for _, v in self.pending)])
            order = np.argsort(keys, kind="stable")
            keys, values = keys[order], values[order]
            if keys.size:
                starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
                keys, values = keys[starts], np.add.reduceat(values, starts, axis=0)
            self.keys, self.values, self.pending, self.listed = keys, values, [], 0
        return self.keys, self.values


@dataclass
class ChunkBlocks:
    """One chunk's part of a blocked design (several grouping factors): its blocked summaries
    (`GroupSummaries.of_factors` over the chunk's rows with every factor's global levels), the rows
    of each pair of levels of each two factors (`nesting.PairCounts`), and the range of each random
    slope within each level of its factor (`builder.check_random_slopes_vary`)."""

    summaries: GroupSummaries
    order: tuple[int, ...]
    pairs: dict  # (f, g), f < g in `Design.groupings` -> (keys: level of f * J_g + level of g, rows)
    lo: list  # per factor (J_f, columns of the factor's Z) minimum within each level; hi: maximum
    hi: list


def _factor_columns(plan: Plan, f: int) -> list[int]:
    """The Z columns of factor f (`Design.factor_blocks`)."""
    return [c for b, t in zip(plan.blocks, plan.term_grouping) if t == f for c in b]


def pass2_blocks(chunk: Any, plan: Plan) -> ChunkBlocks | None:
    """One chunk's part of a blocked design (`ChunkBlocks`), or None when no row of it is used: its
    rows prepared as in pass 2 (`prepare_chunk`), each factor's levels looked up (`FactorLevels`),
    [Z X y] in the internal coordinates, as `Design.factor_summaries` takes them in memory."""
    used, _ = prepare_chunk(chunk, plan)
    if not len(used):
        return None
    codes = tuple(f.codes(used) for f in plan.factors)
    J = tuple(f.J for f in plan.factors)
    columns = chunk_columns(used, plan)
    Z = columns.internal_matrix(range(columns.q))
    X = columns.internal_matrix(range(columns.q, columns.q + columns.p))
    y = columns.internal_column(columns.k - 1)
    Zs = tuple(Z[:, _factor_columns(plan, f)] for f in range(len(J)))
    summaries, order = GroupSummaries.of_factors(Zs, X, y, codes, J, tuple(f.name for f in plan.factors))
    pairs = {}
    for f in range(len(J)):
        for g in range(f + 1, len(J)):
            keys, rows = np.unique(codes[f].astype(np.int64) * J[g] + codes[g], return_counts=True)
            pairs[(f, g)] = keys, rows.astype(float)
    raw = columns.Z  # the slopes as the data have them (the in-memory check reads those)
    lo, hi = [], []
    for f in range(len(J)):
        cols = _factor_columns(plan, f)
        lo_f, hi_f = np.full((J[f], len(cols)), np.inf), np.full((J[f], len(cols)), -np.inf)
        for i, c in enumerate(cols):
            lo_f[:, i], hi_f[:, i] = group_ranges(codes[f], np.ascontiguousarray(raw[:, c]), J[f])
        lo.append(lo_f)
        hi.append(hi_f)
    return ChunkBlocks(summaries, order, pairs, lo, hi)


class BlockedTotal:
    """The chunks' parts of a blocked design added up (`ChunkBlocks`): the diagonal blocks of each
    term in place (O(levels)), the sparse ones by level pair (`_KeyedSum`, O(level pairs))."""

    def __init__(self) -> None:
        self.first: ChunkBlocks | None = None
        self.cross: dict[tuple[int, int], _KeyedSum] = {}
        self.pairs: dict[tuple[int, int], _KeyedSum] = {}

    def add(self, part: ChunkBlocks | None) -> None:
        if part is None:
            return
        terms = part.summaries.terms
        if self.first is None:
            self.first = part
            self.C = [t.C.copy() for t in terms]
            self.n = [t.n.copy() for t in terms]
            self.lo, self.hi = part.lo, part.hi
        else:
            for t, term in enumerate(terms):
                self.C[t] += term.C
                self.n[t] += term.n
            for f in range(len(self.lo)):
                np.minimum(self.lo[f], part.lo[f], out=self.lo[f])
                np.maximum(self.hi[f], part.hi[f], out=self.hi[f])
        for t, term in enumerate(terms):
            for block in term.cross:
                acc = self.cross.setdefault((t, block.term), _KeyedSum(block.blocks.shape[1:]))
                acc.add(block.rows.astype(np.int64) * block.shape[1] + block.cols, block.blocks)
        for key, (keys, rows) in part.pairs.items():
            self.pairs.setdefault(key, _KeyedSum(())).add(keys, rows)

    def summaries(self, plan: Plan) -> tuple[GroupSummaries, tuple[int, ...]]:
        """The blocked summaries of all rows, and their order (`GroupSummaries.of_factors`)."""
        assert self.first is not None
        order = self.first.order
        first = self.first.summaries.terms
        terms = []
        for t, f in enumerate(order):
            cross = []
            for s in range(t):
                Jt, Js = plan.factors[f].J, plan.factors[order[s]].J
                keys, blocks = self.cross[(t, s)].merge() if (t, s) in self.cross else (np.empty(0, np.int64), np.zeros((0, first[t].q, first[s].q)))
                cross.append(CrossBlock(s, (keys // Js).astype(np.intp), (keys % Js).astype(np.intp), blocks, (Jt, Js)))
            terms.append(TermBlock(self.C[t], self.n[t], first[t].q, plan.factors[f].name, cross=tuple(cross)))
        return GroupSummaries.of_terms(tuple(terms)), order

    def level_pairs(self, plan: Plan) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`nesting.PairCounts` of every two factors."""
        out = {}
        for (f, g), acc in self.pairs.items():
            keys, rows = acc.merge()
            Jg = plan.factors[g].J
            out[(plan.factors[f].name, plan.factors[g].name)] = (keys // Jg, keys % Jg, rows.astype(np.int64))
        return out


def blocked_design(design: Design, plan: Plan, total: BlockedTotal) -> tuple[Design, GroupSummaries]:
    """The streamed design of several factors completed from pass 2: the random slopes checked per
    factor (`builder.check_random_slopes_vary`, from their ranges within levels), the report's
    single-row units of the first factor and its nesting notes (`nesting.implicit_nesting_notes`),
    and the blocked summaries held in the design (`Design.blocked`, what `factor_summaries` gives)."""
    if total.first is None:  # pass 1 found rows used; pass 2 must too
        raise DataError("The rows changed between the two passes over the data.")
    for f, levels in enumerate(plan.factors):
        cols = _factor_columns(plan, f)
        names = [design.z_names[c] for c in cols]
        if INTERCEPT not in names:
            continue
        for i, name in enumerate(names):
            if name == INTERCEPT:
                continue
            lo, hi = total.lo[f][:, i], total.hi[f][:, i]
            size = np.maximum(np.abs(lo), np.abs(hi))
            constant = not np.any(hi - lo > 1e-10 * size)  # `rowpass.varies`' rule, by the range of each level
            if constant and float(np.max(size, initial=0.0)) > 0:
                raise random_slope_error(name, levels.name)
    summaries, order = total.summaries(plan)
    pairs = total.level_pairs(plan)
    check_distinct(design.groupings, pairs)
    rows = summaries.terms[order.index(0)].n
    report = dataclasses.replace(
        design.data_report,
        singleton_units=tuple(sorted(str(u) for u in design.groupings[0].units[rows == 1])),
        notes=design.data_report.notes + implicit_nesting_notes(design.groupings, design.spec.groups, pairs),
    )
    return dataclasses.replace(design, data_report=report, blocked=(summaries, order), level_pairs=pairs), summaries


# ----- the driver --------------------------------------------------------------------------------
def build_streamed(spec: ModelSpec, source: Source, level2_missing: str = "error") -> tuple[Design, GroupSummaries]:
    """The row-free Design and the summaries of the rows of `source`, in two passes."""
    check_streamable(spec)
    group = spec.grouping_columns[0]
    # a column the model needs that the source lacks is named against the source's columns
    variables = _check_columns(spec, pd.DataFrame(columns=source.names))
    source = source.reading(variables)
    declared = {v for expr in spec.level2 for v in spec.factor_variables(expr)}
    level2 = tuple(v for v in variables if v != group and v in declared)
    parts: list[Pass1] = []

    def one(chunk: pd.DataFrame) -> Pass1:
        return pass1(chunk, spec, variables, group, level2)

    for st in (map(one, source.batches()) if isinstance(source, ParquetSource) else source.each(one)):
        parts.append(st)
        if len(parts) >= 32:  # reduce now and then: the parts' memory stays bounded
            parts = [combine(parts)]
    if not parts:
        raise DataError(f"{source.description} has no rows.")
    plan, design = plan_of(spec, source, combine(parts), variables, level2_missing)
    if plan.factors:  # several grouping factors: the blocked summaries (`BlockedTotal`)
        blocked = BlockedTotal()
        if isinstance(source, DaskSource):  # per partition on the workers, added on the client
            for part in source.each(lambda chunk: pass2_blocks(chunk, plan)):
                blocked.add(part)
        else:
            for chunk in _chunks(source):
                blocked.add(pass2_blocks(chunk, plan))
        return blocked_design(design, plan, blocked)
    if isinstance(source, DaskSource):  # per partition on the workers, added on the client
        sums = list(source.each(lambda chunk: pass2(chunk, plan)))
        total = sums[0]
        for s in sums[1:]:
            total = total + s
    else:  # one J x k x k array for all chunks: memory O(J k^2)
        J, k = len(plan.ids), plan.n_columns
        C, n = np.zeros((J, k, k)), np.zeros(J)
        for chunk in _chunks(source):
            pass2_into(chunk, plan, C, n)
        total = GroupSummaries(mirror_upper(C), n, plan.q, plan.p)
    return design, total
