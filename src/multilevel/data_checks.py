"""What goes into a fit and what is left out: the checks of the input values, the missing-data
rules, and the `DataReport` every fit carries.

Rules (HLM's, made explicit):
  * Level 1: rows with a missing value in any of the model's variables are dropped (listwise),
    counted per variable; units left with no rows are listed.
  * Level 2: a missing value of a level-2 variable (one from the level-2 table, or declared
    level-2 in the level equations) is refused by default, listing the units and variables, as
    HLM refuses it; `level2_missing="drop"` drops those units instead and lists them.
  * Units of one row are allowed and listed.
The bad-input catalogue (docs/bad-input.md) is checked here too: ids of mixed kinds, a variable
with no value at all, text in a numeric column, infinite values, an outcome with one value.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import DataError, preview
from .join import JoinReport, id_kind, mixed_id_error

_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d*,\d+\s*$")
#: a text predictor with more levels than this (and than 10% of the rows) is refused as a factor
MAX_LEVELS = 50


@dataclass(frozen=True)
class DataReport:
    """What went into a fit and what was left out, and why."""

    n_rows_in: int
    n_rows_used: int
    dropped_by_variable: tuple[tuple[str, int], ...]  # rows with a missing value, per variable
    n_units_in: int
    n_units_used: int
    units_dropped: tuple[str, ...]  # units all of whose rows were dropped
    level2_dropped: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (unit, its missing level-2 variables)
    unmatched_level1_ids: tuple[str, ...] = ()  # level-1 units without a level-2 row, dropped
    unmatched_level1_rows: int = 0
    level2_rows_without_units: tuple[str, ...] = ()  # level-2 rows no level-1 row refers to
    singleton_units: tuple[str, ...] = ()  # units with one row used
    source: str = ""
    zero_weight_rows: int = 0  # rows with level-1 weight 0, dropped
    notes: tuple[str, ...] = ()  # what reading the files did (e.g. labels kept as numbers)

    @property
    def n_rows_dropped(self) -> int:
        return self.n_rows_in - self.n_rows_used

    def __str__(self) -> str:
        lines = []
        if self.source:
            lines.append(f"Data: {self.source}")
        lines += [
            f"Level-1 rows: {self.n_rows_used} used of {self.n_rows_in}"
            + (f" ({self.n_rows_dropped} dropped)" if self.n_rows_dropped else ""),
            f"Level-2 units: {self.n_units_used} used of {self.n_units_in}"
            + (f" ({len(self.units_dropped)} left with no rows: {preview(self.units_dropped)})" if self.units_dropped else ""),
        ]
        for var, n in self.dropped_by_variable:
            lines.append(f"  missing in '{var}': {n} rows (dropped listwise)")
        if self.zero_weight_rows:
            lines.append(f"  level-1 weight 0: {self.zero_weight_rows} rows dropped (they carry no information)")
        if self.level2_dropped:
            lines.append(
                f"  {len(self.level2_dropped)} units dropped for missing level-2 values: "
                + preview([f"{u} ({', '.join(v)})" for u, v in self.level2_dropped])
            )
        if self.unmatched_level1_ids:
            lines.append(
                f"  {len(self.unmatched_level1_ids)} level-1 units with no level-2 row dropped "
                f"({self.unmatched_level1_rows} rows): {preview(self.unmatched_level1_ids)}"
            )
        if self.level2_rows_without_units:
            lines.append(
                f"  {len(self.level2_rows_without_units)} level-2 rows have no level-1 rows (not used): "
                + preview(self.level2_rows_without_units)
            )
        if self.singleton_units:
            lines.append(f"  {len(self.singleton_units)} units have a single row: {preview(self.singleton_units)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    __repr__ = __str__  # in a REPL or notebook too: the report, not the fields

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(str(self))}</pre>"


def _numeric_looking_text(col: pd.Series) -> tuple[bool, dict[str, list[int]]]:
    """(True, {bad text: rows}) when most values of a text column are numbers."""
    if pd.api.types.is_numeric_dtype(col) or isinstance(col.dtype, pd.CategoricalDtype):
        return False, {}
    v = col.dropna()
    if len(v) == 0:
        return False, {}
    text = v.astype(str)
    is_num = text.str.match(_NUMBER)
    if is_num.mean() < 0.5 or is_num.all():
        return bool(is_num.all()), {}
    bad: dict[str, list[int]] = {}
    for idx, t in text[~is_num].items():
        bad.setdefault(t, []).append(int(col.index.get_loc(idx)))
    return True, bad


def missing_and_infinite(col: pd.Series) -> tuple[int, int]:
    """(missing, infinite) values of a column; one compiled pass for float columns."""
    dt = col.dtype
    if isinstance(dt, np.dtype) and dt.kind in "iub":
        return 0, 0
    if isinstance(dt, np.dtype) and dt.kind == "f":
        from .kernels import kernel

        nan, inf = kernel("nonfinite")(np.ascontiguousarray(col.to_numpy()))
        return int(nan), int(inf)
    nan = int(col.isna().sum())
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and nan < len(col):
        return nan, int(np.isinf(col.to_numpy(dtype=float, na_value=np.nan)).sum())
    return nan, 0


def check_values(data: pd.DataFrame, variables: list[str], outcome: str, group: str, column=None) -> tuple[pd.DataFrame, dict[str, int]]:
    """The bad-input catalogue, before any row is dropped. Returns the data with numeric text
    columns (all values numbers written as text) converted to numbers, and the number of missing
    values of each variable (for `select_rows`)."""
    column = column or data.__getitem__
    kind = id_kind(column(group))
    if kind == "mixed":
        raise mixed_id_error(column(group), group, "the data")
    converted = None
    missing: dict[str, int] = {}
    for v in variables:
        col = column(v)
        n_missing, n_infinite = missing_and_infinite(col)
        missing[v] = n_missing
        if n_missing == len(col):
            raise DataError(
                f"'{v}' has no value in any of the {len(col)} rows (all missing). Drop it from the model or "
                "check how the file was read (a misspelt missing-value code, a wrong separator)."
            )
        if v == group:
            continue
        if v != outcome and not pd.api.types.is_numeric_dtype(col) and not isinstance(col.dtype, pd.CategoricalDtype):
            text = col.dropna().astype(str)
            if len(text) and text.str.match(_DECIMAL_COMMA).mean() > 0.5:
                raise DataError(
                    f"'{v}' holds numbers written with decimal commas (e.g. {text.iloc[0]!r}). Read the file with "
                    "decimal=',' (e.g. ml.read(path, sep=';', decimal=','))."
                )
        numeric_text, bad = _numeric_looking_text(col)
        if bad:
            examples = "; ".join(f"{t!r} (row{'s' if len(r) > 1 else ''} {preview(r, 3)})" for t, r in list(bad.items())[:4])
            raise DataError(
                f"'{v}' is a column of numbers with some text in it: {examples}"
                + (f" and {len(bad) - 4} other texts" if len(bad) > 4 else "")
                + ". Make those entries missing (e.g. read with na_values=[...], or pd.to_numeric(..., errors='coerce')) "
                "or correct them."
            )
        if numeric_text:
            converted = data.copy() if converted is None else converted
            converted[v] = col = pd.to_numeric(col)
            n_missing, n_infinite = missing_and_infinite(col)
            missing[v] = n_missing
        elif v != outcome and not pd.api.types.is_numeric_dtype(col):
            levels = col.nunique(dropna=True)
            if levels > MAX_LEVELS and levels > 0.1 * len(col):
                raise DataError(
                    f"'{v}' is text with {levels} different values in {len(col)} rows; as a factor it would make "
                    f"{levels - 1} fixed-effect columns. If it holds numbers, convert it (pd.to_numeric); if it is an "
                    "id, use it as the grouping factor instead."
                )
        if n_infinite:
            inf = np.isinf(col.to_numpy(dtype=float, na_value=np.nan))
            if inf.any():
                rows = np.flatnonzero(inf).tolist()
                raise DataError(
                    f"'{v}' has {len(rows)} infinite value{'s' if len(rows) > 1 else ''} (row{'s' if len(rows) > 1 else ''} "
                    f"{preview(rows)}). Replace them by missing values, or correct them."
                )
    return (data if converted is None else converted), missing


def level2_missing_units(data: pd.DataFrame, level2_vars: list[str], group: str) -> dict[str, tuple[str, ...]]:
    """{unit: level-2 variables missing for it}."""
    out: dict[str, list[str]] = {}
    for v in level2_vars:
        miss = data[v].isna().to_numpy()
        for u in pd.unique(data[group].to_numpy()[miss]):
            out.setdefault(str(u), []).append(v)
    return {u: tuple(vs) for u, vs in out.items()}


def select_rows(
    data: pd.DataFrame,
    variables: list[str],
    group: str,
    level2_vars: list[str],
    level2_missing: str,
    join: JoinReport | None,
    codes: np.ndarray,
    units: np.ndarray,
    missing: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, DataReport, np.ndarray, np.ndarray]:
    """Apply the level-2 and level-1 missing-data rules (module doc). `codes` number the rows'
    units 0..len(units)-1 (-1: no id). Returns the rows used, the report, and the codes and units
    of the rows used (units without rows left are dropped from both)."""
    if level2_missing not in ("error", "drop"):
        raise DataError(f"level2_missing must be 'error' or 'drop', not {level2_missing!r}.")
    if codes.size and codes.min() < 0:
        rows = np.flatnonzero(codes < 0)
        raise DataError(
            f"The grouping column '{group}' is missing in {rows.size} rows (row positions "
            f"{preview(rows.tolist())}). Every row needs its unit's id: fill it in or drop those rows."
        )
    missing = missing or {}

    def has_missing(v: str) -> bool:
        return missing[v] > 0 if v in missing else bool(data[v].hasnans)

    l2 = [v for v in level2_vars if v in variables and has_missing(v)]
    l2_missing = level2_missing_units(data, l2, group) if l2 else {}
    if l2_missing and level2_missing == "error":
        raise DataError(
            f"{len(l2_missing)} units have missing level-2 values: "
            + preview([f"{u} ({', '.join(v)})" for u, v in l2_missing.items()])
            + ". HLM refuses missing level-2 data; fill them in, or pass level2_missing='drop' to leave those "
            "units out (the data report lists them)."
        )
    with_missing = [v for v in variables if has_missing(v)]
    keep = None
    by_var: tuple[tuple[str, int], ...] = ()
    if with_missing or l2_missing:
        keep_l2 = ~data[group].astype(str).isin(set(l2_missing)).to_numpy() if l2_missing else np.ones(len(data), bool)
        miss = data[with_missing].isna().to_numpy() & keep_l2[:, None]
        keep = keep_l2 & ~miss.any(axis=1)
        by_var = tuple((v, int(miss[:, i].sum())) for i, v in enumerate(with_missing) if miss[:, i].any())
    kept_codes = codes if keep is None else codes[keep]
    sizes = np.bincount(kept_codes, minlength=len(units))
    has_rows = sizes > 0
    dropped_units = tuple(str(u) for u in units[~has_rows] if str(u) not in l2_missing)
    report = DataReport(
        n_rows_in=int(len(data)) + (join.unmatched_level1_rows if join else 0),
        n_rows_used=int(kept_codes.size),
        dropped_by_variable=by_var,
        n_units_in=int(len(units)) + (len(join.unmatched_level1_ids) if join else 0),
        n_units_used=int(has_rows.sum()),
        units_dropped=dropped_units,
        level2_dropped=tuple(l2_missing.items()),
        unmatched_level1_ids=join.unmatched_level1_ids if join else (),
        unmatched_level1_rows=join.unmatched_level1_rows if join else 0,
        level2_rows_without_units=join.units_without_level1_rows if join else (),
        singleton_units=tuple(sorted(str(u) for u in units[sizes == 1])),
        source=str(data.attrs.get("source", "")),
        notes=tuple(data.attrs.get("read_notes", ())),
    )
    if keep is None:
        plain = isinstance(data.index, pd.RangeIndex) and data.index.start == 0 and data.index.step == 1
        return (data if plain else data.reset_index(drop=True)), report, codes, units
    if not has_rows.all():
        renumber = np.cumsum(has_rows) - 1
        kept_codes = renumber[kept_codes]
    return data.loc[keep].reset_index(drop=True), report, kept_codes.astype(np.intp, copy=False), units[has_rows]


def check_outcome(y: np.ndarray, outcome: str) -> None:
    if y.size and y.min() == y.max():
        raise DataError(
            f"The outcome '{outcome}' takes a single value ({y[0]:g}) in every row used: there is no "
            "variation to model. Check the outcome column and the rows selected."
        )
