"""Reading data: files of the common statistical formats, and tables of the common libraries.

    ml.read("students.sav")        SPSS (.sav, .zsav, .por)         pyreadstat  (extra "files")
    ml.read("schools.dta")         Stata                             pyreadstat  (extra "files")
    ml.read("x.sas7bdat" | "x.xpt") SAS data set / transport file    pyreadstat  (extra "files")
    ml.read("x.parquet")           Parquet                           pyarrow     (extra "parquet")
    ml.read("x.csv" | "x.tsv" | "x.csv.gz")                         pandas

SPSS, Stata and SAS value labels become pandas categories (ordered by their codes, so the
reference level of a factor is the lowest code) unless `value_labels="codes"`; SPSS user-defined
missing codes (and Stata's extended missing values) become missing. Every `data=` argument of the
package goes through `as_frame`, which also takes pandas, polars and pyarrow tables.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import pandas as pd

from .errors import DataError

_READSTAT = {".sav": "read_sav", ".zsav": "read_sav", ".por": "read_por", ".dta": "read_dta",
             ".sas7bdat": "read_sas7bdat", ".xpt": "read_xport"}
_PARQUET = {".parquet", ".pq"}
_TEXT = {".csv": ",", ".tsv": "\t", ".txt": None, ".dat": None}
FORMATS = ".csv, .tsv, .txt, .dat (optionally .gz/.bz2/.zip/.xz), .parquet, .sav, .zsav, .por, .dta, .sas7bdat, .xpt"


def _suffix(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zip", ".xz"):
        return (suffixes[-2] if len(suffixes) > 1 else ""), suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def _need(module: str, extra: str, what: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise DataError(
            f"Reading {what} needs the package '{module}', which is not installed. "
            f"Install it with: pip install 'multilevel[{extra}]'"
        ) from exc


def read(path: str | os.PathLike, *, value_labels: str = "categories", **kwargs) -> pd.DataFrame:
    """Read a data file by its extension (module doc). Extra keyword arguments go to the reader
    (pandas.read_csv, pandas.read_parquet or the pyreadstat function)."""
    if value_labels not in ("categories", "codes"):
        raise DataError(f"value_labels must be 'categories' or 'codes', not {value_labels!r}.")
    p = Path(path)
    fmt, compression = _suffix(p)
    known = fmt in _READSTAT or fmt in _PARQUET or fmt in _TEXT
    if not known:
        raise DataError(f"Cannot read '{p}': the file type '{fmt or p.name}' is not known. multilevel reads {FORMATS}.")
    if not p.exists():
        raise DataError(f"Cannot read '{p}': there is no such file (looked in {p.resolve().parent}).")
    if p.is_dir():
        raise DataError(f"Cannot read '{p}': it is a folder, not a file.")
    if p.stat().st_size == 0:
        raise DataError(f"The file '{p}' is empty (0 bytes): there are no data to read.")
    try:
        if fmt in _TEXT:
            sep = _TEXT[fmt]
            frame = pd.read_csv(p, sep=sep, engine=None if sep else "python", **kwargs)
        elif fmt in _PARQUET:
            _need("pyarrow", "parquet", "Parquet files")
            frame = pd.read_parquet(p, **kwargs)
        else:
            pyreadstat = _need("pyreadstat", "files", f"{fmt} files")
            reader = getattr(pyreadstat, _READSTAT[fmt])
            # Not every reader takes every option (SAS transport files carry no value labels; a
            # SAS data set's labels come in a catalog_file): pass those the reader knows.
            wanted = {
                "apply_value_formats": value_labels == "categories",
                "formats_as_category": True,
                "user_missing": False,  # SPSS user-defined missing codes, Stata .a-.z -> missing
            }
            params = inspect.signature(reader).parameters
            opts = {k: v for k, v in wanted.items() if k in params}
            opts.update(kwargs)
            frame, meta = reader(str(p), **opts)
            frame = _categories_in_code_order(frame, getattr(meta, "variable_value_labels", {}) or {})
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


def _categories_in_code_order(frame: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """pyreadstat sorts a labelled variable's categories alphabetically; put them in the order of
    their codes, so that the reference level of a factor is its lowest code (as with the codes)."""
    for var, mapping in labels.items():
        if var in frame and isinstance(frame[var].dtype, pd.CategoricalDtype):
            present = list(frame[var].cat.categories)
            ordered = [lab for _, lab in sorted(mapping.items(), key=lambda kv: kv[0]) if lab in present]
            ordered = list(dict.fromkeys(ordered)) + [c for c in present if c not in ordered]
            frame[var] = frame[var].cat.reorder_categories(ordered)
    return frame


def as_frame(data, what: str = "data") -> pd.DataFrame:
    """A pandas DataFrame from a path, a pandas/polars/pyarrow table or a dict of columns."""
    if isinstance(data, (str, os.PathLike)):
        return read(data)
    if isinstance(data, pd.DataFrame):
        frame = data
    elif hasattr(data, "to_pandas"):  # polars and pyarrow tables
        frame = data.to_pandas()
    elif isinstance(data, dict):
        frame = pd.DataFrame(data)
    else:
        raise DataError(
            f"The {what} must be a file path or a table (pandas, polars or pyarrow DataFrame), "
            f"not a {type(data).__name__}."
        )
    if len(frame) == 0:
        raise DataError(f"The {what} have no rows.")
    return frame
