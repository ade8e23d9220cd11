"""What goes into a fit and what is left out: the checks of the input values, the missing-data
rules, and the `DataReport` every fit carries.

Rules (HLM's, made explicit):
  * Level 1: rows with a missing value in any of the model's variables are dropped (listwise),
    counted per variable; units left with no rows are listed.
  * Level 2: a missing value of a level-2 variable (one from the level-2 table, or declared
    level-2 in the level equations) is refused by default, listing the units and variables, as
    HLM refuses it; `level2_missing="drop"` drops those units instead and lists them.
  * Units of one row are allowed and listed; data where every unit has one row are refused, as
    lme4 refuses them (the level-1 and level-2 variances cannot be told apart).
  * Rows without a unit id (missing, or blank text) are dropped listwise and counted, as lme4's
    model frame drops them; they never make a unit of their own.
Column types: pandas' extension types (nullable Int64/Float64/boolean, `string`, Arrow-backed
columns of `dtype_backend="pyarrow"`) and float16 are made plain numpy columns first
(`plain_dtypes`), pd.NA counted as missing. A text column is a factor (treatment contrasts, as a
character column in R), also when its values look like numbers; the data report says so.
The bad-input catalogue (docs/bad-input.md) is checked here too: ids of mixed kinds, a variable
with no value at all, text in a numeric column, infinite values, an outcome with one value.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from multilevel.data.join import (
    JoinReport,
    id_kind,
    mixed_id_error,
    normalise_ids,
    not_single_error,
    not_single_rows,
    value_types,
)
from multilevel.errors import DataError, MultilevelWarning, preview

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
    #: (grouping factor, its units in the rows used), each factor of the model in order; the
    #: fields above (n_units_in, units_dropped, ...) are the first factor's
    factor_units: tuple[tuple[str, int], ...] = ()
    #: HLM3's MDM from level files (`join.join_levels`): one `join.LevelFileReport` per level file joined
    level_files: tuple = ()

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
        if len(self.factor_units) > 1:
            lines[-1] = lines[-1].replace("Level-2 units", f"Units of '{self.factor_units[0][0]}'", 1)
            lines += [f"Units of '{g}': {n} used" for g, n in self.factor_units[1:]]
        for f in self.level_files:
            lines += f.lines()
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


def plain_column(col: pd.Series) -> pd.Series | None:
    """The column with a numpy dtype, or None when it has one already (or is a category).

    nullable integers -> int64 (float64 with NaN when some are missing); nullable floats and
    float16 -> float64 (pd.NA -> NaN); nullable booleans -> bool (float64 0/1 with NaN when some
    are missing: the same numeric column formulaic makes of a bool); `string` and Arrow text ->
    object of str (NaN for missing). Arrow-backed columns (dtype_backend="pyarrow") alike."""
    dt = col.dtype
    if isinstance(dt, pd.CategoricalDtype):
        return None
    if isinstance(dt, np.dtype):
        return col.astype(np.float64) if dt == np.float16 else None
    if isinstance(dt, pd.StringDtype) and dt.na_value is not pd.NA:
        return None  # pandas' default text type ('str', NaN for missing) is handled as object text
    if isinstance(dt, pd.ArrowDtype) and type(dt.pyarrow_dtype).__name__ == "DictionaryType":
        # an Arrow dictionary column (dtype_backend="pyarrow"): a category, with its levels sorted
        # when the dictionary is unordered (its order is that of first appearance), as text's are
        fast = _arrow_text_categories(col)
        if fast is not None:
            return fast
        values = col.to_numpy(dtype=object, na_value=np.nan)
        levels = pd.unique(col.dropna().to_numpy(dtype=object))
        ordered = bool(dt.pyarrow_dtype.ordered)
        if not ordered:
            try:
                levels = sorted(levels)
            except TypeError:
                pass
        return pd.Series(pd.Categorical(values, categories=levels, ordered=ordered), index=col.index, name=col.name)
    missing = bool(col.isna().any())
    if pd.api.types.is_bool_dtype(dt):
        values = col.to_numpy(dtype=float, na_value=np.nan) if missing else col.to_numpy(dtype=bool)
    elif pd.api.types.is_integer_dtype(dt):
        values = col.to_numpy(dtype=float, na_value=np.nan) if missing else col.to_numpy(dtype=np.int64)
    elif pd.api.types.is_float_dtype(dt):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    elif pd.api.types.is_string_dtype(dt):
        inferred = _inferred_text_dtype()
        if inferred is not None:
            # pandas takes an object array of text for its own text dtype (NaN for missing): the
            # same column, cast from Arrow to Arrow without a Python object per row
            return col.astype(inferred)
        values = col.to_numpy(dtype=object, na_value=np.nan)
    else:
        return None
    return pd.Series(values, index=col.index, name=col.name)


def _inferred_text_dtype() -> pd.StringDtype | None:
    """The dtype pandas gives a Series made of an object array of text, when it is a text dtype
    with NaN for missing (pandas 3's 'str'); None when it keeps object (pandas 2)."""
    dt = pd.Series(np.array(["a", np.nan], dtype=object)).dtype
    return dt if isinstance(dt, pd.StringDtype) and dt.na_value is not pd.NA else None


def _arrow_text_categories(col: pd.Series) -> pd.Series | None:
    """`plain_column` of an Arrow dictionary column of text, from the dictionary's indices (no
    value of a row made a Python object): the same categories (the texts in use, sorted unless the
    dictionary is ordered, else in order of first appearance) and codes. None for other
    dictionaries (other value types, a dictionary with missing or repeated entries)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dt = col.dtype.pyarrow_dtype
    if not (pa.types.is_string(dt.value_type) or pa.types.is_large_string(dt.value_type)):
        return None
    chunked = col.array.__arrow_array__()  # the column's own Arrow data (a ChunkedArray), no copy
    if chunked.num_chunks == 0:
        return None
    combined = chunked.unify_dictionaries() if chunked.num_chunks > 1 else chunked
    dictionary = combined.chunk(0).dictionary
    if dictionary.null_count or len(pc.unique(dictionary)) != len(dictionary):
        return None
    index = np.concatenate([pc.fill_null(c.indices, -1).to_numpy(zero_copy_only=False).astype(np.intp)
                            for c in combined.chunks])
    present = index >= 0
    used, first = np.unique(index[present], return_index=True)
    used = used[np.argsort(first, kind="stable")]  # the texts in use, in order of first appearance
    texts = dictionary.to_numpy(zero_copy_only=False)
    levels = list(texts[used])
    order = np.arange(used.size)
    if not dt.ordered:
        order = np.argsort(np.asarray(levels, dtype=object), kind="stable")
    position = np.full(len(dictionary), -1, dtype=np.intp)
    position[used[order]] = np.arange(used.size)
    codes = np.where(present, position[np.where(present, index, 0)], -1)
    categories = [levels[i] for i in order]
    return pd.Series(pd.Categorical.from_codes(codes, categories=categories, ordered=bool(dt.ordered)),
                     index=col.index, name=col.name)


def check_duplicate_columns(frame: pd.DataFrame, what: str = "data") -> None:
    """Two columns of one name: a model could not say which it means."""
    if frame.columns.is_unique:  # (cached by the index: no pass over the names)
        return
    dup = frame.columns[frame.columns.duplicated()]
    if len(dup):
        names = list(dict.fromkeys(str(c) for c in dup))
        raise DataError(
            f"The {what} have more than one column named {preview([repr(n) for n in names])}. Rename or drop the "
            "duplicates (e.g. df.loc[:, ~df.columns.duplicated()]) so that each name means one column."
        )


def _dtypes(frame: pd.DataFrame) -> np.ndarray:
    """frame.dtypes as an array, in column order: the block manager's own array where pandas has
    one (frame.dtypes wraps it in a new Series, ~3x the cost on a new frame: tens of microseconds
    of a small fit), else frame.dtypes."""
    get = getattr(getattr(frame, "_mgr", None), "get_dtypes", None)
    if get is not None:
        try:
            out = get()
            if isinstance(out, np.ndarray) and out.shape == (frame.shape[1],):
                return out
        except Exception:  # (an internal of pandas: any surprise falls back to the public way)
            pass
    return frame.dtypes.to_numpy()


def plain_dtypes(frame: pd.DataFrame, columns=None) -> pd.DataFrame:
    """The frame with `columns` (default: all) of numpy dtypes (`plain_column`); the same object
    when nothing needed converting, else a shallow copy (attrs kept)."""
    check_duplicate_columns(frame)
    out = None
    dtypes = dict(zip(frame.columns, _dtypes(frame)))
    for c in frame.columns if columns is None else columns:
        dt = dtypes[c]
        if isinstance(dt, pd.CategoricalDtype) or (isinstance(dt, np.dtype) and dt != np.float16):
            continue  # `plain_column` keeps these as they are: no column look-up (tens of microseconds each)
        new = plain_column(frame[c])
        if new is not None:
            if out is None:
                out = frame.copy(deep=False)
                out.attrs = dict(frame.attrs)
            out[c] = new
    return frame if out is None else out


def _all_text(col: pd.Series) -> bool:
    """Whether every non-missing value is a string (a text column, not numbers with some text)."""
    if pd.api.types.is_string_dtype(col.dtype) and not pd.api.types.is_object_dtype(col.dtype):
        return True
    return pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty")


@dataclass(frozen=True)
class _DistinctText:
    """A text column's non-missing values as text (str(value)), each distinct one once:
    `codes[i]` is the distinct text of the i-th non-missing row, `rows` the positions of those
    rows in the column. The checks of text (a regex per value) run over `texts` only."""

    texts: np.ndarray  # object array of str
    codes: np.ndarray
    rows: np.ndarray

    @classmethod
    def of(cls, col: pd.Series) -> _DistinctText:
        if pd.api.types.is_string_dtype(col.dtype) and pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
            # all text: the distinct values are the distinct texts (missing values: code -1)
            codes, uniques = pd.factorize(col)
            rows = np.flatnonzero(codes >= 0)
            return cls(np.asarray(uniques, dtype=object), codes[rows], rows)
        present = col.notna().to_numpy()
        # str() of every value first (C code for text): equal numbers of other types (1, 1.0,
        # True) stay distinct texts, as the row-by-row check saw them
        text = col[present].astype(str)
        codes, uniques = pd.factorize(text)
        return cls(np.asarray(uniques, dtype=object), codes, np.flatnonzero(present))

    def share(self, pattern: re.Pattern) -> tuple[np.ndarray, float]:
        """(which distinct texts match `pattern` at their start, the share of rows that do)."""
        hit = np.fromiter((pattern.match(t) is not None for t in self.texts), dtype=bool, count=len(self.texts))
        return hit, float(hit[self.codes].mean()) if self.codes.size else float("nan")


def _numeric_looking_text(col: pd.Series, distinct: _DistinctText | None = None) -> tuple[bool, dict[str, list[int]]]:
    """(True, {bad text: rows}) when most values of a text column are numbers. The regex runs once
    per distinct text (`_DistinctText`), not per row."""
    if pd.api.types.is_numeric_dtype(col) or isinstance(col.dtype, pd.CategoricalDtype):
        return False, {}
    d = distinct if distinct is not None else _DistinctText.of(col)
    if d.codes.size == 0:
        return False, {}
    is_num, share = d.share(_NUMBER)
    if share < 0.5 or is_num.all():
        return bool(is_num.all()), {}
    # the rows of each text that is not a number, the texts in order of first appearance
    bad_rows = np.flatnonzero(~is_num[d.codes])
    by_text = d.codes[bad_rows]
    order = np.argsort(by_text, kind="stable")
    texts, starts = np.unique(by_text[order], return_index=True)
    groups = np.split(d.rows[bad_rows[order]], starts[1:])
    first = {int(t): g for t, g in zip(texts, groups)}
    return True, {str(d.texts[t]): first[t].tolist() for t in sorted(first, key=lambda t: first[t][0])}


#: `infer_dtype` kinds of an object column that hold no date, duration or complex number
_PLAIN_KINDS = frozenset({"string", "integer", "floating", "mixed-integer-float", "boolean", "empty", "decimal", "bytes"})


def _check_kind(col: pd.Series, v: str, is_outcome: bool) -> None:
    """Dates, durations and complex numbers are not numbers a model can use as they are: say what
    they are and how to convert them (rather than calling a date column text, or numpy dropping
    the imaginary part)."""
    dt = col.dtype
    if isinstance(dt, np.dtype) and dt.kind in "iufb":
        return  # numbers and booleans of numpy: none of the kinds below (no pass over the values)
    sample = col.dropna()
    first = sample.iloc[0] if len(sample) else None
    role = "The outcome" if is_outcome else "The predictor"
    # an object column's distinct kinds of value (C loops, `join.value_types`); text and numbers,
    # the usual object columns, are told by `infer_dtype` in one C pass without them
    types: list[type] = []
    if pd.api.types.is_object_dtype(dt) and len(sample) and pd.api.types.infer_dtype(sample) not in _PLAIN_KINDS:
        types = value_types(sample.to_numpy(dtype=object))[1]
    if (isinstance(dt, np.dtype) and dt.kind == "M") or isinstance(dt, pd.DatetimeTZDtype) or (
        types and all(issubclass(t, (pd.Timestamp, np.datetime64)) for t in types)
    ):
        raise DataError(
            f"{role} '{v}' is a date/time column (e.g. {first}), not a number. Convert it to a number of your "
            f"chosen unit, e.g. days since a date: df['{v}_days'] = (df['{v}'] - pd.Timestamp('{pd.Timestamp(first).date()}')).dt.days, "
            f"or years: df['{v}'].dt.year; then use that column."
        )
    if (isinstance(dt, np.dtype) and dt.kind == "m") or (
        types and all(issubclass(t, (pd.Timedelta, np.timedelta64)) for t in types)
    ):
        raise DataError(
            f"{role} '{v}' is a duration column (e.g. {first}), not a number. Convert it to a number of your "
            f"chosen unit, e.g. days: df['{v}_days'] = df['{v}'].dt.total_seconds() / 86400; then use that column."
        )
    if pd.api.types.is_complex_dtype(dt) or any(issubclass(t, complex) for t in types):
        raise DataError(
            f"{role} '{v}' holds complex numbers (e.g. {first}): a linear mixed model needs real numbers. Use their "
            f"real part (df['{v}'].to_numpy().real) or their modulus (abs), as you mean."
        )


def missing_and_infinite(col: pd.Series) -> tuple[int, int]:
    """(missing, infinite) values of a column; one compiled pass for float columns."""
    dt = col.dtype
    if isinstance(dt, np.dtype) and dt.kind in "iub":
        return 0, 0
    if isinstance(dt, np.dtype) and dt.kind == "f":
        from multilevel.numerics.rowpass import kernel

        nan, inf = kernel("nonfinite")(np.ascontiguousarray(col.to_numpy()))
        return int(nan), int(inf)
    nan = int(col.isna().sum())
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and nan < len(col):
        return nan, int(np.isinf(col.to_numpy(dtype=float, na_value=np.nan)).sum())
    return nan, 0


@dataclass
class ValueFacts:
    """What the checks over all rows (`judge_values`) need of each variable, gathered chunk by chunk
    when the rows come in chunks (a stream, Dask partitions; `design.chunked`): rows, missing
    values, the rows of infinite values and of text among numbers, the text levels. Rows are
    numbered from 0 over all chunks (`add` shifts a chunk's by the rows before it)."""

    rows: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    infinite: dict[str, list[int]] = field(default_factory=dict)
    bad_text: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    levels: dict[str, dict[str, None]] = field(default_factory=dict)  # text variable -> its values, in order of appearance
    numeric_text: dict[str, bool] = field(default_factory=dict)
    notes: dict[str, None] = field(default_factory=dict)
    #: (variable, role) -> (the first such value, its rows): cells holding a list, array, ...
    not_single: dict[tuple[str, str], tuple[object, list[int]]] = field(default_factory=dict)
    blank: dict[str, int] = field(default_factory=dict)  # id column -> rows with a blank id (`blank_id_note`)

    def add(self, o: ValueFacts) -> ValueFacts:
        """These facts followed by those of the next chunk `o`."""
        for v, n in o.missing.items():
            self.missing[v] = self.missing.get(v, 0) + n
        for v, rows in o.infinite.items():
            self.infinite.setdefault(v, []).extend(r + self.rows for r in rows)
        for v, bad in o.bad_text.items():
            mine = self.bad_text.setdefault(v, {})
            for t, rows in bad.items():
                mine.setdefault(t, []).extend(r + self.rows for r in rows)
        for v, lv in o.levels.items():
            self.levels.setdefault(v, {}).update(lv)
        for v, flag in o.numeric_text.items():
            self.numeric_text[v] = self.numeric_text.get(v, True) and flag
        # a blank-id note counts the rows of all chunks: one note per id column, in its first place
        whose = {blank_id_note(n, g): g for facts in (self, o) for g, n in facts.blank.items()}
        for g, n in o.blank.items():
            self.blank[g] = self.blank.get(g, 0) + n
        notes = [*self.notes, *o.notes]
        self.notes = dict.fromkeys(blank_id_note(self.blank[whose[t]], whose[t]) if t in whose else t for t in notes)
        for key, (first, rows) in o.not_single.items():
            self.not_single.setdefault(key, (first, []))[1].extend(r + self.rows for r in rows)
        self.rows += o.rows
        return self


def blank_id_note(blank: int, group: str) -> str:
    """The data report's note on rows whose id is blank text."""
    return f"{blank} rows have a blank id in '{group}': counted as missing ids (those rows are dropped)."


def _all_missing(v: str, n_missing: int, n: int) -> None:
    if n_missing == n:
        raise DataError(
            f"'{v}' has no value in any of the {n} rows (all missing). Drop it from the model or "
            "check how the file was read (a misspelt missing-value code, a wrong separator)."
        )


def _text_in_numbers(v: str, bad: dict[str, list[int]]) -> None:
    if bad:
        examples = "; ".join(f"{t!r} (row{'s' if len(r) > 1 else ''} {preview(r, 3)})" for t, r in list(bad.items())[:4])
        raise DataError(
            f"'{v}' is a column of numbers with some text in it: {examples}"
            + (f" and {len(bad) - 4} other texts" if len(bad) > 4 else "")
            + ". Make those entries missing (e.g. read with na_values=[...], or pd.to_numeric(..., errors='coerce')) "
            "or correct them."
        )


def _text_levels(v: str, values: list, n: int, numeric_text: bool) -> str | None:
    """Refuse a text predictor of too many levels; the note for text that looks like numbers."""
    levels = len(values)
    if levels > MAX_LEVELS and levels > 0.1 * n and numeric_text:
        raise DataError(
            f"'{v}' is text whose values look like numbers ({preview([repr(x) for x in values[:3]], 3)}), "
            f"with {levels} different values in {n} rows. Text is a factor (as in R): it would make "
            f"{levels - 1} fixed-effect columns. For a numeric effect convert it: df['{v}'] = pd.to_numeric(df['{v}'])."
        )
    if levels > MAX_LEVELS and levels > 0.1 * n:
        raise DataError(
            f"'{v}' is text with {levels} different values in {n} rows; as a factor it would make "
            f"{levels - 1} fixed-effect columns. If it holds numbers, convert it (pd.to_numeric); if it is an "
            "id, use it as the grouping factor instead."
        )
    if numeric_text:
        # R's rule: a character column is a factor, whatever its values look like
        shown = sorted(map(str, values), key=lambda t: float(t))
        return (
            f"'{v}' is text whose values look like numbers ({preview(shown, 4)}): it was treated as a factor "
            f"({levels} levels, treatment contrasts), as R does. For a numeric effect convert it: "
            f"df['{v}'] = pd.to_numeric(df['{v}'])."
        )
    return None


def _infinite(v: str, rows: list[int]) -> None:
    if rows:
        raise DataError(
            f"'{v}' has {len(rows)} infinite value{'s' if len(rows) > 1 else ''} (row{'s' if len(rows) > 1 else ''} "
            f"{preview(rows)}). Replace them by missing values, or correct them."
        )


def judge_values(facts: ValueFacts, variables: list[str], group: str) -> tuple[str, ...]:
    """The checks of `check_values` that need all rows, from the facts of every chunk, in the
    order `check_values` makes them; returns their notes for the data report."""
    for (v, role), (first, rows) in facts.not_single.items():
        raise not_single_error(first, v, role, rows)
    notes = list(facts.notes)
    for v in variables:
        _all_missing(v, facts.missing.get(v, 0), facts.rows)
        if v == group:
            continue
        _text_in_numbers(v, facts.bad_text.get(v, {}))
        if v in facts.levels:
            note = _text_levels(v, list(facts.levels[v]), facts.rows, facts.numeric_text.get(v, False))
            if note:
                notes.append(note)
        _infinite(v, facts.infinite.get(v, []))
    return tuple(notes)


def _report_infinite(v: str, col: pd.Series, facts) -> None:
    """The rows of column v holding an infinity: refused now (in memory) or kept in `facts` (a
    stream's chunk, judged with every row's facts by `judge_values`)."""
    rows = np.flatnonzero(np.isinf(col.to_numpy(dtype=float, na_value=np.nan))).tolist()
    if facts is None:
        _infinite(v, rows)
    else:
        facts.infinite[v] = rows


def check_values(
    data: pd.DataFrame, variables: list[str], outcome: str, group: str, column=None, facts: ValueFacts | None = None,
    id_codes: list | None = None, other_groups: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, dict[str, int], tuple[str, ...]]:
    """The bad-input catalogue, before any row is dropped. Returns the data (a copy when a column
    was changed: extension dtypes made plain, blank ids made missing, numbers written as text in
    an object column of numbers converted), the number of missing values of each variable (for
    `select_rows`), and notes for the data report (text predictors that look like numbers, which
    stay factors, as in R).

    With `facts` (`data` is one chunk of the rows), the checks that need all rows (a variable
    with no value, text among numbers, text of too many levels, infinite values) only gather
    their facts there; `judge_values` makes them, with the same messages, after the last chunk.
    `id_codes`: a text id column's (codes, distinct ids), when the checks made them, are appended
    there (`join.normalise_ids`). `other_groups`: the id columns of further grouping factors (a model
    with several), which get the id checks of `group`'s column (their codes are not kept)."""
    column = column or data.__getitem__
    groups = (group, *(g for g in other_groups if g != group))

    def check_single_values(values: pd.Series, v: str, role: str) -> None:
        """`join.check_single_values`; over all rows at the end (`judge_values`) with `facts`."""
        bad = not_single_rows(values)
        if bad and facts is None:
            raise not_single_error(values.iloc[bad[0]], v, role, bad)
        if bad and facts is not None:
            facts.not_single[(v, role)] = (values.iloc[bad[0]], bad)

    for g in groups:
        check_single_values(column(g), g, "The id column")
    if facts is not None and facts.not_single:
        facts.rows = len(data)
        return data, {}, ()  # nothing else can be checked on these ids (as in memory: the first error)
    ids_before = {g: column(g) for g in groups}
    kinds = {g: id_kind(ids_before[g]) for g in groups}
    for g in groups:
        if kinds[g] == "mixed":
            raise mixed_id_error(column(g), g, "the data")
    converted = None
    notes: list[str] = []

    def replace(v: str, values: pd.Series) -> pd.Series:
        """Put `values` in place of column v (in a shallow copy, made once); `column` reads the copy."""
        nonlocal converted, column
        if converted is None:
            converted = data.copy(deep=False)
            converted.attrs = dict(data.attrs)
        converted[v] = values
        column = converted.__getitem__
        return values

    for v in variables:
        dt = column(v).dtype
        if v not in groups and isinstance(dt, np.dtype) and dt.kind in "iuf" and dt != np.float16:
            continue  # numpy numbers: single values of a number kind, plain already (no pandas type tests)
        if v not in groups:
            check_single_values(column(v), v, "The outcome" if v == outcome else "The variable")
            _check_kind(column(v), v, v == outcome)
        plain = plain_column(column(v))
        if plain is not None:
            replace(v, plain)
    if facts is not None and facts.not_single:
        facts.rows = len(data)
        return data, {}, ()
    if pd.api.types.is_bool_dtype(column(outcome)) and outcome not in groups:
        # R's model frame takes TRUE/FALSE as 1/0 (lm(y ~ x) with a logical y): so do we, and say
        # so; a 0/1 outcome then gets `warn_outcome_kind`'s warning
        replace(outcome, column(outcome).astype(np.float64))
        notes.append(f"The outcome '{outcome}' is True/False: taken as 1/0 (as R does).")
    for g in groups:
        ids0 = column(g)
        if ids0.dtype.kind == "f" and ids0.notna().any() and float(np.nanmax(np.abs(ids0.to_numpy()))) >= 2**53:
            notes.append(
                f"'{g}' holds ids of {len(str(int(np.nanmax(np.abs(ids0.to_numpy())))))} digits stored as floating-point "
                "numbers, which keep only about 16 digits: ids that differ only beyond that may have been read as the same unit. "
                f"Read the column as integers or text (e.g. pd.read_csv(..., dtype={{'{g}': str}}))."
            )
        # the kind found above, while the id column is the one judged (not made plain since)
        ids, blank = normalise_ids(column(g), id_codes if g == group else None, kinds[g] if column(g) is ids_before[g] else None)
        if ids is not column(g):
            replace(g, ids)
        if blank:
            notes.append(blank_id_note(blank, g))
            if facts is not None:
                facts.blank[g] = blank
    missing: dict[str, int] = {}
    for v in variables:
        col = column(v)
        if v == group and id_codes:
            # the text ids' codes have them (-1: missing or blank), no second pass over the texts
            n_missing, n_infinite = int(np.count_nonzero(id_codes[0][0] < 0)), 0
        else:
            n_missing, n_infinite = missing_and_infinite(col)
        missing[v] = n_missing
        if facts is None:
            _all_missing(v, n_missing, len(col))
        if v in groups:
            continue
        dt = col.dtype
        if isinstance(dt, np.dtype) and dt.kind in "iuf":
            # numpy numbers: no text to judge (`_numeric_looking_text` finds none), only infinities
            if n_infinite:
                _report_infinite(v, col, facts)
            continue
        distinct = None
        if not pd.api.types.is_numeric_dtype(col) and not isinstance(col.dtype, pd.CategoricalDtype):
            distinct = _DistinctText.of(col)
            if distinct.codes.size and distinct.share(_DECIMAL_COMMA)[1] > 0.5:
                raise DataError(
                    f"'{v}' holds numbers written with decimal commas (e.g. {distinct.texts[distinct.codes[0]]!r}). "
                    "Read the file with decimal=',' (e.g. ml.read(path, sep=';', decimal=','))."
                )
        numeric_text, bad = _numeric_looking_text(col, distinct)
        if facts is None:
            _text_in_numbers(v, bad)
        elif bad:
            facts.bad_text[v] = bad
        text_column = not pd.api.types.is_numeric_dtype(col) and not isinstance(col.dtype, pd.CategoricalDtype)
        if v == outcome and text_column and (_all_text(col) or not numeric_text) and not bad:
            example = preview([repr(x) for x in pd.unique(col.dropna())[:3]], 3)
            raise DataError(
                f"The outcome '{v}' is not numeric: it is text (values like {example}). A linear mixed model needs a "
                "numeric outcome: "
                + (f"convert it, e.g. df['{v}'] = pd.to_numeric(df['{v}']) (errors='coerce' makes unreadable entries "
                   "missing)." if numeric_text else "code it as numbers if a numeric outcome is meant.")
            )
        if numeric_text and not _all_text(col) and not bad:
            # an object column of numbers, some of them written as text ("3" beside 3.5): numbers
            col = replace(v, pd.to_numeric(col))
            n_missing, n_infinite = missing_and_infinite(col)
            missing[v] = n_missing
            notes.append(f"'{v}' mixes numbers and numbers written as text: all were read as numbers.")
        elif v != outcome and text_column:
            values = list(pd.unique(col.dropna()))
            if facts is None:
                note = _text_levels(v, values, len(col), numeric_text)
                if note:
                    notes.append(note)
            else:
                facts.levels[v] = dict.fromkeys(values)
                facts.numeric_text[v] = numeric_text
        if n_infinite:
            _report_infinite(v, col, facts)
    if facts is not None:
        facts.rows = len(data)
        facts.missing = dict(missing)
        facts.notes = dict.fromkeys(notes)
        notes = []
    return (data if converted is None else converted), missing, tuple(notes)


def _id_labels(ids: pd.Series) -> np.ndarray:
    """Unit ids as text, whole-number floats without a decimal point (`join.canonical_ids`), so that
    messages and the data report write a unit the same way everywhere."""
    from multilevel.data.join import canonical_ids

    return canonical_ids(ids.reset_index(drop=True)).to_numpy(dtype=object)


def level2_missing_units(data: pd.DataFrame, level2_vars: list[str], group: str) -> dict[str, tuple[str, ...]]:
    """{unit: level-2 variables missing for it}."""
    out: dict[str, list[str]] = {}
    has_id = data[group].notna().to_numpy()  # rows without an id are dropped for that, not here
    # ids as the rest of the report prints them (a float id 1224.0 from a .sav file as 1224)
    labels = _id_labels(data[group])
    for v in level2_vars:
        miss = data[v].isna().to_numpy() & has_id
        for u in pd.unique(labels[miss]):
            out.setdefault(u, []).append(v)
    return {u: tuple(vs) for u, vs in out.items()}


def check_level2_missing(l2_missing: dict[str, tuple[str, ...]]) -> None:
    """HLM's rule: refuse units with a missing level-2 value ({unit: its missing variables})."""
    if l2_missing:
        raise DataError(
            f"{len(l2_missing)} units have missing level-2 values: "
            + preview([f"{u} ({', '.join(v)})" for u, v in l2_missing.items()])
            + ". HLM refuses missing level-2 data; fill them in, or pass level2_missing='drop' to leave those "
            "units out (the data report lists them)."
        )


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
    notes: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, DataReport, np.ndarray, np.ndarray]:
    """Apply the level-2 and level-1 missing-data rules (module doc). `codes` number the rows'
    units 0..len(units)-1 (-1: no id; those rows are dropped listwise, counted under the id
    column). Returns the rows used (with the input's own row index), the report, and the codes
    and units of the rows used (units without rows left are dropped from both)."""
    if level2_missing not in ("error", "drop"):
        raise DataError(f"level2_missing must be 'error' or 'drop', not {level2_missing!r}.")
    missing = dict(missing or {})
    if codes.size and codes.min() < 0:
        missing[group] = int((codes < 0).sum())

    def has_missing(v: str) -> bool:
        return missing[v] > 0 if v in missing else bool(data[v].hasnans)

    l2 = [v for v in level2_vars if v in variables and has_missing(v)]
    l2_missing = level2_missing_units(data, l2, group) if l2 else {}
    if level2_missing == "error":
        check_level2_missing(l2_missing)
    with_missing = [v for v in variables if has_missing(v)]
    keep = None
    by_var: tuple[tuple[str, int], ...] = ()
    if with_missing or l2_missing:
        keep_l2 = ~pd.Series(_id_labels(data[group])).isin(set(l2_missing)).to_numpy() if l2_missing else np.ones(len(data), bool)
        miss = data[with_missing].isna().to_numpy() & keep_l2[:, None]
        keep = keep_l2 & ~miss.any(axis=1)
        by_var = tuple((v, int(miss[:, i].sum())) for i, v in enumerate(with_missing) if miss[:, i].any())
    kept_codes = codes if keep is None else codes[keep]
    sizes = np.bincount(kept_codes, minlength=len(units))
    has_rows = sizes > 0
    dropped_units = tuple(str(u) for u in units[~has_rows] if str(u) not in l2_missing)
    report = DataReport(
        n_rows_in=len(data) + (join.unmatched_level1_rows if join else 0),
        n_rows_used=int(kept_codes.size),
        dropped_by_variable=by_var,
        n_units_in=len(units) + (len(join.unmatched_level1_ids) if join else 0),
        n_units_used=int(has_rows.sum()),
        units_dropped=dropped_units,
        level2_dropped=tuple(l2_missing.items()),
        unmatched_level1_ids=join.unmatched_level1_ids if join else (),
        unmatched_level1_rows=join.unmatched_level1_rows if join else 0,
        level2_rows_without_units=join.units_without_level1_rows if join else (),
        singleton_units=tuple(sorted(str(u) for u in units[sizes == 1])),
        source=str(data.attrs.get("source", "")),
        notes=tuple(data.attrs.get("read_notes", ())) + tuple(notes),
    )
    if keep is None:
        return data, report, codes, units
    if not has_rows.all():
        renumber = np.cumsum(has_rows) - 1
        kept_codes = renumber[kept_codes]
    return data.loc[keep], report, kept_codes.astype(np.intp, copy=False), units[has_rows]


def check_units(n_units: int, n_rows: int, group: str) -> None:
    """lme4's check (checkNlevels): each grouping factor needs fewer levels than observations.
    When every unit has one row, a unit's random intercept and its row's residual are the same
    quantity: tau00 and sigma2 are not identified (only their sum is)."""
    if n_units >= n_rows:
        raise DataError(
            f"Every unit of '{group}' has a single row ({n_units} units, {n_rows} rows used): the level-2 and "
            "level-1 variances cannot be told apart (lme4: 'number of levels of each grouping factor must be < "
            "number of observations'). Check the grouping column (is it a row id?), or fit a one-level "
            "regression."
        )


@dataclass(frozen=True)
class OutcomeKind:
    """What `warn_outcome_kind` needs of the outcome over the rows used, gathered chunk by chunk when
    the rows come in chunks (`design.chunked`, pass 1; `add` joins consecutive chunks): whether every
    value is a whole number >= 0, the smallest value, up to three distinct values, and for the
    median: the rows <= MEDIAN_COUNT, the largest of those and the smallest value above it."""

    rows: int = 0
    whole: bool = True  # every value a whole number >= 0
    low: float = np.inf  # the smallest value
    distinct: frozenset = frozenset()  # up to 3 distinct values (3: three or more)
    small: int = 0  # rows <= MEDIAN_COUNT
    small_max: float = -np.inf
    large_min: float = np.inf

    @classmethod
    def of(cls, y: np.ndarray) -> OutcomeKind:
        if y.size == 0:
            return cls()
        # a fraction among the first rows (the usual continuous outcome) settles it without
        # arrays of the length of y
        if y.min() < 0 or not np.all(np.floor(y[:64]) == y[:64]) or not np.all(np.floor(y) == y):
            return cls(rows=y.size, whole=False)
        small = y <= MEDIAN_COUNT
        k = int(small.sum())
        return cls(y.size, True, float(y.min()), frozenset(np.unique(y)[:3].tolist()), k,
                   float(y[small].max()) if k else -np.inf, float(y[~small].min()) if k < y.size else np.inf)

    def add(self, o: OutcomeKind) -> OutcomeKind:
        if not (self.whole and o.whole):
            return OutcomeKind(self.rows + o.rows, whole=False)
        return OutcomeKind(self.rows + o.rows, True, min(self.low, o.low), frozenset(sorted(self.distinct | o.distinct)[:3]),
                           self.small + o.small, max(self.small_max, o.small_max), min(self.large_min, o.large_min))

    @property
    def median_small(self) -> bool:
        """np.median(y) <= MEDIAN_COUNT: the middle value(s) of the sorted y, from the counts."""
        n, k = self.rows, self.small
        if k >= n // 2 + 1:  # both middle values (positions (n-1)//2 and n//2) are small
            return True
        if k <= (n - 1) // 2:  # neither is
            return False
        return (self.small_max + self.large_min) / 2 <= MEDIAN_COUNT  # n even, k = n/2: their mean

    def kind(self) -> tuple[str, str] | None:
        """(what the outcome looks like, the model for it), or None."""
        if not self.whole or self.rows == 0:
            return None
        if self.distinct == {0.0, 1.0}:
            return "binary (only 0 and 1)", "a logistic mixed model (lme4's glmer(family = binomial))"
        if self.low == 0 and len(self.distinct) > 2 and self.median_small:
            return "a count (whole numbers from 0)", "a Poisson or negative-binomial mixed model (lme4's glmer)"
        return None


#: a whole-number outcome from 0 with its median at most this looks like a count
MEDIAN_COUNT = 10


def warn_outcome_kind(y: np.ndarray | OutcomeKind, outcome: str) -> None:
    """A warning (`MultilevelWarning`) when the outcome looks binary (only 0 and 1) or like a count
    (whole numbers >= 0, 0 among them, median <= 10): a linear model's normal residuals and
    unbounded predictions do not fit such data; a generalized model (logistic, Poisson; lme4's
    glmer) does. Generalized models are planned; until then the linear fit is returned. `y`: the
    outcome on the rows used, or its `OutcomeKind` gathered chunk by chunk (a stream)."""
    import warnings

    found = (y if isinstance(y, OutcomeKind) else OutcomeKind.of(y)).kind()
    if found is None:
        return
    kind, model = found
    warnings.warn(
        f"The outcome '{outcome}' looks {kind}: a linear mixed model treats it as normal and continuous, so its "
        f"standard errors and predictions may mislead. {model[0].upper() + model[1:]} is the usual choice; "
        "multilevel does not fit generalized models yet (they are planned). The linear fit is returned.",
        MultilevelWarning,
        stacklevel=4,
    )


def check_outcome(y: np.ndarray, outcome: str) -> None:
    if y.size and y.min() == y.max():
        raise DataError(
            f"The outcome '{outcome}' takes a single value ({y[0]:g}) in every row used: there is no "
            "variation to model. Check the outcome column and the rows selected."
        )
