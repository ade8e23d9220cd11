"""The bad-input catalogue run three ways: every fit the catalogue makes from a DataFrame is made
again from a Parquet file streamed in row groups (stream=True) and from a Dask DataFrame of several
partitions, and must end the same way: the same error class and message, or a fit in each.

Which calls are compared is decided by one rule, not case by case (`Recorder`): a call of `fit_spec` with a
pandas DataFrame and only the options a stream takes (no level2=, weights, tau= or imputed sets),
whose frame Parquet can hold (pyarrow writes it); the reference is the in-memory fit of the frame
as read back from that file (Parquet's types: the same data, another source); for Dask, the
in-memory fit of the partitions computed back into one frame (Dask may convert object columns to
text). A model a stream cannot fit (`chunked.check_streamable`: scale(), orthogonal poly(),
offset()) must be refused by both with that refusal instead. Everything else a case does (formulas refused before any data, reading files, results) is
not a fit from a source and runs once, in memory, as in test_catalogue.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pandas as pd
import pytest
from test_catalogue import CASES

from multilevel.design import sources
from multilevel.design.chunked import check_streamable
from multilevel.errors import MultilevelError
from multilevel.interfaces import api

dd = pytest.importorskip("dask.dataframe")

#: rows per streamed batch and per Dask partition: every catalogue frame is cut into several
CHUNK_ROWS = 150


def _end(call) -> tuple[str, str]:
    """How a call ends: ("fit", "") or (error class, message); a non-multilevel error is an end too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except MultilevelError as e:
        return type(e).__name__, str(e)
    except Exception as e:
        return f"raw {type(e).__module__}.{type(e).__name__}", str(e)
    return "fit", ""


def _eligible(data, level2, imputation, weights, tau, sampling, precision) -> bool:
    return (isinstance(data, pd.DataFrame) and level2 is None and imputation is None and weights is None
            and tau is None and sampling is None and precision is None)


class Recorder:
    def __init__(self, original):
        self.original = original
        self.compared: list[tuple[str, tuple, tuple, tuple]] = []
        self.skipped = 0

    def __call__(self, spec, data, method="REML", tau=None, sigma2=None, level2=None, level2_missing="error",
                 imputation=None, weights=None, stream=None, sampling_weights=None, precision_weights=None,
                 level3=None, level3_missing="error"):
        go = lambda d, s=None: self.original(spec, d, method, tau, sigma2, level2, level2_missing, imputation, weights, s,  # noqa: E731
                                             sampling_weights=sampling_weights, precision_weights=precision_weights,
                                             level3=level3, level3_missing=level3_missing)
        if level3 is not None or not _eligible(data, level2, imputation, weights, tau, sampling_weights, precision_weights):
            return go(data, stream)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "d.parquet"
            try:
                data.to_parquet(path, index=False, row_group_size=CHUNK_ROWS)
            except Exception:
                self.skipped += 1
                return go(data, stream)
            back = pd.read_parquet(path)
            refusal = _end(lambda: check_streamable(spec))
            memory = _end(lambda: go(back)) if refusal[0] == "fit" else refusal
            parquet = _end(lambda: go(str(path), True))
            ddf = dd.from_pandas(back, npartitions=max(2, -(-len(back) // CHUNK_ROWS)), sort=False)
            dask = _end(lambda: go(ddf))
            held = ddf.compute()
            memory_dask = memory if held.dtypes.equals(back.dtypes) or refusal[0] != "fit" else _end(lambda: go(held))
        self.compared.append((str(spec), memory, parquet, memory_dask, dask))
        return go(data, stream)


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder(api.fit_spec)
    monkeypatch.setattr(api, "fit_spec", rec)
    monkeypatch.setattr(sources, "BATCH_ROWS", CHUNK_ROWS)
    return rec


DATA_CASES = [c for c in CASES if not c.name.startswith("bad-input: MULTILEVEL_CACHE_DIR") and "no writable home" not in c.name]


def _run_quietly(c, tmp_path) -> None:
    """Run a case for the fits it makes (recorded), its own end aside (test_catalogue asserts it),
    and its warnings too: the catalogue's expected warnings are asserted there, not printed here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            c.run(tmp_path)
        except Exception:
            pass


@pytest.mark.parametrize("c", DATA_CASES, ids=[c.name for c in DATA_CASES])
def test_catalogue_case_ends_the_same_from_every_source(c, recorder, tmp_path):
    _run_quietly(c, tmp_path)
    for what, memory, parquet, memory_dask, dask in recorder.compared:
        assert parquet == memory, f"{what}: streamed Parquet {parquet} vs in memory {memory}"
        assert dask == memory_dask, f"{what}: Dask {dask} vs in memory {memory_dask}"


def test_the_comparison_covers_the_catalogue(recorder, tmp_path):
    """The rule above compares a good share of the catalogue's fits (not a vacuous test)."""
    for c in DATA_CASES:
        _run_quietly(c, tmp_path / c.name.replace("/", "_")[:40])
    assert len(recorder.compared) >= 60, len(recorder.compared)
