"""Reading data: files of the common statistical formats, and tables of the common libraries.

    ml.read("students.sav")        SPSS (.sav, .zsav, .por)         pyreadstat  (extra "files")
    ml.read("schools.dta")         Stata                             pyreadstat  (extra "files")
    ml.read("x.sas7bdat" | "x.xpt") SAS data set / transport file    pyreadstat  (extra "files")
    ml.read("x.parquet")           Parquet                           pyarrow     (extra "parquet")
    ml.read("x.csv" | "x.tsv" | "x.csv.gz")                         pandas

SPSS, Stata and SAS value labels become pandas categories (ordered by their codes, so the
reference level of a factor is the lowest code) unless `value_labels="codes"`; a variable whose
labels are not one per code (two codes sharing a label: two schools both labelled "St Mary")
keeps its codes, so that distinct units are never merged (the data report says so); SPSS user-defined
missing codes (and Stata's extended missing values) become missing. Every `data=` argument of the
package goes through `as_frame`, which also takes pandas, polars and pyarrow tables.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
import pandas as pd

from multilevel.data.checks import check_duplicate_columns, plain_dtypes
from multilevel.errors import DataError

_READSTAT = {".sav": "read_sav", ".zsav": "read_sav", ".por": "read_por", ".dta": "read_dta",
             ".sas7bdat": "read_sas7bdat", ".xpt": "read_xport"}
_PARQUET = {".parquet", ".pq"}
_TEXT = {".csv": ",", ".tsv": "\t", ".txt": None, ".dat": None}
FORMATS = ".csv, .tsv, .txt, .dat (optionally .gz/.bz2/.zip/.xz), .parquet, .sav, .zsav, .por, .dta, .sas7bdat, .xpt"


def _suffix(path: Path) -> str:
    """The format suffix, before a compression suffix (`.csv` of `x.csv.gz`); pandas reads the compression."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zip", ".xz"):
        return suffixes[-2] if len(suffixes) > 1 else ""
    return suffixes[-1] if suffixes else ""


def _need(module: str, extra: str, what: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise DataError(
            f"Reading {what} needs the package '{module}', which is not installed. "
            f"Install it with: pip install {module} (or install multilevel with its '{extra}' extra: "
            f"pip install -e '/path/to/multilevel[{extra}]', the path of your clone)"
        ) from exc


def missing_path_message(path: str | os.PathLike) -> str:
    """'there is no such file (or folder)', naming the folder looked in (or, when that folder is
    missing too, the nearest one above it that exists), with the close names it holds."""
    from multilevel.errors import close_matches

    text = os.fspath(path)
    p = Path(text)
    what = "no such folder or file" if text.endswith(("/", os.sep)) or not p.suffix else "no such file"
    parent = p.resolve().parent
    if parent.is_dir():
        hint = close_matches(p.name, [c.name for c in parent.iterdir()])
        return f"Cannot read '{text}': there is {what} (looked in {parent}).{hint}"
    up = parent
    while not up.exists() and up != up.parent:
        up = up.parent
    return f"Cannot read '{text}': there is {what}: the folder {parent} does not exist either (the nearest that does: {up})."


def read(path: str | os.PathLike, *, value_labels: str = "categories", **kwargs) -> pd.DataFrame:
    """Read a data file by its extension (module doc). Extra keyword arguments go to the reader
    (pandas.read_csv, pandas.read_parquet or the pyreadstat function)."""
    if value_labels not in ("categories", "codes"):
        raise DataError(f"value_labels must be 'categories' or 'codes', not {value_labels!r}.")
    p = Path(path)
    fmt = _suffix(p)
    known = fmt in _READSTAT or fmt in _PARQUET or fmt in _TEXT
    if not p.exists():
        # before the file type: a misspelt folder ('data/nope/') is missing, not of an unknown type
        raise DataError(missing_path_message(path))
    if not known:
        raise DataError(f"Cannot read '{p}': the file type '{fmt or p.name}' is not known. multilevel reads {FORMATS}.")
    if p.is_dir():
        raise DataError(f"Cannot read '{p}': it is a folder, not a file.")
    if p.stat().st_size == 0:
        raise DataError(f"The file '{p}' is empty (0 bytes): there are no data to read.")
    try:
        if fmt in _TEXT:
            opts = dict(kwargs)
            if "sep" not in opts and "delimiter" not in opts:  # the caller's separator wins
                opts["sep"] = _TEXT[fmt]
                if opts["sep"] is None:
                    opts["engine"] = "python"  # sniffs the separator of .txt/.dat files
            frame = pd.read_csv(p, **opts)
            if frame.shape[1] == 1 and any(ch in str(frame.columns[0]) for ch in ";\t|"):
                sep = next(ch for ch in ";\t|" if ch in str(frame.columns[0]))
                raise DataError(
                    f"'{p}' was read as one column named {str(frame.columns[0])[:60]!r}: its separator is probably "
                    f"{sep!r}. Read it with ml.read(path, sep={sep!r})"
                    + (" (and decimal=',' if numbers use decimal commas)." if sep == ";" else ".")
                )
        elif fmt in _PARQUET:
            _need("pyarrow", "parquet", "Parquet files")
            frame = read_parquet_lean(p) if not kwargs else pd.read_parquet(p, **kwargs)
            import pyarrow.parquet as pq

            frame = sort_dictionary_levels(frame, pq.read_schema(p))
        else:
            pyreadstat = _need("pyreadstat", "files", f"{fmt} files")
            reader = getattr(pyreadstat, _READSTAT[fmt])
            # Not every reader takes every option (SAS transport files carry no value labels; a
            # SAS data set's labels come in a catalog_file): pass those the reader knows.
            # Value labels are applied here, not by the reader, so that a variable becomes a
            # category only when every value has a label.
            wanted = {"apply_value_formats": False, "user_missing": False}  # user-missing codes -> missing
            params = inspect.signature(reader).parameters
            opts = {k: v for k, v in wanted.items() if k in params}
            opts.update(kwargs)
            frame, meta = reader(str(p), **opts)
            if value_labels == "categories":
                frame = apply_value_labels(frame, getattr(meta, "variable_value_labels", {}) or {})
    except DataError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"The file '{p}' has no data (no header and no rows).") from exc
    except Exception as exc:  # the readers' own errors: say which file and why
        raise DataError(f"Cannot read '{p}' as a {fmt} file: {type(exc).__name__}: {exc}") from exc
    if len(frame) == 0:
        raise DataError(f"The file '{p}' has no rows (only the column names {list(frame.columns)[:10]}).")
    frame.attrs["source"] = str(p)
    return frame


def read_parquet_lean(path: Path) -> pd.DataFrame:
    """A Parquet file as a DataFrame holding each plain numeric column once.

    pd.read_parquet holds the whole Arrow table and its pandas copy at the same time (twice the
    data at the peak). Here every int/float column gets one numpy array of its final size, filled
    a row group at a time (two row groups in parallel threads), so the peak is the data plus two
    row groups; the DataFrame wraps the arrays without copying them. Other columns (text,
    categories, dates) go through pandas. Integer columns that may hold missing values (by the
    row groups' statistics) become float (NaN), as in pandas."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    n = pf.metadata.num_rows
    plain = [f.name for f in schema if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
             and not pa.types.is_float16(f.type)]
    # pandas' own metadata: a stored index (a column named in index_columns) is left to pandas,
    # which restores it; a RangeIndex is only described there, and is rebuilt below as pandas does
    index_columns = (schema.pandas_metadata or {}).get("index_columns", [])
    stored_index = any(isinstance(c, str) for c in index_columns)
    if not plain or pf.metadata.num_row_groups == 0 or stored_index:
        return pd.read_parquet(path)
    meta = pf.metadata
    groups = meta.num_row_groups
    starts = np.concatenate([[0], np.cumsum([meta.row_group(g).num_rows for g in range(groups)])])
    position = {meta.schema.column(i).name: i for i in range(meta.num_columns)}

    def may_miss(name: str) -> bool:
        """Whether some row group says (or does not say) that the column has missing values."""
        for g in range(groups):
            st = meta.row_group(g).column(position[name]).statistics if name in position else None
            if st is None or not st.has_null_count or st.null_count > 0:
                return True
        return False

    # integer columns that may hold missing values are read as float (NaN), as pandas does
    dtypes = {name: np.dtype(schema.field(name).type.to_pandas_dtype()) for name in plain}
    arrays = {name: np.empty(n, dtype=float if dt.kind in "iu" and may_miss(name) else dt) for name, dt in dtypes.items()}
    others = [f.name for f in schema if f.name not in arrays]
    parts: list = [None] * groups

    def read_group(g: int) -> None:
        table = pf.read_row_group(g) if groups == 1 else pq.ParquetFile(path).read_row_group(g)
        for name in plain:
            at = int(starts[g])
            for chunk in table.column(name).chunks:  # each chunk's buffer viewed, copied once into place
                arrays[name][at : at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                at += len(chunk)
        if others:
            parts[g] = table.select(others)

    # Row groups are read in parallel threads (Arrow and the copies release the GIL), two at a
    # time at most, so that the peak stays the data plus two row groups.
    from concurrent.futures import ThreadPoolExecutor

    from multilevel.parallel import default_jobs

    with ThreadPoolExecutor(max_workers=max(1, min(2, default_jobs(), groups))) as ex:
        for _ in ex.map(read_group, range(groups)):
            pa.default_memory_pool().release_unused()  # Arrow would keep the freed row groups' buffers
    frame = pd.DataFrame(arrays, copy=False)
    if others:
        rest = pa.concat_tables(parts).to_pandas()
        for name in others:
            frame[name] = rest[name].to_numpy() if not isinstance(rest[name].dtype, pd.CategoricalDtype) else rest[name].values
    frame = frame[[f.name for f in schema if f.name in frame.columns]]
    ranges = [c for c in index_columns if isinstance(c, dict) and c.get("kind") == "range"]
    if len(ranges) == 1 and len(index_columns) == 1:
        r = ranges[0]
        frame.index = pd.RangeIndex(r.get("start", 0), r.get("stop", n), r.get("step", 1), name=r.get("name"))
    return frame


def apply_value_labels(frame: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """Turn each labelled variable whose every non-missing value has a label into a category, its
    categories in the order of their codes (so the reference level of the factor is the lowest
    code, as with the codes). A variable with unlabelled values too (labels for special codes
    only, e.g. 9999 = "huge") keeps its numbers; `frame.attrs["read_notes"]` says so."""
    notes = list(frame.attrs.get("read_notes", []))
    for var, mapping in labels.items():
        if var not in frame or not mapping:
            continue
        values = pd.unique(frame[var].dropna())
        unlabelled = [v for v in values if v not in mapping]
        if unlabelled:
            notes.append(
                f"'{var}' has value labels for {len(mapping)} codes but also unlabelled values "
                f"({', '.join(map(str, unlabelled[:3]))}{', ...' if len(unlabelled) > 3 else ''}): kept as numbers."
            )
            continue
        codes = sorted(v for v in mapping if v in set(values))
        order = list(dict.fromkeys(mapping[c] for c in codes))
        if len(order) < len(codes):
            # two codes share a label: as categories they would become one value (one unit, one
            # level), so the codes are kept
            shared: dict[object, list[object]] = {}
            for c in codes:
                shared.setdefault(mapping[c], []).append(c)
            example = next((lab, cs) for lab, cs in shared.items() if len(cs) > 1)
            notes.append(
                f"'{var}' has codes sharing a value label (e.g. {', '.join(map(str, example[1][:3]))} are all "
                f"{example[0]!r}): kept as codes, so that they stay distinct."
            )
            continue
        frame[var] = pd.Categorical(frame[var].map(mapping), categories=order)
    frame.attrs["read_notes"] = notes
    return frame


def sort_dictionary_levels(frame: pd.DataFrame, schema) -> pd.DataFrame:
    """Unordered dictionary-encoded Arrow columns (pyarrow's dictionary_encode, Parquet dictionary
    columns) as categories in sorted order, as text columns are (R's factor() on character data
    sorts its levels too): the dictionary's order is that of first appearance, and the reference
    level of a factor must not depend on the container or on the order of the rows. Columns that
    were pandas Categoricals when written (Parquet's pandas metadata) keep their categories' order,
    which their user chose; ordered dictionaries keep theirs."""
    import pyarrow as pa

    from_pandas = {
        c.get("name") for c in (getattr(schema, "pandas_metadata", None) or {}).get("columns", [])
        if c.get("pandas_type") == "categorical"
    }
    for field in schema:
        name = field.name
        if (pa.types.is_dictionary(field.type) and not field.type.ordered and name not in from_pandas
                and name in frame.columns and isinstance(frame[name].dtype, pd.CategoricalDtype)):
            try:
                order = sorted(frame[name].cat.categories)
            except TypeError:  # levels of mixed kinds have no sorted order: left as they are
                continue
            frame[name] = frame[name].cat.reorder_categories(order)
    return frame


def as_frame(data, what: str = "data") -> pd.DataFrame:
    """A pandas DataFrame from a path, a pandas/polars/pyarrow table or a dict of columns."""
    if isinstance(data, (str, os.PathLike)):
        return plain_dtypes(read(data))
    if isinstance(data, pd.DataFrame):
        frame = data
    elif hasattr(data, "to_pandas"):  # polars and pyarrow tables
        frame = data.to_pandas()
        # polars' Categorical keeps the order of first appearance; make it lexical, as pandas and
        # formulaic order strings, so the same data give the same reference level in any container.
        schema = getattr(data, "schema", None)
        if schema is not None and hasattr(schema, "items"):
            for name, dtype in schema.items():
                if type(dtype).__name__ == "Categorical" and isinstance(frame[name].dtype, pd.CategoricalDtype):
                    frame[name] = frame[name].cat.reorder_categories(sorted(frame[name].cat.categories))
        elif schema is not None and type(schema).__module__.startswith("pyarrow"):
            frame = sort_dictionary_levels(frame, schema)
    elif isinstance(data, dict):
        frame = pd.DataFrame(data)
    else:
        raise DataError(
            f"The {what} must be a file path or a table (pandas, polars or pyarrow DataFrame), "
            f"not a {type(data).__name__}."
        )
    if len(frame) == 0:
        raise DataError(f"The {what} have no rows.")
    check_duplicate_columns(frame, what)
    # nullable and Arrow-backed columns as numpy columns (pd.NA -> missing): `data_checks.plain_column`
    return plain_dtypes(frame)
