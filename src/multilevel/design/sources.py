"""Where the rows of a fit come from when they are not one DataFrame in memory: Parquet files read
in row groups, or a Dask DataFrame's partitions. A source hands out its rows as chunks (pandas
DataFrames, in order; Parquet also as pyarrow RecordBatches, `ParquetSource.batches`) and runs a
function on each; `chunked` learns the model's structure from
them (pass 1) and adds up the per-unit summaries (pass 2). A DataFrame in memory is the one chunk
of `builder.build_design`.
"""
from __future__ import annotations

import glob as globmod
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from multilevel.errors import DataError, preview

#: rows per chunk read from Parquet (a row group may be cut in several)
BATCH_ROWS = 1_000_000


def is_stream_source(data) -> bool:
    """A folder or a glob pattern of Parquet files (always streamed)."""
    if not isinstance(data, (str, os.PathLike)):
        return False
    text = os.fspath(data)
    return any(ch in text for ch in "*?[") or Path(text).is_dir()


def is_dask(data) -> bool:
    return type(data).__module__.startswith("dask") and hasattr(data, "npartitions")


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


@dataclass(frozen=True)
class ParquetSource:
    """Parquet files read `batch_rows` rows at a time, the model's `columns` only."""

    files: tuple[Path, ...]
    columns: tuple[str, ...] | None = None
    batch_rows: int = 0  # 0: BATCH_ROWS

    @classmethod
    def of(cls, path) -> ParquetSource:
        from multilevel.data.reading import _need

        _need("pyarrow", "parquet", "Parquet files")
        return cls(tuple(parquet_files(path)))

    @property
    def names(self) -> list[str]:
        """The columns of the files (the first file's schema)."""
        return list(open_parquet(self.files[0]).schema_arrow.names)

    def reading(self, wanted: list[str]) -> ParquetSource:
        """This source reading the `wanted` columns that the files have (checked alike in every file)."""
        names = set(self.names)
        columns = [c for c in wanted if c in names]
        check_schemas(list(self.files), columns)
        return ParquetSource(self.files, tuple(columns) or None, self.batch_rows)

    @property
    def description(self) -> str:
        return f"{len(self.files)} Parquet file(s): {preview([f.name for f in self.files], 3)}"

    def batches(self) -> Iterator[Any]:
        """The rows as pyarrow RecordBatches of the `columns`, in order (each column decoded once;
        `chunked` takes numbers straight to numpy arrays, anything else through `to_pandas`)."""
        for f in self.files:
            batches = open_parquet(f).iter_batches(batch_size=self.batch_rows or BATCH_ROWS,
                                                   columns=None if self.columns is None else list(self.columns))
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except Exception as exc:  # a damaged row group: name the file
                    raise DataError(f"Cannot read '{f}' to the end ({type(exc).__name__}: {exc}); it may be truncated.") from exc
                yield batch

    def chunks(self) -> Iterator[pd.DataFrame]:
        return (batch.to_pandas() for batch in self.batches())

    def each(self, fn: Callable[[pd.DataFrame], Any]) -> Iterator[Any]:
        """fn of each chunk, in order, one chunk in memory at a time."""
        return (fn(chunk) for chunk in self.chunks())


@dataclass(frozen=True)
class DaskSource:
    """A Dask DataFrame: each function runs on the partitions where they are (the workers)."""

    ddf: Any

    @property
    def names(self) -> list[str]:
        return [str(c) for c in self.ddf.columns]

    @property
    def description(self) -> str:
        return f"Dask DataFrame with {self.ddf.npartitions} partitions"

    def reading(self, wanted: list[str]) -> DaskSource:
        return self  # each function takes the columns it needs from a partition

    def chunks(self) -> Iterator[pd.DataFrame]:
        for i in range(self.ddf.npartitions):
            yield self.ddf.get_partition(i).compute()

    def each(self, fn: Callable[[pd.DataFrame], Any]) -> Iterator[Any]:
        import dask

        return iter(dask.compute(*[dask.delayed(fn)(p) for p in self.ddf.to_delayed()]))


Source = ParquetSource | DaskSource
