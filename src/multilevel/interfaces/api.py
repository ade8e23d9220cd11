"""The entry points: lme4-style `fit`, HLM-style `fit_levels`, and the stages they compose.

    spec    = parse_formula(...) | levels(...)          (ModelSpec, no data)
    design  = build_design(spec, data)                   (the only stage that sees the DataFrame)
    summ    = design.summaries()                         (one pass over the rows)
    theta   = optimize_theta(summ, template, reml)      (never touches the rows)
    Fit     = Fit.at_theta(...)                          (numbers; reports format them)
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import pandas as pd

from multilevel.data.join import join_level2, join_levels
from multilevel.data.reading import as_frame
from multilevel.data.weights import SamplingWeights, choose
from multilevel.design.builder import build_design, check_rank
from multilevel.design.chunked import build_streamed, check_streamable
from multilevel.design.identification import check_between_units, check_enough_rows, check_level1_variance, check_not_exact
from multilevel.design.sources import DaskSource, ParquetSource, is_dask, is_stream_source
from multilevel.design.summaries import GroupSummaries
from multilevel.engine.covariance import LambdaTemplate
from multilevel.engine.optimizer import optimize_theta
from multilevel.errors import DataError, SpecificationError
from multilevel.interfaces.fit import Fit
from multilevel.interfaces.multi_fit import MultiFit
from multilevel.model.cross_equations import parse_cross_levels
from multilevel.model.formula import parse_formula
from multilevel.model.level_equations import parse_levels, parse_levels_n
from multilevel.model.spec import ModelSpec, group_variables
from multilevel.results.estimates import check_method, warn_if_not_converged
from multilevel.results.multi import MultiEstimates


def levels(level1: str, level2: Mapping[str, str] | None = None, level3: Mapping[str, Mapping[str, str]] | None = None,
           level4: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None, *,
           group: str | tuple[str, ...] | None = None, row: str | None = None, column: str | None = None) -> ModelSpec:
    """HLM-style level equations -> ModelSpec (see `multilevel.level_equations`). Two levels:
    group="school"; three (HLM3): level3={...} and group=(level-2 id, level-3 id); four (HLM4):
    level4={...} too and group=(level-2, level-3, level-4 id) (`level_equations.THREE_LEVEL_DOC`);
    cross-classified (HCM2): row= and column= instead of group, 'b' and 'c' in the level-2
    equations (`cross_equations`)."""
    _refuse_tables_as_equations(level3=level3, level4=level4)
    return _parse_levels(level1, level2, level3, group, level4=level4, row=row, column=column)


def _parse_levels(level1, level2, level3, group, columns=None, level4=None, row=None, column=None) -> ModelSpec:
    """Two levels (`parse_levels`) or, with level3 (and level4) or several ids, three or four
    (`parse_levels_n`); with row= and column= a cross-classification (`parse_cross_levels`)."""
    if row is not None or column is not None:
        if group is not None or level3 is not None or level4 is not None:
            raise SpecificationError(
                "row= and column= name the two crossed factors of a cross-classified (HCM2) model; group=, level3= and "
                "level4= are for nested models. Give either row= and column=, or group= (and level3=)."
            )
        return parse_cross_levels(level1, level2, row, column, columns)
    if group is None:
        raise SpecificationError(
            "Say which column holds the units: group='school' (two levels), group=(level-2 id, level-3 id) with level3= "
            "(three levels), or row= and column= (a cross-classification, HCM2)."
        )
    if level4 is not None:
        return parse_levels_n(level1, {2: level2, 3: level3, 4: level4}, group, columns)
    if not isinstance(group, str) and len(group) == 3:
        raise SpecificationError(
            f"group={group!r} names three ids (a four-level model) but no level4 equations are given: add "
            "level4={'Intercept': {'Intercept': {'Intercept': 'random'}}} (HLM4) and level3=, or give fewer ids."
        )
    if level3 is not None or not isinstance(group, str):
        if level3 is None:
            raise SpecificationError(
                f"group={group!r} names two ids (a three-level model) but no level3 equations are given: add "
                "level3={'Intercept': {'Intercept': 'random'}} (HLM3), or give one id for a two-level model."
            )
        return parse_levels_n(level1, {2: level2, 3: level3}, group, columns)
    return parse_levels(level1, level2, group, columns)


def level_ids(spec: ModelSpec) -> tuple[str, str]:
    """(level-2 id, level-3 id) of a three-level model whose factors are `l3` and `l2:l3` (HLM3's
    level equations, lme4's `(... | l3/l2)`), for joining level files (`join.join_levels`); other
    structures are refused with what to do."""
    groups = sorted(spec.groups, key=lambda g: len(group_variables(g)))
    names = [group_variables(g) for g in groups]
    if len(groups) == 2 and len(names[0]) == 1 and len(names[1]) == 2 and names[0][0] in names[1]:
        return next(v for v in names[1] if v != names[0][0]), names[0][0]
    raise SpecificationError(
        f"Level files (level2_data=, level3_data=) are joined for three-level models (level-2 units in level-3 units, "
        f"written (... | school/class) or (... | school) + (... | class:school), so that the levels are known); this "
        f"model's grouping factors ({', '.join(spec.groups)}) are not. Write the nesting so, or join the tables first "
        "(df.merge(table, on=...)) and fit the joined rows."
    )


def prepare(spec: ModelSpec, data, level2=None, level2_missing: str = "error", weights=None, precision_weights: str | None = None,
            level3=None, level3_missing: str = "error"):
    """Data in: a path or table (`reading.as_frame`), joined with a level-2 table when given
    (`join.join_level2`), or with level-2 and level-3 tables for a three-level model (HLM3's MDM,
    `join.join_levels`), then checked and made numeric (`design.build_design`). `weights`: sampling
    weights (`SamplingWeights.of`); `precision_weights`: a column name (lme4's weights=)."""
    frame = as_frame(data)
    join = None
    level2_vars: tuple[str, ...] = ()
    if len(spec.groups) > 1 and (level2 is not None or level3 is not None):
        l2_id, l3_id = level_ids(spec)
        tables = [None if t is None else as_frame(t, f"level-{k} data") for k, t in ((2, level2), (3, level3))]
        source = frame.attrs.get("source", "")
        notes = list(frame.attrs.get("read_notes", []))
        variables = {v for t in (*spec.fixed, *(t for r in spec.random for t in r.terms)) for v in spec.term_variables(t)}
        frame, files = join_levels(frame, tables[0], tables[1], l2_id, l3_id, variables, level2_missing, level3_missing)
        frame.attrs["source"] = " + ".join(x for x in (source, *(t.attrs.get("source", "") for t in tables if t is not None)) if x)
        frame.attrs["read_notes"] = notes + [n for t in tables if t is not None for n in t.attrs.get("read_notes", [])]
        design = build_design(spec, frame, (), "error", None, SamplingWeights.of(weights), precision_weights)
        joined_out = sum(f.rows_dropped_for_missing + f.rows_without_row for f in files)  # left out at the joins
        report = dataclasses.replace(design.data_report, level_files=files, n_rows_in=design.data_report.n_rows_in + joined_out)
        return dataclasses.replace(design, data_report=report)
    if level3 is not None:
        raise SpecificationError(
            "level3_data= is a level-3 table, for three-level models (group=(level-2 id, level-3 id) in fit_levels, or "
            "(... | school/class) in a formula); this model has one grouping factor: pass the table as level2_data=."
        )
    if level2 is not None:
        if len(spec.groups) != 1:
            raise SpecificationError("A level-2 table can be joined only in a model with one grouping factor.")
        schools = as_frame(level2, "level-2 data")
        source = frame.attrs.get("source", "")
        notes = list(frame.attrs.get("read_notes", []))
        frame, join = join_level2(frame, schools, spec.groups[0], level2_missing)
        frame.attrs["source"] = " + ".join(x for x in (source, schools.attrs.get("source", "")) if x)
        frame.attrs["read_notes"] = notes + list(schools.attrs.get("read_notes", []))
        level2_vars = join.level2_variables
    return build_design(spec, frame, level2_vars, level2_missing, join, SamplingWeights.of(weights), precision_weights)


def imputations(data, imputation: str | None) -> list | None:
    """The imputed data sets, when `data` is a list of tables or paths, or a table with a column
    naming the imputation; None for ordinary data."""
    if isinstance(data, (list, tuple)):
        if len(data) < 2:
            raise SpecificationError("Multiply imputed data need at least two data sets; for one, pass it alone.")
        return list(data)
    if imputation is not None:
        frame = as_frame(data)
        if imputation not in frame.columns:
            raise SpecificationError(f"imputation={imputation!r} is not a column of the data.")
        ids = frame[imputation]
        if ids.isna().any():
            rows = ids.index[ids.isna()].tolist()
            raise SpecificationError(
                f"{len(rows)} rows have no imputation number in '{imputation}' (rows {rows[:10]}); every row "
                "belongs to one imputed data set: fill it in or drop those rows."
            )
        if pd.api.types.is_numeric_dtype(ids) and (ids == 0).any() and ids.nunique() > 2:
            raise SpecificationError(
                f"'{imputation}' has data set 0 beside 1, 2, ...: in mice's and Stata's long formats that is the "
                f"original, incomplete data, not an imputation. Drop it first (data[data['{imputation}'] != 0])."
            )
        parts = [g.drop(columns=imputation).reset_index(drop=True) for _, g in frame.groupby(imputation, sort=True)]
        if len(parts) < 2:
            raise SpecificationError(f"The column '{imputation}' has one value: there is only one imputed data set.")
        return parts
    return None


#: imputed data sets of at least this many rows are fitted in parallel threads (None: never)
PARALLEL_ROWS: int | None = 100_000

#: a single Parquet file larger than this is streamed rather than read into memory
STREAM_BYTES = 2 * 1024**3


def _streamed_source(data, stream: bool | None) -> str | None:
    """'dask' for a Dask DataFrame, 'parquet' for Parquet data to stream (a folder, a glob, a file
    with stream=True or larger than STREAM_BYTES), else None."""
    if is_dask(data):
        return "dask"
    if isinstance(data, (str, os.PathLike)):
        text = os.fspath(data)
        if is_stream_source(text):
            return "parquet"
        is_parquet = text.lower().endswith((".parquet", ".pq"))
        if stream and not is_parquet:
            if not os.path.exists(text):
                from multilevel.data.reading import missing_path_message

                raise DataError(missing_path_message(text))
            raise SpecificationError("stream=True reads Parquet files (a file, a folder or a glob of them).")
        if is_parquet and (stream or (stream is None and os.path.exists(text) and os.path.getsize(text) > STREAM_BYTES)):
            return "parquet"
    elif stream:
        raise SpecificationError("stream=True needs Parquet files (a path, folder or glob) or a Dask DataFrame.")
    return None


def finish_fit(design, summ: GroupSummaries, method: str) -> Fit:
    """Optimise from the summaries and make the Fit (the stages after the design); refuse data
    that do not identify the model (`identification`), and warn when the optimum could not be
    checked (`optimizer.check_optimum`)."""
    coords = design.coords
    check_enough_rows(design.n_obs, design.n_groups, len(design.z_names), design.group,
                      " + ".join(f"({' + '.join(t.terms)} | {t.group})" for t in design.spec.random))
    check_between_units(design.coefficients, design.n_groups, design.group, method == "REML")
    check_not_exact(summ, design.x_names, design.spec.outcome, coords.intercept)
    template = LambdaTemplate.from_blocks(design.blocks, design.z_names, design.group)
    theta, record = optimize_theta(summ, template, method == "REML")
    fit = Fit.at_theta(design, summ, template, method, theta, record)
    check_level1_variance(summ, fit.sigma2, design.spec.outcome, design.group, coords.intercept)
    warn_if_not_converged(fit.estimates)
    return fit


def fit_multi(design, method: str, tau=None) -> MultiFit:
    """A model with several grouping factors (nested, crossed or both): the blocked engine
    (`results.multi`); refuse what it does not take yet."""
    if tau is not None:
        raise SpecificationError("tau= and sigma2= (evaluating at given variance components) take models with one grouping factor.")
    est = MultiEstimates.fit(design, method)  # (it checks X's rank first: `check_rank`)
    if not est.converged and est.optimizer is not None:
        import warnings

        from multilevel.errors import ConvergenceWarning

        warnings.warn(ConvergenceWarning(
            f"The fit of {design.spec.to_formula()} did not reach a checked optimum: {est.optimizer.check}. fit.converged "
            "is False; its estimates are where the optimiser stopped."), stacklevel=3)
    return MultiFit(est)


def fit_spec(
    spec: ModelSpec,
    data,
    method: str = "REML",
    tau=None,
    sigma2: float | None = None,
    level2=None,
    level2_missing: str = "error",
    imputation: str | None = None,
    weights=None,
    stream: bool | None = None,
    sampling_weights=None,
    precision_weights: str | None = None,
    level3=None,
    level3_missing: str = "error",
):
    """Fit a ModelSpec to data; with `tau` and `sigma2`, evaluate at them instead of optimising.
    With several imputed data sets, fit each and pool them (`multilevel.imputation.pool`).
    Weights: `weights.choose` (a bare weights="w" is refused as ambiguous)."""
    sampling, precision = choose(weights, sampling_weights, precision_weights)
    sets = imputations(data, imputation)
    if sets is not None:
        from concurrent.futures import ThreadPoolExecutor

        from multilevel.interfaces.imputation import pool
        from multilevel.parallel import default_jobs

        def one(d):
            return fit_spec(
                spec, d, method, tau, sigma2, level2, level2_missing, None,
                sampling_weights=sampling, precision_weights=precision, level3=level3, level3_missing=level3_missing,
            )

        first = one(sets[0])
        if isinstance(first, MultiFit):
            raise SpecificationError("Multiply imputed data are pooled for models with one grouping factor only (for now).")
        # The other imputed data sets are fitted in threads, one per core (`parallel`), when they
        # are large: on the 2-core benchmark machine two threads took five sets of 10^6 rows 1.35x
        # faster (once 0.93x, right after a run that had filled the memory), and HSB's sets 1.02x
        # (the Python parts hold the GIL): benchmarks/parallel.py. None turns them off.
        jobs = default_jobs() if PARALLEL_ROWS is not None and first.n_obs >= PARALLEL_ROWS else 1
        if jobs == 1:
            return pool([first] + [one(d) for d in sets[1:]])
        with ThreadPoolExecutor(max_workers=min(jobs, len(sets) - 1)) as ex:
            return pool([first] + list(ex.map(one, sets[1:])))
    method = check_method(method)
    if sampling is not None and method == "REML":
        raise SpecificationError(
            "Sampling weights need method='ML': the pseudo-likelihood is a maximum-likelihood criterion "
            "(as in Stata's mixed with pweights and R's WeMix); a weighted REML is not defined. (For lme4's "
            "weights=, which allow REML, use precision_weights= instead.)"
        )
    if (tau is None) != (sigma2 is None):
        raise SpecificationError("Give both tau and sigma2 to evaluate at given variance components, or neither.")
    streamed = _streamed_source(data, stream)
    if streamed is not None:
        if level2 is not None or level3 is not None or sampling is not None or precision is not None or tau is not None:
            raise SpecificationError(
                "Streamed and Dask fits take one table without level2=, sampling_weights=, precision_weights= "
                "or tau=; join the level-2 table into the Parquet files (or the Dask DataFrame) first, and fit "
                "weighted models in memory."
            )
        check_streamable(spec)
        source = DaskSource(data) if streamed == "dask" else ParquetSource.of(data)
        design, summ = build_streamed(spec, source, level2_missing)
        if len(design.groupings) > 1:  # the blocked summaries added up over the chunks (`Design.blocked`)
            return fit_multi(design, method, tau)
    else:
        design = prepare(spec, data, level2, level2_missing, sampling, precision, level3, level3_missing)
        if len(design.groupings) > 1:
            return fit_multi(design, method, tau)
        summ = design.summaries()
    check_rank(summ.XtX_total, design.x_names, design.coordinates)
    if tau is not None and sigma2 is not None:  # both or neither (checked above)
        template = LambdaTemplate.from_blocks(design.blocks, design.z_names, design.group)
        return Fit.at_variance_components(design, summ, template, method, tau, sigma2)
    return finish_fit(design, summ, method)


def fit(
    formula: str | ModelSpec,
    data,
    method: str = "REML",
    *,
    level2=None,
    level2_missing: str = "error",
    level3=None,
    level3_missing: str = "error",
    imputation: str | None = None,
    weights=None,
    sampling_weights=None,
    precision_weights: str | None = None,
    stream: bool | None = None,
    tau=None,
    sigma2: float | None = None,
):
    """Fit a two-level model written as an lme4-style formula.

    `ml.fit("mathach ~ (sector + meanses) * cses + (cses | school)", hsb)`; `(x || g)` for
    uncorrelated random effects; `cwc(x)` / `cgm(x)` centre x within groups / at the grand mean.
    data: a table (pandas, polars, pyarrow) or a file path (`ml.read`); level2: a level-2 table or
    path joined on the unit id (HLM's MDM step); level2_missing: "error" (HLM's rule) or "drop".
    A three-level model (`(... | school/class)`): level2= (keyed by class and school, or by class
    alone when its ids are unique) and level3= (keyed by school) tables, HLM3's MDM from three files
    (`join.join_levels`); level3_missing as level2_missing, at level 3.
    method: "REML" (default) or "ML". With `tau` and `sigma2` the model is evaluated there, not fitted.
    Multiply imputed data: `data=[df1, df2, ...]` (tables or paths), or `imputation="column"`
    naming the imputation in one table; each is fitted and the results pooled (a `PooledFit`).
    Weights, two kinds (`multilevel.weights`):
      precision_weights="w"   lme4's lmer(weights=): Var(e_i) = sigma2 / w_i; REML or ML, the numbers
                              lmer gives (deviance with lme4's -sum log w_i).
      sampling_weights="w"    level-1 sampling weights, or ml.SamplingWeights(level1=, level2=, ...)
                              (alias ml.Weights): pseudo-maximum likelihood with method="ML", robust SEs.
    `weights=` takes only an ml.SamplingWeights object; a column name there is refused as ambiguous.
    Data beyond memory: a folder or glob of Parquet files (or one with stream=True) is streamed
    in row groups; a Dask DataFrame is summarised partition by partition (`design.chunked`); its
    residuals: `ml.dask_residuals`.
    """
    spec = formula if isinstance(formula, ModelSpec) else parse_formula(formula)
    return fit_spec(
        spec, data, method, tau, sigma2, level2, level2_missing, imputation, weights, stream,
        sampling_weights=sampling_weights, precision_weights=precision_weights, level3=level3, level3_missing=level3_missing,
    )


def _column_names(*tables) -> list[str] | None:
    """The column names of in-memory tables (pandas, polars, pyarrow; a list of imputed sets), or
    None when none is in memory (a path: the names are not read twice)."""
    names: list[str] = []
    for t in tables:
        t = t[0] if isinstance(t, (list, tuple)) and t else t
        cols = getattr(t, "column_names", None) or getattr(t, "columns", None)
        if cols is not None and not isinstance(t, (str, bytes)):
            names.extend(str(c) for c in cols)
    return names or None


def _level2_equations(positional: tuple, level2):
    """The level-2 equations of `fit_levels`, given positionally or as level2= (not both); a path or
    table given for them is refused with a pointer to level2_data= (HLM's level-2 file)."""
    if len(positional) > 1:
        raise SpecificationError(
            f"fit_levels takes the level-1 formula and the level-2 equations positionally, then keywords; got "
            f"{1 + len(positional)} positional arguments. Pass group=, data= (and level2_data= for a level-2 table) by name."
        )
    if positional and level2 is not None:
        what = "the level-2 equations" if isinstance(level2, Mapping) else f"a level-2 table, {_shown(level2)}"
        raise SpecificationError(
            "fit_levels got the level-2 equations as its second argument and level2= too (here "
            f"{what}). level2= is another name for the equations (a dict {{coefficient: equation}}); "
            "the level-2 table (HLM's level-2 file, a path or table joined on group=) goes in level2_data=."
        )
    eqs = positional[0] if positional else level2
    if eqs is not None and not isinstance(eqs, Mapping) and _looks_like_table(eqs):
        raise SpecificationError(
            f"fit_levels' level2 (its second argument) holds the level-2 equations, a dict {{coefficient: equation}}, "
            f"not a level-2 table ({_shown(eqs)}): pass the level-2 table (HLM's level-2 file) as level2_data=, "
            "e.g. ml.fit_levels(level1, {'Intercept': 'sector + u'}, group='school', data='stu.csv', level2_data='sch.csv')."
        )
    return eqs


def _refuse_tables_as_equations(**equations) -> None:
    """level3= and level4= hold equations (nested dicts); a table or path there is the level file,
    which goes in level3_data= (HLM3's level-3 file)."""
    for name, eqs in equations.items():
        if eqs is not None and not isinstance(eqs, Mapping):
            table = _looks_like_table(eqs)
            where = ("The level-3 table (HLM3's level-3 file, a path or table) goes in level3_data=." if name == "level3" else
                     "Level files are not taken for four-level models: join the tables first (df.merge(table, on=...)).")
            raise SpecificationError(
                f"fit_levels' {name}= holds the level-{name[-1]} equations, nested dicts as in "
                "level3={'Intercept': {'Intercept': 'lowinc + random'}}, not "
                f"{'a table' if table else 'a ' + type(eqs).__name__} ({_shown(eqs)}). " + (where if table else "")
            )


def _shown(x) -> str:
    """A path as given; a table by its type."""
    return repr(os.fspath(x)) if isinstance(x, (str, os.PathLike)) else f"a {type(x).__name__}"


def _looks_like_table(x) -> bool:
    """A path or a table (pandas, polars, pyarrow), not equation text."""
    if isinstance(x, os.PathLike) or hasattr(x, "columns") or hasattr(x, "column_names"):
        return True
    if isinstance(x, str):
        t = x.strip().lower()
        return os.path.exists(x) or t.endswith((".csv", ".parquet", ".pq", ".sav", ".dta", ".xlsx", ".xls", ".txt", ".tsv", ".feather", ".arrow"))
    return False


def fit_levels(
    level1: str,
    *equations: Mapping[str, str],
    level2: Mapping[str, str] | None = None,
    level3: Mapping[str, Mapping[str, str]] | None = None,
    level4: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
    group: str | tuple[str, ...] | None = None,
    row: str | None = None,
    column: str | None = None,
    data,
    method: str = "REML",
    level2_data=None,
    level2_missing: str = "error",
    level3_data=None,
    level3_missing: str = "error",
    imputation: str | None = None,
    weights=None,
    sampling_weights=None,
    precision_weights: str | None = None,
    stream: bool | None = None,
    tau=None,
    sigma2: float | None = None,
):
    """Fit a two-level model written as HLM's level equations (see `multilevel.level_equations`).

    fit_levels("mathach ~ 1 + cwc(ses)",
               {"Intercept": "sector + meanses + u", "ses": "sector + meanses + u"},
               group="school", data=hsb)
    The level-2 equations are the second argument (or level2=, not both); the level-2 TABLE (HLM's
    level-2 file, a path or table joined on `group`: HLM's MDM step) goes in `level2_data=`, e.g.
    fit_levels(level1, {...}, group="school", data="stu.csv", level2_data="sch.csv"). `data` may be
    a path too. Weights as in `fit`: precision_weights= (lme4's weights=) or sampling_weights=
    (HLM's weighting); a bare weights="w" is refused. `stream=` as in `fit` (Parquet streamed in
    row groups). cgm() of a level-2 variable in a level-2 equation centres it at its mean over the
    units (HLM's grand mean of a level-2 predictor), not over the rows (`level_equations`).
    Three levels (HLM3): level3= and group=(level-2 id, level-3 id); four (HLM4): level4= too and
    group=(level-2, level-3, level-4 id) (`level_equations.THREE_LEVEL_DOC`). Centring at every
    level: cwc()/cgm() in the equation of the level where the variable is a predictor. HLM3's MDM
    from three files: level2_data= (the level-2 table, with the level-2 id and, as HLM3's has it,
    the level-3 id) and level3_data= (the level-3 table); level2_missing/level3_missing: "error"
    (HLM's rule: missing values of the model's variables in a level file are refused, naming the
    columns and units) or "drop" (those units left out with their rows, reported per level).
    Cross-classified (HCM2): row= and column= instead of group, with 'b' (random row effect) and 'c'
    (random column effect) in the level-2 equations (`model.cross_equations`).
    """
    level2 = _level2_equations(equations, level2)
    _refuse_tables_as_equations(level3=level3, level4=level4)
    return fit_spec(
        _parse_levels(level1, level2, level3, group, _column_names(data, level2_data, level3_data), level4, row, column), data,
        method, tau, sigma2, level2_data, level2_missing, imputation, weights, stream,
        sampling_weights=sampling_weights, precision_weights=precision_weights, level3=level3_data, level3_missing=level3_missing,
    )
