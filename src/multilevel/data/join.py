"""Joining a level-1 table and a level-2 table on the unit id, as HLM's MDM step does.

Checks, each with a message that names the ids or the variable:
  * the id column is in both tables and neither mixes numbers and text; ids are compared as text
    (whole numbers without a decimal point: 1224, 1224.0 and "1224" match; text ids without
    surrounding spaces, blank text is a missing id: `normalise_ids`, which a plain fit applies too);
    the joined table keeps the level-1 table's own ids, so that the fit sees them as a plain fit
    of the same level-1 table would;
  * duplicate ids in the level-2 table: refused;
  * level-1 ids with no level-2 row: refused (listed), or those rows dropped and reported with
    `level2_missing="drop"`;
  * level-2 rows with no level-1 rows: reported, not an error;
  * a variable in both tables: it must agree with the level-2 value in every row (then one copy
    is kept); otherwise refused, naming the variable and units.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from multilevel.errors import DataError, preview


@dataclass(frozen=True)
class JoinReport:
    level2_variables: tuple[str, ...]
    level2_rows: int
    units_without_level1_rows: tuple[str, ...]
    unmatched_level1_ids: tuple[str, ...]  # dropped (level2_missing="drop")
    unmatched_level1_rows: int


#: `pd.api.types.infer_dtype` kinds (C code, one pass) whose values are all numbers (int, float, numpy's)
_NUMBER_KINDS = frozenset({"integer", "floating", "mixed-integer-float"})
#: `infer_dtype` kinds whose values are all single values (never a list, tuple, set, dict or array)
_SCALAR_KINDS = frozenset({
    "string", "bytes", "empty", "integer", "floating", "mixed-integer-float", "boolean", "decimal", "complex",
    "datetime64", "datetime", "date", "timedelta64", "timedelta", "time", "period", "interval",
})
_NOT_SINGLE = (list, tuple, set, frozenset, dict, np.ndarray, pd.Series)


def _is_number_type(t: type) -> bool:
    return issubclass(t, (int, float, np.integer, np.floating)) and not issubclass(t, bool)


def value_types(values: np.ndarray) -> tuple[np.ndarray, list[type]]:
    """(code of each value's Python type, the distinct types): an object column's values sorted by
    type with C loops (`type` applied by a numpy ufunc, then a hash table), so that the checks
    judge each distinct type once, never each row in Python."""
    codes, types = pd.factorize(np.frompyfunc(type, 1, 1)(values))
    return codes, list(types)


def _text_mask(values: np.ndarray) -> np.ndarray:
    """Which values of an object array are text (str)."""
    codes, types = value_types(values)
    return np.isin(codes, [i for i, t in enumerate(types) if issubclass(t, str)])


def id_kind(values: pd.Series) -> str:
    """'number', 'text' or 'mixed' for an id column (missing values ignored). Categories are
    judged by the categories in use, an object column by the kinds of its values (C loops,
    `value_types`), never value by value in Python."""
    if pd.api.types.is_numeric_dtype(values):
        return "number"
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        used = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(values.cat.categories)))
        return id_kind(pd.Series(values.cat.categories[used]))
    if pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype):
        if isinstance(values.array, pd.arrays.ArrowStringArray):
            # Arrow's count of nulls (a missing text is a null there), not a pass over the rows
            return "text" if values.array.__arrow_array__().null_count < len(values) else "number"
        return "text" if values.notna().any() else "number"
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred == "string":
        return "text"
    if inferred == "empty":
        return "number"
    if inferred in _NUMBER_KINDS:
        return "number"
    v = values.dropna().to_numpy(dtype=object)
    if len(v) == 0:
        return "number"
    kinds = {"number" if _is_number_type(t) else "text" for t in value_types(v)[1]}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def mixed_id_error(values: pd.Series, column: str, where: str) -> DataError:
    v = values.dropna().to_numpy(dtype=object)
    codes, types = value_types(v)
    nums = v[np.isin(codes, [i for i, t in enumerate(types) if issubclass(t, (int, float, np.integer, np.floating))])]
    texts = v[np.isin(codes, [i for i, t in enumerate(types) if issubclass(t, str)])]
    return DataError(
        f"The id column '{column}' in {where} mixes numbers ({preview(pd.unique(pd.Series(nums.tolist())).tolist(), 3)}) "
        f"and text ({preview([repr(t) for t in pd.unique(pd.Series(texts.tolist()))], 3)}). Ids must be of one kind: "
        f"convert the column, e.g. df['{column}'] = df['{column}'].astype(str)."
    )


def check_single_values(values: pd.Series, column: str, role: str) -> None:
    """A cell must hold one value: a list, tuple, set, dict or array in an object column (e.g. a
    column built from zip() or a groupby().agg(list)) is refused, naming the rows; pandas would
    otherwise fail on them (unhashable) or take them as missing."""
    bad = not_single_rows(values)
    if bad:
        raise not_single_error(values.iloc[bad[0]], column, role, bad)


def not_single_rows(values: pd.Series) -> list[int]:
    """The rows (positions) of `values` holding a list, tuple, set, dict or array (found by the
    kinds of the values, `value_types`: C loops over the rows)."""
    if not pd.api.types.is_object_dtype(values.dtype):
        return []
    if pd.api.types.infer_dtype(values, skipna=True) in _SCALAR_KINDS:
        return []
    codes, types = value_types(values.to_numpy(dtype=object))
    bad = [i for i, t in enumerate(types) if issubclass(t, _NOT_SINGLE)]
    return np.flatnonzero(np.isin(codes, bad)).tolist() if bad else []


def not_single_error(first: object, column: str, role: str, bad: list[int]) -> DataError:
    """`check_single_values`' refusal, `first` the value of its first row `bad[0]`."""
    return DataError(
        f"{role} '{column}' holds {type(first).__name__}s, not single values (row{'s' if len(bad) > 1 else ''} "
        f"{preview(bad, 5)}; e.g. {first!r}). Each cell must hold one "
        + (f"id (a number or a text): make one value of each cell (e.g. df['{column}'] = df['{column}'].astype(str))."
           if role.startswith("The id") else
           f"number: split the column into several columns (e.g. pd.DataFrame(df['{column}'].tolist(), index=df.index)).")
    )


def _factorize_text(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """pd.factorize(values) of a text column (codes, distinct texts in order of first appearance;
    -1: missing). An Arrow text column of one chunk (pandas' default text type, as read from
    Parquet) is encoded by Arrow directly: the same codes and texts as pandas' factorize, which
    calls the same Arrow encoding, without its wrappers (~20 us of a 10^4-row fit)."""
    array = values.array
    if isinstance(array, pd.arrays.ArrowStringArray):
        chunked = array.__arrow_array__()
        if chunked.num_chunks == 1 and len(chunked) > 0:
            import pyarrow.compute as pc

            encoded = chunked.chunk(0).dictionary_encode()
            indices = encoded.indices
            if indices.null_count:
                indices = pc.fill_null(indices, -1)
            return (indices.to_numpy(zero_copy_only=False).astype(np.intp),
                    encoded.dictionary.to_numpy(zero_copy_only=False))
    return pd.factorize(values)


def normalise_ids(values: pd.Series, factorized: list | None = None, kind: str | None = None) -> tuple[pd.Series, int]:
    """Unit ids as every fit takes them (a plain fit and a level-2 join alike): text ids lose
    surrounding spaces (a padded CSV field " 12" is the unit "12"), and blank text ('' or spaces)
    is a missing id, never a unit of its own; numbers, dates, times and booleans are unchanged
    (whole-number floats get integer labels in `design.unit_codes`). Returns (ids, number of
    blank ids made missing): the same Series when nothing changed. An object column is stripped
    once per distinct text (`pd.factorize`, C code), not row by row; when all its values are
    text, (codes, distinct ids) of the ids returned are appended to `factorized` (-1: missing),
    so that `design.unit_codes` need not hash the texts again. `kind`: `id_kind(values)`, when
    the caller has it."""
    if isinstance(values.dtype, pd.CategoricalDtype) or (id_kind(values) if kind is None else kind) != "text":
        return values, 0
    if not (pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)):
        return values, 0  # datetime64, timedelta64, period ...: one value per cell, nothing to strip
    is_object = pd.api.types.is_object_dtype(values.dtype)
    # the text among the values (an object column of other single values, dates or Decimal, keeps
    # those as they are); a text dtype holds only text
    all_text = not is_object or pd.api.types.infer_dtype(values, skipna=True) == "string"
    arr = values.to_numpy(dtype=object) if is_object else None
    if all_text:  # every value text or missing: one hash table over all rows (missing: -1)
        whole, uniques = _factorize_text(values)
    else:
        assert arr is not None  # (only an object column mixes text with other values)
        text = _text_mask(arr)
        codes, uniques = pd.factorize(arr[text])
    distinct_in = np.asarray(uniques, dtype=object)
    stripped = np.array([u.strip() for u in distinct_in], dtype=object)
    changed, blank_u = stripped != distinct_in, stripped == ""
    if not changed.any() and not blank_u.any():
        if factorized is not None and all_text:
            factorized.append((whole.astype(np.intp, copy=False), distinct_in))
        return values, 0
    if all_text:  # the rows' text and its codes, only now that some text changes
        text = whole >= 0
        codes = whole[text]
    blank = int(np.count_nonzero(blank_u[codes]))
    if factorized is not None and all_text:
        # the stripped texts may coincide (" a" and "a"): number the distinct ones again
        kept = stripped.copy()
        kept[blank_u] = None  # a blank id is missing
        recodes, distinct = pd.factorize(kept)
        full = np.full(len(values), -1, dtype=np.intp)
        full[text] = recodes[codes]
        factorized.append((full, np.asarray(distinct, dtype=object)))
    if arr is None:  # a text dtype keeps its dtype (pandas' own strip, C code)
        stripped_s = values.str.strip()
        return stripped_s.where(stripped_s.ne("").fillna(True)), blank
    new = stripped[codes]
    new[blank_u[codes]] = np.nan
    out = arr.copy()
    out[text] = new
    return pd.Series(out, index=values.index, name=values.name, dtype=object), blank


def _per_distinct(values: pd.Series, label) -> pd.Series:
    """`values` mapped by `label` once per distinct value (`pd.factorize`), missing values kept."""
    codes, uniques = pd.factorize(values)  # uniques as pandas gives them (Timestamp, not datetime64)
    labels = np.array([label(u) for u in uniques] + [None], dtype=object)
    out = labels[codes]  # code -1 (missing) takes the last entry, replaced by the row's own value
    missing = codes < 0
    if missing.any():
        out[missing] = values.to_numpy(dtype=object)[missing]
    out = pd.Series(out, index=values.index, name=values.name)
    return out.astype(values.dtype) if isinstance(values.dtype, pd.StringDtype) else out


def canonical_ids(values: pd.Series) -> pd.Series:
    """Ids as text, with whole numbers written without a decimal point (3.0 -> '3'), so that a
    numeric id in one file matches a text id in the other (text: `normalise_ids`). Each distinct
    id is written once."""
    if pd.api.types.is_bool_dtype(values):
        return _per_distinct(values, lambda x: str(bool(x)))  # True/False, as `design._labels`
    if pd.api.types.is_numeric_dtype(values):
        return _per_distinct(values, lambda x: str(int(x)) if float(x).is_integer() else repr(float(x)))
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    # datetime64 and timedelta64 columns give pandas' Timestamp/Timedelta, whose str() is the label
    # `design._labels` gives the units, so that streamed chunks find their units by label
    ids = normalise_ids(values)[0]
    if not pd.api.types.is_object_dtype(ids.dtype) or pd.api.types.infer_dtype(ids, skipna=True) == "string":
        return _per_distinct(ids, str)
    return ids.map(lambda x: x if pd.isna(x) else str(x))  # other objects: equal values may differ in str()


def join_level2(level1: pd.DataFrame, level2: pd.DataFrame, group: str, level2_missing: str = "error") -> tuple[pd.DataFrame, JoinReport]:
    for name, frame in (("level-1", level1), ("level-2", level2)):
        check_id_columns(frame, (group,), name, f"The unit id '{group}' is not a column of the {name} table; both tables need it to be joined.")
    ids1 = canonical_ids(level1[group])
    ids2 = canonical_ids(level2[group])
    check_table_key(ids2, 2, f"'{group}'", str)
    known = set(ids2)
    unmatched_mask = ~ids1.isin(known) & ids1.notna()
    unmatched = tuple(pd.unique(ids1[unmatched_mask]).tolist())
    if unmatched and (level2_missing != "drop" or len(unmatched) == ids1.nunique()):
        hint = ""
        if len(unmatched) == ids1.nunique():
            hint = (
                f" No id matches at all: the level-1 ids look like {preview(pd.unique(ids1.dropna()).tolist(), 3)} and the "
                f"level-2 ids like {preview(pd.unique(ids2).tolist(), 3)}. Check leading zeros (a CSV's ids as text: "
                f"ml.read(path, dtype={{'{group if not group.startswith('__') else 'the id'}': str}})), and read labelled ids "
                "with value_labels='codes'."
            )
        raise DataError(
            f"{len(unmatched)} unit id(s) of the level-1 table have no row in the level-2 table "
            f"({preview(unmatched)}; {int(unmatched_mask.sum())} level-1 rows)."
            + (hint or " Add their level-2 rows, or pass level2_missing='drop' to leave those units out (the data "
               "report will list them).")
        )
    l1 = level1.loc[~unmatched_mask.to_numpy()].copy()
    l1_ids = ids1[~unmatched_mask.to_numpy()]
    l2 = level2.copy()
    l2.index = ids2.to_numpy()
    shared = [c for c in l2.columns if c in l1.columns and c != group]
    for c in shared:
        a, b = l1[c], l2[c]
        if isinstance(a.dtype, pd.CategoricalDtype) != isinstance(b.dtype, pd.CategoricalDtype):
            raise DataError(
                f"'{c}' is in both tables, labelled (a category) in one and numeric in the other. Read both with "
                "value_labels='codes', or keep the variable in one table."
            )
        lv2 = b.reindex(l1_ids.to_numpy()).to_numpy()
        lv1 = a.to_numpy()
        # a level-1 copy with a missing value takes the level-2 value (it is a unit's variable)
        same = pd.isna(lv1) | (pd.isna(lv1) & pd.isna(lv2)) | (lv1 == lv2)
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            # Stata stores floats in 4 bytes by default: compare at that precision then
            single = np.float32 in (a.dtype, b.dtype)
            same = same | np.isclose(lv1.astype(float), lv2.astype(float), rtol=1e-6 if single else 1e-12, atol=0)
        if not np.all(same):
            units = pd.unique(l1_ids.to_numpy()[~same]).tolist()
            raise DataError(
                f"'{c}' is in both tables but differs in {len(units)} unit(s) ({preview(units)}). Keep it in one "
                "table, or make the two agree."
            )
    # a variable in both tables is taken from the level-2 table: it is the unit's own value (and
    # fills a level-1 copy's missing values, or its 4-byte rounding)
    l2_vars = [c for c in l2.columns if c != group]
    # The level-1 rows keep their own index (row-level outputs carry it) and their own ids: the
    # fit normalises them (`normalise_ids`) as in a plain fit of the level-1 table.
    joined = l1.drop(columns=shared)
    add = l2[l2_vars].reindex(l1_ids.to_numpy())
    joined = pd.concat([joined, add.set_axis(joined.index)], axis=1) if joined.index.is_unique else joined.assign(
        **{c: add[c].to_numpy() for c in l2_vars}
    )
    without = tuple(sorted(known - set(l1_ids.dropna()), key=str))
    report = JoinReport(
        level2_variables=tuple(l2_vars),
        level2_rows=len(level2),
        units_without_level1_rows=without,
        unmatched_level1_ids=unmatched,
        unmatched_level1_rows=int(unmatched_mask.sum()),
    )
    return joined, report


# ----- HLM3's MDM from three files -----------------------------------------------------------------
@dataclass(frozen=True)
class LevelFileReport:
    """What joining one level's file did (HLM3's MDM step, `join_levels`), for the data report:
    the level, its id columns, its rows and variables; its units with no level-1 rows (reported, not
    used); the units of the rows below with no row in it (dropped with `level{k}_missing="drop"`,
    else refused); the units dropped because a variable of the model is missing in the file."""

    level: int
    ids: tuple[str, ...]
    rows: int
    variables: tuple[str, ...]
    units_without_rows_below: tuple[str, ...]
    ids_without_row: tuple[str, ...]
    rows_without_row: int
    dropped_for_missing: tuple[tuple[str, tuple[str, ...]], ...]
    rows_dropped_for_missing: int

    def lines(self) -> list[str]:
        k = self.level
        out = [f"Level-{k} file: {self.rows} rows joined on {' and '.join(self.ids)}"
               + (f" (variables: {preview(list(self.variables), 8)})" if self.variables else "")]
        if self.dropped_for_missing:
            out.append(
                f"  {len(self.dropped_for_missing)} level-{k} units dropped for missing level-{k} values "
                f"({self.rows_dropped_for_missing} level-1 rows; level{k}_missing='drop'): "
                + preview([f"{u} ({', '.join(v)})" for u, v in self.dropped_for_missing])
            )
        if self.ids_without_row:
            out.append(f"  {len(self.ids_without_row)} level-{k} units of the rows below have no row in the level-{k} file, "
                       f"dropped ({self.rows_without_row} level-1 rows; level{k}_missing='drop'): {preview(self.ids_without_row)}")
        if self.units_without_rows_below:
            out.append(f"  {len(self.units_without_rows_below)} level-{k} rows have no level-1 rows (not used): "
                       + preview(self.units_without_rows_below))
        return out


_SEP = "\x1f"  # joins a level-2 id to its level-3 id in the composite key (never in an id read from a file)


def _key(frame: pd.DataFrame, cols: tuple[str, ...]) -> pd.Series:
    """The unit key of a table: one id column's canonical ids, or several joined (level-2 ids
    read within level-3 units, HLM3's rule); missing when any part is."""
    parts = [canonical_ids(frame[c]) for c in cols]
    missing = np.logical_or.reduce([p.isna().to_numpy() for p in parts])
    key = parts[0].astype(str)
    for p in parts[1:]:
        key = key + _SEP + p.astype(str)
    key = key.astype(object)
    key[missing] = None
    return key


def check_id_columns(frame: pd.DataFrame, ids: tuple[str, ...], name: str, missing: str) -> None:
    """The id columns of one level's table: present (else `missing`, with the table's columns) and
    not a mix of numbers and text."""
    for c in ids:
        if c not in frame.columns:
            raise DataError(f"{missing} The {name} table has: {preview([str(x) for x in frame.columns], 15)}.")
        if id_kind(frame[c]) == "mixed":
            raise mixed_id_error(frame[c], c, f"the {name} table")


def check_table_key(key: pd.Series, level: int, what: str, shown) -> None:
    """A level-k table's unit keys: none missing, none on more than one row (HLM's MDM takes one
    record per unit), else a DataError naming the rows or the units (`shown(unit)` prints one)."""
    if key.isna().any():
        bad = np.flatnonzero(key.isna().to_numpy())
        raise DataError(f"The level-{level} table has rows without a unit id {what} (rows {preview(bad.tolist())}); fill them in or drop them.")
    dup = key[key.duplicated(keep=False)]
    if len(dup):
        raise DataError(
            f"The level-{level} table has {dup.nunique()} unit(s) ({what}) on more than one row "
            f"({preview([shown(u) for u in pd.unique(dup)])}). Each unit needs exactly one level-{level} row: remove the duplicates."
        )


def _check_keys(rows_key: pd.Series, table_key: pd.Series, level: int, ids: tuple[str, ...], rule: str) -> None:
    """The level-k table's keys against the rows below: no missing or repeated key in the table; the
    rows' units with no row in it refused (rule 'error') or left to be dropped ('drop', reported)."""
    what = " and ".join(f"'{c}'" for c in ids)
    check_table_key(table_key, level, what, _shown_unit)
    present = rows_key.notna()
    unmatched = ~rows_key.isin(set(table_key)) & present
    if not unmatched.any():
        return
    units = [_shown_unit(u) for u in pd.unique(rows_key[unmatched])]
    if rule != "drop" or unmatched.sum() == present.sum():
        hint = (f" No id matches at all: the rows' units look like {preview([_shown_unit(u) for u in pd.unique(rows_key.dropna())], 3)} "
                f"and the level-{level} table's like {preview([_shown_unit(u) for u in pd.unique(table_key)], 3)}. Check leading "
                f"zeros: read a CSV's ids as text (ml.read(path, dtype={{{', '.join(repr(c) + ': str' for c in ids)}}}) or "
                "pd.read_csv with the same dtype)."
                if unmatched.sum() == present.sum() else
                f" Add their level-{level} rows, or pass level{level}_missing='drop' to leave those units out (the data report lists them).")
        raise DataError(
            f"{len(units)} level-{level} unit(s) ({what}) of the level-1 rows have no row in the level-{level} table "
            f"({preview(units)}; {int(unmatched.sum())} level-1 rows)." + hint
        )


def _shown_unit(key: str) -> str:
    """A composite key as lme4 labels the level-2 unit ('12:3' for child 12 of school 3)."""
    return str(key).replace(_SEP, ":")


def _missing_units(table: pd.DataFrame, key: pd.Series, variables: list[str]) -> dict[str, tuple[str, ...]]:
    """unit -> the model's variables missing in its row of a level file."""
    out: dict[str, tuple[str, ...]] = {}
    if not variables:
        return out
    miss = table[variables].isna()
    for i in np.flatnonzero(miss.any(axis=1).to_numpy()):
        out[str(key.iloc[i])] = tuple(v for v, m in zip(variables, miss.iloc[i].to_numpy()) if m)
    return out


def _check_missing_rule(rule: str, level: int) -> None:
    if rule not in ("error", "drop"):
        raise DataError(f"level{level}_missing must be 'error' (HLM's rule: refuse) or 'drop' (leave those units out); got {rule!r}.")


def join_levels(level1: pd.DataFrame, level2: pd.DataFrame | None, level3: pd.DataFrame | None, l2_id: str, l3_id: str,
                variables: set[str], level2_missing: str = "error", level3_missing: str = "error"
                ) -> tuple[pd.DataFrame, tuple[LevelFileReport, ...]]:
    """HLM3's MDM from three files: the level-1 rows (with both ids) joined with a level-2 table and a
    level-3 table. The level-2 table is keyed by (level-2 id, level-3 id) when it has the level-3 id
    (level-2 ids read within level-3 units, as HLM3 reads them), else by the level-2 id alone (which
    must then be unique). Missing values of the model's `variables` in a level file are refused,
    naming the columns and units (HLM's rule), or with level{k}_missing="drop" the unit is left out
    with all its rows (a level-3 unit with its level-2 units) and reported. Ids of the rows below with
    no row in a level file: refused, or dropped and reported with "drop"; level-file rows with no
    level-1 rows: reported. Variables in two files must agree (`join_level2`)."""
    _check_missing_rule(level2_missing, 2)
    _check_missing_rule(level3_missing, 3)
    reports: list[LevelFileReport] = []
    for name, frame, cols in (("level-1", level1, (l2_id, l3_id)), ("level-2", level2, (l2_id,)), ("level-3", level3, (l3_id,))):
        if frame is None:
            continue
        for c in cols:
            check_id_columns(frame, (c,), name, f"The id '{c}' is not a column of the {name} table; HLM3's files each carry "
                             "the ids of their level and the levels above.")
    rows = level1
    drop3: dict[str, tuple[str, ...]] = {}
    if level3 is not None:
        key3 = _key(level3, (l3_id,))
        drop3 = _missing_units(level3, key3, sorted(v for v in variables if v in level3.columns and v != l3_id))
        if drop3 and level3_missing == "error":
            _refuse_missing(drop3, 3, l3_id)
    two_keys = level2 is not None and l3_id in level2.columns
    drop2: dict[str, tuple[str, ...]] = {}
    if level2 is not None:
        key2 = _key(level2, (l2_id, l3_id) if two_keys else (l2_id,))
        drop2 = _missing_units(level2, key2, sorted(v for v in variables if v in level2.columns and v not in (l2_id, l3_id)))
        if drop2 and level2_missing == "error":
            _refuse_missing(drop2, 2, l2_id)
    # the units dropped for missing values leave with all their rows, before the joins
    gone3 = _key(rows, (l3_id,)).isin(drop3).to_numpy() if drop3 else np.zeros(len(rows), dtype=bool)
    rows_key2 = _key(rows, (l2_id, l3_id) if two_keys else (l2_id,))
    gone2 = rows_key2.isin(drop2).to_numpy() if drop2 else np.zeros(len(rows), dtype=bool)
    rows2_dropped, rows3_dropped = int((gone2 & ~gone3).sum()), int(gone3.sum())
    if gone2.any() or gone3.any():
        attrs = dict(rows.attrs)
        rows = rows.loc[~(gone2 | gone3)]
        rows.attrs.update(attrs)
    if level2 is not None:
        table2 = level2.loc[~key2.isin(drop2).to_numpy()]
        if drop3 and two_keys:
            table2 = table2.loc[~_key(table2, (l3_id,)).isin(drop3).to_numpy()]
        if not two_keys and key2.duplicated().any():
            dup = pd.unique(key2[key2.duplicated(keep=False)]).tolist()
            raise DataError(
                f"The level-2 table has no level-3 id '{l3_id}' and the level-2 id '{l2_id}' repeats ({preview(dup)}): "
                f"HLM3 reads level-2 ids within level-3 units. Add the level-3 id '{l3_id}' to the level-2 table."
            )
        if not two_keys:
            # keyed by the level-2 id alone, each id must be one unit in the rows too: ids numbered
            # afresh in each level-3 unit (child 1, 2, ... in every school) would give every school's
            # child 1 the one row of the table
            pairs = rows[[l2_id, l3_id]].drop_duplicates()
            shared = pairs[l2_id][pairs[l2_id].duplicated(keep=False)]
            if len(shared):
                raise DataError(
                    f"The level-2 id '{l2_id}' repeats across level-3 units ('{l3_id}') in the level-1 rows "
                    f"({shared.nunique()} id(s), e.g. {preview(pd.unique(shared).tolist(), 3)}), and the level-2 table has no "
                    f"'{l3_id}' column to tell them apart: each table row would be joined to several level-2 units. "
                    f"Add the level-3 id '{l3_id}' to the level-2 table (HLM3 reads level-2 ids within level-3 units)."
                )
        k = "__level2_key__"
        ids2 = (l2_id, l3_id) if two_keys else (l2_id,)
        left = rows.assign(**{k: _key(rows, ids2).to_numpy()})
        right = table2.assign(**{k: _key(table2, ids2).to_numpy()}).drop(columns=[c for c in (l2_id, l3_id) if c in table2.columns])
        _check_keys(left[k], right[k], 2, ids2, level2_missing)
        joined, rep = join_level2(left, right, k, level2_missing)
        rows = joined.drop(columns=[k])
        rows.attrs.update(left.attrs)
        reports.append(LevelFileReport(
            2, (l2_id, l3_id) if two_keys else (l2_id,), len(level2), rep.level2_variables,
            tuple(_shown_unit(u) for u in rep.units_without_level1_rows), tuple(_shown_unit(u) for u in rep.unmatched_level1_ids),
            rep.unmatched_level1_rows, tuple((_shown_unit(u), v) for u, v in drop2.items()), rows2_dropped,
        ))
    if level3 is not None:
        table3 = level3.loc[~key3.isin(drop3).to_numpy()]
        attrs = dict(rows.attrs)
        _check_keys(_key(rows, (l3_id,)), _key(table3, (l3_id,)), 3, (l3_id,), level3_missing)
        joined, rep = join_level2(rows, table3.drop(columns=[l2_id]) if l2_id in table3.columns else table3, l3_id, level3_missing)
        joined.attrs.update(attrs)
        rows = joined
        reports.append(LevelFileReport(
            3, (l3_id,), len(level3), rep.level2_variables, rep.units_without_level1_rows, rep.unmatched_level1_ids,
            rep.unmatched_level1_rows, tuple(drop3.items()), rows3_dropped,
        ))
    return rows, tuple(reports)


def _refuse_missing(units: dict[str, tuple[str, ...]], level: int, id_column: str) -> None:
    columns = sorted({v for vs in units.values() for v in vs})
    shown = [f"{_shown_unit(u)} ({', '.join(v)})" for u, v in units.items()]
    raise DataError(
        f"The level-{level} table has missing values in the model's variable(s) {', '.join(repr(c) for c in columns)} for "
        f"{len(units)} unit(s) of '{id_column}': {preview(shown)}. HLM refuses missing level-{level} data: fill them in, or "
        f"pass level{level}_missing='drop' to leave those units out with all their rows (the data report lists them)."
    )
