"""Fitting data that are not in memory: chunk by chunk (Parquet row groups) or partition by
partition (Dask), with the same numbers as the in-memory fit.

The likelihood needs only the per-unit summaries, and summaries of chunks add up. Two passes:

  pass 1 (small state per chunk, combined): the unit ids, rows in and used, missing values per
         variable, the unit sums and counts of group-mean-centred variables (their means are only
         known after the whole pass: that is why centring needs its own pass), grand sums for
         grand-mean centring, the levels of text variables, and whether each variable varies
         within units (HLM's level of each predictor);
  pass 2 (per chunk): listwise deletion, centring with the pass-1 means, X and Z with one
         formulaic model spec for all chunks, and the unit summaries, added up.

Memory is bounded by one chunk plus O(J k^2) for the summaries (J units, k = q + p + 1 columns),
whatever the number of rows. The fit keeps no rows, so what needs them (level-1 residuals,
effect sizes, plots) is refused for it, with the reason; Dask fits get them from `dask_residuals`.
"""
from __future__ import annotations

import glob as globmod
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import formulaic
import numpy as np
import pandas as pd

from multilevel.data.checks import DataReport, check_units
from multilevel.data.join import canonical_ids, normalise_ids
from multilevel.design.builder import (
    INTERCEPT,
    Design,
    _check_columns,
    _classify,
    _float_column,
    _numeric_columns,
    check_derived_input,
    check_rank,
    check_within,
)
from multilevel.design.columns import Columns
from multilevel.design.coordinates import choose as choose_coordinates
from multilevel.design.summaries import GroupSummaries
from multilevel.errors import DataError, SpecificationError, preview
from multilevel.model.expressions import derived_values
from multilevel.model.spec import ModelSpec
from multilevel.numerics.rowpass import accumulate_into, mirror_upper


# ----- pass 1 ----------------------------------------------------------------------------------
@dataclass
class Pass1:
    """What pass 1 learns. Combined across chunks with `merge` (associative)."""

    rows_in: int = 0
    rows_used: int = 0
    missing: dict = field(default_factory=dict)  # variable -> rows with a missing value
    ids_in: set = field(default_factory=set)
    sums: dict = field(default_factory=dict)  # variable -> Series of per-unit sums, indexed by id
    counts: pd.Series | None = None  # rows used per id
    grand: dict = field(default_factory=dict)  # variable -> (sum, count)
    levels: dict = field(default_factory=dict)  # text variable -> set of values
    lo: dict = field(default_factory=dict)  # variable -> Series of per-id minimum (numeric) / first (text)
    hi: dict = field(default_factory=dict)
    varies: dict = field(default_factory=dict)  # text variable -> set of ids where it varies

    def merge(self, o: Pass1) -> Pass1:
        self.rows_in += o.rows_in
        self.rows_used += o.rows_used
        for k, v in o.missing.items():
            self.missing[k] = self.missing.get(k, 0) + v
        self.ids_in |= o.ids_in
        self.counts = o.counts if self.counts is None else self.counts.add(o.counts, fill_value=0)
        for k, v in o.sums.items():
            self.sums[k] = v if k not in self.sums else self.sums[k].add(v, fill_value=0)
        for k, (s, c) in o.grand.items():
            s0, c0 = self.grand.get(k, (0.0, 0))
            self.grand[k] = (s0 + s, c0 + c)
        for k, v in o.levels.items():
            self.levels.setdefault(k, set()).update(v)
        for k, v in o.lo.items():
            if k in self.varies or k in o.varies:  # text: first values; differing firsts -> varies
                a, b = self.lo.get(k), v
                self.varies.setdefault(k, set()).update(o.varies.get(k, set()))
                if a is not None:
                    common = a.index.intersection(b.index)
                    self.varies[k].update(common[a[common].astype(str).to_numpy() != b[common].astype(str).to_numpy()])
                    self.lo[k] = pd.concat([a, b[~b.index.isin(a.index)]])
                else:
                    self.lo[k] = b
            else:
                self.lo[k] = v if k not in self.lo else np.fmin(self.lo[k].reindex(self.lo[k].index.union(v.index)), v.reindex(self.lo[k].index.union(v.index)))
                h = o.hi[k]
                self.hi[k] = h if k not in self.hi else np.fmax(self.hi[k].reindex(self.hi[k].index.union(h.index)), h.reindex(self.hi[k].index.union(h.index)))
        return self


def combine(parts: list[Pass1]) -> Pass1:
    """The pass-1 statistics of many chunks at once: the per-unit counts, sums, minima and maxima
    are concatenated and reduced by one group-by each, instead of merged chunk by chunk (each
    merge aligns two indexes of up to J units: quadratic in the chunks at 10^8 rows)."""
    if len(parts) == 1:
        return parts[0]
    out = Pass1()
    for o in parts:
        out.rows_in += o.rows_in
        out.rows_used += o.rows_used
        for k, v in o.missing.items():
            out.missing[k] = out.missing.get(k, 0) + v
        out.ids_in |= o.ids_in
        for k, (sm, c) in o.grand.items():
            s0, c0 = out.grand.get(k, (0.0, 0))
            out.grand[k] = (s0 + sm, c0 + c)
        for k, v in o.levels.items():
            out.levels.setdefault(k, set()).update(v)
    counts = [o.counts for o in parts if o.counts is not None]
    out.counts = pd.concat(counts).groupby(level=0).sum() if counts else None
    for k in {k for o in parts for k in o.sums}:
        out.sums[k] = pd.concat([o.sums[k] for o in parts if k in o.sums]).groupby(level=0).sum()
    text = {k for o in parts for k in o.varies}
    for k in {k for o in parts for k in o.lo} - text:
        out.lo[k] = pd.concat([o.lo[k] for o in parts if k in o.lo]).groupby(level=0).min()
        out.hi[k] = pd.concat([o.hi[k] for o in parts if k in o.hi]).groupby(level=0).max()
    if text:  # text variables (rare, small): the pairwise merge
        rest = Pass1()
        for o in parts:
            part = Pass1(lo={k: v for k, v in o.lo.items() if k in text}, varies={k: v for k, v in o.varies.items() if k in text})
            rest.merge(part)
        out.lo.update(rest.lo)
        out.varies.update(rest.varies)
    return out


def _numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _chunk_variables(chunk: pd.DataFrame, variables: list[str], group: str) -> pd.DataFrame:
    """The model's columns of a chunk, ids normalised as in an in-memory fit (`join.normalise_ids`:
    text ids without surrounding spaces, blank ids missing)."""
    sub = chunk[variables]
    ids, _ = normalise_ids(sub[group])
    return sub if ids is sub[group] else sub.assign(**{group: ids})


def pass1(chunk: pd.DataFrame, spec: ModelSpec, variables: list[str], group: str) -> Pass1:
    sub = _chunk_variables(chunk, variables, group)
    y = sub[spec.outcome]
    if not _numeric(y):
        raise DataError(
            f"The outcome '{spec.outcome}' is not numeric (dtype {y.dtype}; values like "
            f"{', '.join(repr(x) for x in pd.unique(y.dropna())[:3])}). A linear mixed model needs a numeric outcome: "
            "write it as numbers in the files."
        )
    miss = sub.isna()
    keep = ~miss.any(axis=1).to_numpy()  # rows without an id too: dropped and counted, as in memory
    used = sub.loc[keep]
    ids = used[group]
    st = Pass1(rows_in=len(sub), rows_used=int(keep.sum()))
    st.missing = {v: int(miss[v].sum()) for v in variables if miss[v].any()}
    st.ids_in = set(pd.unique(sub[group].dropna()))
    st.counts = ids.value_counts()
    for d in spec.derived:  # the centred columns' sums, by their names ("cwc(ses)")
        if d.kind not in ("group", "grand"):
            continue
        check_derived_input(d, used.__getitem__)
        x = used[d.variables[0]].astype(float)
        if d.kind == "group" or d.over_units:  # over_units: the mean of the units' means (cgm of a level-2 w)
            st.sums[d.name] = x.groupby(ids.to_numpy()).sum()
        else:
            st.grand[d.name] = (float(x.sum()), int(x.size))
    for v in variables:
        if v == group:
            continue
        col = used[v]
        if _numeric(col):
            g = col.groupby(ids.to_numpy())
            st.lo[v], st.hi[v] = g.min(), g.max()
        else:
            st.levels[v] = set(pd.unique(col.astype(str)))
            g = col.astype(str).groupby(ids.to_numpy())
            st.lo[v] = g.first()
            nun = g.nunique()
            st.varies[v] = set(nun.index[nun.to_numpy() > 1])
    return st


# ----- pass 2 ----------------------------------------------------------------------------------
@dataclass
class Plan:
    """Everything pass 2 needs, fixed after pass 1."""

    spec: ModelSpec
    variables: list[str]
    group: str
    ids: pd.Index  # sorted unit ids: the codes
    group_means: dict  # variable -> array over codes
    grand_means: dict
    levels: dict  # text variable -> sorted levels
    x_spec: object = None
    z_specs: list = field(default_factory=list)
    numeric: list | None = None  # per part (X, then each random term): the factor variables of each column
    q: int = 0
    p: int = 0
    n_columns: int = 0
    affine: tuple | None = None  # the internal coordinates: (shift, scale) and factor centres per column (`coordinates`)


def prepare_chunk(chunk: pd.DataFrame, plan: Plan) -> tuple[pd.DataFrame, np.ndarray]:
    sub = _chunk_variables(chunk, plan.variables, plan.group)
    used = sub.loc[~sub.isna().any(axis=1).to_numpy()].copy()
    codes = plan.ids.get_indexer(used[plan.group])
    state = {**plan.group_means, **plan.grand_means}
    floats = _float_column(used)
    for d in plan.spec.derived:  # derived columns under their own names (the data's stay as they are)
        check_derived_input(d, used.__getitem__)
        for name, v in derived_values(d, floats, codes, state.get(d.name)).items():
            used[name] = v
    for var, levels in plan.levels.items():
        used[var] = pd.Categorical(used[var].astype(str), categories=levels)
    return used, codes


def random_rhs(spec: ModelSpec) -> list[str]:
    return [spec.random_formula(t) for t in spec.random]


def _check_streamable(spec: ModelSpec) -> None:
    """What a streamed fit cannot do yet: statistics over all rows other than means, offsets."""
    for d in spec.derived:
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


def chunk_columns(used: pd.DataFrame, plan: Plan) -> Columns:
    """[Z X y] of a prepared chunk: recipes over its arrays when every column is a product of
    numeric variables (as `design.build_design` does), else formulaic's matrices."""
    if plan.numeric is not None:
        arrays: dict[str, np.ndarray] = {}

        def factor(v: str) -> np.ndarray:
            if v not in arrays:
                arrays[v] = used[v].to_numpy(dtype=float)
            return arrays[v]

        factors = [tuple(factor(v) for v in fs) for part in plan.numeric for fs in part]
        y = used[plan.spec.outcome].to_numpy(dtype=float)
        cols = Columns(tuple(factors) + ((y,),), plan.q, plan.p, len(used))
        return cols if plan.affine is None else cols.with_affine(*plan.affine)
    X = np.asarray(plan.x_spec.get_model_matrix(used).to_numpy(dtype=float))
    Z = np.hstack([np.asarray(zs.get_model_matrix(used).to_numpy(dtype=float)) for zs in plan.z_specs])
    cols = Columns.of_matrices(Z, X, used[plan.spec.outcome].to_numpy(dtype=float))
    return cols if plan.affine is None else cols.with_affine(*plan.affine)


def pass2_into(chunk: pd.DataFrame, plan: Plan, C: np.ndarray, n: np.ndarray) -> None:
    """Add one chunk's cross-products into C (upper triangles) and its rows per unit into n."""
    used, codes = prepare_chunk(chunk, plan)
    if len(used) == 0:
        return
    accumulate_into(*chunk_columns(used, plan).recipe(), codes, C, counts=n)


def pass2(chunk: pd.DataFrame, plan: Plan) -> GroupSummaries:
    """One chunk's (or partition's) summaries, to be added to the others'."""
    J, k = len(plan.ids), plan.n_columns
    C, n = np.zeros((J, k, k)), np.zeros(J)
    pass2_into(chunk, plan, C, n)
    return GroupSummaries(mirror_upper(C), n, plan.q, plan.p)


# ----- the driver --------------------------------------------------------------------------------
def build(spec: ModelSpec, first: pd.DataFrame, stats: Pass1, source: str) -> tuple[Plan, Design]:
    """The plan of pass 2 and the (row-free) Design, from pass 1's statistics and one chunk."""
    group = spec.groups[0]
    _check_streamable(spec)
    variables = _check_columns(spec, first)
    if stats.rows_used == 0:
        raise DataError("No row has all of the model's variables.")
    ids = np.sort(np.array(list(stats.counts.index)))
    if ids.dtype.kind == "f" and np.all(np.floor(ids) == ids) and np.abs(ids).max() < 2**63:
        ids = ids.astype(np.int64)  # whole-number float ids are the units 12, not 12.0 (as in memory)
    ids = pd.Index(ids)
    J = len(ids)
    if J < 2:
        raise DataError(f"The grouping factor '{group}' has {J} unit(s) in the rows used; a multilevel model needs at least two.")
    check_units(J, stats.rows_used, group)
    counts = stats.counts.reindex(ids).to_numpy(dtype=float)
    group_means = {v: (s.reindex(ids).to_numpy(dtype=float) / counts) for v, s in stats.sums.items()}
    grand_means = {v: s / c for v, (s, c) in stats.grand.items()}
    for d in spec.derived:  # cgm() of a level-2 predictor in level equations: over the units (`expressions`)
        if d.kind == "grand" and d.over_units:
            grand_means[d.name] = float(np.nanmean(group_means.pop(d.name)))
    levels = {v: sorted(lv) for v, lv in stats.levels.items() if v != spec.outcome}
    plan = Plan(spec, variables, group, ids, group_means, grand_means, levels)
    # one formulaic spec for every chunk: made on a frame holding every level of each text variable
    sample, _ = prepare_chunk(first, plan)
    if len(sample) == 0:
        raise DataError("The first chunk has no complete row; put complete rows first or use larger chunks.")
    for d in spec.derived:
        if d.kind == "group":
            check_within(d, sample[d.name].to_numpy(dtype=float), sample[d.variables[0]].to_numpy(dtype=float), group)
    x_mm = formulaic.model_matrix(spec.fixed_formula(), sample, na_action="raise", context={})
    plan.x_spec = x_mm.model_spec
    z_names: list[str] = []
    blocks = []
    for rhs in random_rhs(spec):
        zm = formulaic.model_matrix(rhs, sample, na_action="raise", context={})
        plan.z_specs.append(zm.model_spec)
        names = [str(c) for c in zm.columns]
        blocks.append(tuple(range(len(z_names), len(z_names) + len(names))))
        z_names.extend(names)
    plan.q, plan.p = len(z_names), x_mm.shape[1]
    numeric = [_numeric_columns(rhs, sample) for rhs in random_rhs(spec) + [spec.fixed_formula()]]
    if all(m is not None for m in numeric):
        plan.numeric = [[fs for _, fs in m[0]] for m in numeric]
    plan.n_columns = plan.q + plan.p + 1
    # the internal coordinates (`coordinates`) from the first chunk: any shift is exact
    x_names = tuple(str(c) for c in x_mm.columns)
    coordinates, plan.affine = choose_coordinates(chunk_columns(sample, plan), x_names, tuple(z_names), spec.outcome, INTERCEPT, tuple(blocks))

    def varying(v: str) -> list[str]:
        if v in stats.varies:
            return sorted(str(i) for i in stats.varies[v])
        if v in stats.lo:
            lo, hi = stats.lo[v], stats.hi[v]
            return [str(i) for i in lo.index[(hi - lo).to_numpy() > 0]]
        return []

    coefficients = _classify(spec, x_mm.model_spec.structure, varying, tuple(z_names))
    units_used = set(ids)
    report = DataReport(
        n_rows_in=stats.rows_in,
        n_rows_used=stats.rows_used,
        dropped_by_variable=tuple((v, n) for v, n in stats.missing.items()),
        n_units_in=len(stats.ids_in),
        n_units_used=J,
        units_dropped=tuple(str(u) for u in sorted(stats.ids_in - units_used, key=str)),
        singleton_units=tuple(str(i) for i, c in zip(ids, counts) if c == 1),
        source=source,
    )
    design = Design(
        spec=spec, columns=None, codes=None, group=group, units=np.asarray(ids),
        x_names=tuple(str(c) for c in x_mm.columns), z_names=tuple(z_names), blocks=tuple(blocks),
        coefficients=coefficients, centering_means={**group_means, **grand_means}, data_report=report,
        x_model_spec=x_mm.model_spec, streamed=True, n_rows=stats.rows_used, levels=levels,
        coordinates=coordinates,
    )
    return plan, design


def fit_chunks(spec: ModelSpec, chunks: Callable[[], Iterable[pd.DataFrame]], method: str, source: str):
    """Two passes over `chunks()` (called twice), then the fit from the added summaries."""
    from multilevel.interfaces.api import finish_fit

    if len(spec.groups) != 1:
        raise SpecificationError("Streamed fits support one grouping factor.")
    group = spec.groups[0]
    first = None
    stats = Pass1()
    variables = None
    parts: list[Pass1] = []
    for chunk in chunks():
        if first is None:
            first = chunk
            variables = _check_columns(spec, chunk)
        parts.append(pass1(chunk, spec, variables, group))
        if len(parts) >= 32:  # reduce now and then: the parts' memory stays bounded
            parts = [combine(parts)]
    stats = combine(parts) if parts else stats
    if first is None:
        raise DataError(f"{source} has no rows.")
    plan, design = build(spec, first, stats, source)
    J, k = len(plan.ids), plan.n_columns
    C, n = np.zeros((J, k, k)), np.zeros(J)
    for chunk in chunks():
        pass2_into(chunk, plan, C, n)  # one J x k x k array for all chunks: memory O(J k^2)
    total = GroupSummaries(mirror_upper(C), n, plan.q, plan.p)
    _check_rank_from_summaries(total, design)
    return finish_fit(design, total, method)


def _check_rank_from_summaries(s: GroupSummaries, design: Design) -> None:
    """Zero, constant and collinear fixed effects, from X'X (`design.check_rank`, as in memory)."""
    check_rank(s.XtX_total, design.x_names, design.coordinates)


# ----- sources ---------------------------------------------------------------------------------
def parquet_files(path) -> list[Path]:
    """A Parquet file, a folder of them, or a glob pattern."""
    text = os.fspath(path)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in globmod.glob(text))
    elif Path(text).is_dir():
        files = sorted(Path(text).glob("*.parquet")) + sorted(Path(text).glob("*.pq"))
    else:
        files = [Path(text)]
    if not files:
        raise DataError(f"No Parquet file matches '{text}'.")
    for f in files:
        if not f.exists():
            from multilevel.data.reading import missing_path_message

            raise DataError(missing_path_message(f))
    return files


def is_stream_source(data) -> bool:
    if not isinstance(data, (str, os.PathLike)):
        return False
    text = os.fspath(data)
    return any(ch in text for ch in "*?[") or Path(text).is_dir()


def open_parquet(f: Path):
    """pyarrow's ParquetFile of `f`, or a DataError naming the file (empty, truncated, not Parquet)."""
    import pyarrow.parquet as pq

    if f.is_file() and f.stat().st_size == 0:
        raise DataError(f"The Parquet file '{f}' is empty (0 bytes): rewrite it, or remove it from the files read.")
    try:
        return pq.ParquetFile(f)
    except Exception as exc:  # pyarrow's ArrowInvalid / OSError: say which file and why
        raise DataError(
            f"Cannot read '{f}' as a Parquet file ({type(exc).__name__}: {exc}). It may be truncated (an "
            "interrupted write) or not a Parquet file: rewrite it, or remove it from the files read."
        ) from exc


def _kind(t) -> str:
    """The kind of an Arrow type that matters to a model: number, true/false, text, or the type."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return "category"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_boolean(t):
        return "true/false"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "text"
    return str(t)


def check_schemas(files: list[Path], columns: list[str]) -> None:
    """Every file must hold the model's columns, each of the same kind as in the first file
    (numbers of any width may mix; numbers in one file and text in another may not): otherwise
    the chunks would be summed as different variables. The error names the file and column."""
    first = open_parquet(files[0]).schema_arrow
    kinds = {c: _kind(first.field(c).type) for c in columns if c in first.names}
    for f in files[1:]:
        schema = open_parquet(f).schema_arrow
        lost = [c for c in kinds if c not in schema.names]
        if lost:
            raise DataError(
                f"The Parquet file '{f}' has no column {', '.join(repr(c) for c in lost)}, which '{files[0].name}' "
                "has: all files streamed together need the same columns."
            )
        for c, k in kinds.items():
            other = _kind(schema.field(c).type)
            if other != k:
                raise DataError(
                    f"The column '{c}' is {k} ({first.field(c).type}) in '{files[0]}' but {other} "
                    f"({schema.field(c).type}) in '{f}': the schema changed between files. Write every file with "
                    "the same column types."
                )


def parquet_chunks(files: list[Path], columns: list[str] | None, batch_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
    for f in files:
        pf = open_parquet(f)
        batches = pf.iter_batches(batch_size=batch_rows, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception as exc:  # a damaged row group: name the file
                raise DataError(f"Cannot read '{f}' to the end ({type(exc).__name__}: {exc}); it may be truncated.") from exc
            yield batch.to_pandas()


def fit_parquet(spec: ModelSpec, path, method: str, batch_rows: int = 1_000_000):
    from multilevel.data.reading import _need

    _need("pyarrow", "parquet", "Parquet files")
    files = parquet_files(path)
    names = open_parquet(files[0]).schema_arrow.names
    _check_streamable(spec)
    wanted = sorted(spec.variables())
    # a column the model needs that no file has is named against the files' columns (the schema),
    # not against the model's columns that were read
    _check_columns(spec, pd.DataFrame(columns=list(names)))
    columns = [c for c in wanted if c in names] or None
    check_schemas(files, columns or [])
    source = f"{len(files)} Parquet file(s): {preview([f.name for f in files], 3)}"
    return fit_chunks(spec, lambda: parquet_chunks(files, columns, batch_rows), method, source)


def fit_dask(spec: ModelSpec, ddf, method: str):
    """Partial summaries per partition, added on the client."""
    import dask

    parts = ddf.to_delayed()
    group = spec.groups[0] if len(spec.groups) == 1 else None
    if group is None:
        raise SpecificationError("Dask fits support one grouping factor.")
    head = ddf.get_partition(0).compute()
    variables = _check_columns(spec, head)
    stats_list = dask.compute(*[dask.delayed(pass1)(p, spec, variables, group) for p in parts])
    stats = combine(list(stats_list))
    plan, design = build(spec, head, stats, f"Dask DataFrame with {ddf.npartitions} partitions")
    sums = dask.compute(*[dask.delayed(pass2)(p, plan) for p in parts])
    total = sums[0]
    for s in sums[1:]:
        total = total + s
    _check_rank_from_summaries(total, design)
    from multilevel.interfaces.api import finish_fit

    fit = finish_fit(design, total, method)
    return fit


def dask_residuals(fit, ddf, level: int = 1):
    """Residuals of a fit on a Dask DataFrame, as a Dask DataFrame.

    level=1: per row, fitted from the fixed part and from fixed + EB, and the residuals, computed
    partition by partition. level=2: per unit, the empirical Bayes residuals u*_j (eb_<effect>,
    lme4's ranef) and their conditional variances (cv_<effect>, lme4's condVar), which come from
    the summaries on the client, as a Dask DataFrame of as many partitions as `ddf`."""
    if level == 2:
        import dask.dataframe as dd

        u = fit.ranef
        d = fit.design
        table = pd.DataFrame({d.group: list(u.index)})
        for c in u.columns:
            table[f"eb_{c}"] = u[c].to_numpy()
        cv = np.asarray(fit.ranef_condvar)
        for i, c in enumerate(u.columns):
            table[f"cv_{c}"] = cv[:, i, i]
        return dd.from_pandas(table, npartitions=max(1, min(ddf.npartitions, len(table))))
    if level != 1:
        raise SpecificationError(f"level must be 1 or 2, not {level!r}.")
    d = fit.design
    beta = fit.beta.to_numpy()
    u = fit.ranef.to_numpy()
    spec = d.spec
    rhs = random_rhs(spec)
    x_spec = d.x_model_spec
    labels = list(d.group_labels)

    def one(part: pd.DataFrame) -> pd.DataFrame:
        sub = part.copy()
        code = pd.Index(labels).get_indexer(canonical_ids(sub[d.group]))  # ids as the fit labelled them
        floats = _float_column(sub)
        for dv in spec.derived:
            with np.errstate(all="ignore"):
                for name, v in derived_values(dv, floats, code, d.centering_means.get(dv.name), check=False).items():
                    sub[name] = v
        for v, lv in d.levels.items():
            sub[v] = pd.Categorical(sub[v].astype(str).where(sub[v].notna()), categories=lv)
        ok = (code >= 0) & ~sub[_check_columns(spec, part)].isna().any(axis=1).to_numpy()
        out = pd.DataFrame({d.group: part[d.group], "fitted_fixed": np.nan, "fitted": np.nan, "resid": np.nan}, index=part.index)
        if ok.any():
            s2 = sub.loc[ok]
            X = np.asarray(x_spec.get_model_matrix(s2).to_numpy(dtype=float))
            Z = np.hstack([np.asarray(formulaic.model_matrix(r, s2, context={}).to_numpy(dtype=float)) for r in rhs])
            fixed = X @ beta
            fitted = fixed + np.einsum("ia,ia->i", Z, u[code[ok]])
            out.loc[ok, "fitted_fixed"] = fixed
            out.loc[ok, "fitted"] = fitted
            out.loc[ok, "resid"] = s2[spec.outcome].to_numpy(dtype=float) - fitted
        return out

    meta = pd.DataFrame({d.group: pd.Series(dtype=ddf[d.group].dtype), "fitted_fixed": pd.Series(dtype=float),
                         "fitted": pd.Series(dtype=float), "resid": pd.Series(dtype=float)})
    return ddf.map_partitions(one, meta=meta)
