"""Row-level outputs of a fit to a Dask DataFrame, computed where the partitions are.

The fit itself (`api.fit_spec` with a Dask DataFrame or streamed Parquet files) keeps no rows
(`design.chunked`); `dask_residuals` brings its residuals back to the rows, partition by partition.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from multilevel.data.join import canonical_ids
from multilevel.design.builder import _check_columns
from multilevel.design.chunked import Plan, prepare_chunk
from multilevel.errors import SpecificationError
from multilevel.interfaces.fit import Fit


def dask_residuals(fit: Fit, ddf, level: int = 1):
    """Residuals of a fit on a Dask DataFrame, as a Dask DataFrame.

    level=1: per row, fitted from the fixed part (X beta) and from fixed + EB (X beta + Z u*_j), and
    the residuals y - fitted, computed partition by partition (rows with a missing value or a unit
    the fit did not use get NaN). level=2: per unit, the empirical Bayes residuals u*_j
    (eb_<effect>, lme4's ranef) and their conditional variances (cv_<effect>, lme4's condVar),
    which come from the summaries on the client, as a Dask DataFrame of as many partitions as `ddf`."""
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
    variables = _check_columns(spec, pd.DataFrame(columns=[str(c) for c in ddf.columns]))
    labels = pd.Index(list(d.group_labels))
    x_spec: Any = d.x_model_spec  # formulaic's ModelSpec of X
    # the structure of the fit (its centring state and levels), for the same preparation of the rows
    # as the fit's pass 2 (`chunked.prepare_chunk`)
    plan = Plan(spec, variables, d.group, labels, dict(d.centering_means), dict(d.levels))
    plan.z_specs = [None] * len(spec.random)

    def one(part: pd.DataFrame) -> pd.DataFrame:
        sub, code = prepare_chunk(part, plan, codes_of=lambda ids: labels.get_indexer(canonical_ids(ids)), drop=False)
        ok = (code >= 0) & ~sub[variables].isna().any(axis=1).to_numpy()
        out = pd.DataFrame({d.group: part[d.group], "fitted_fixed": np.nan, "fitted": np.nan, "resid": np.nan}, index=part.index)
        if ok.any():
            s2 = sub.loc[ok]
            X = np.asarray(x_spec.get_model_matrix(s2).to_numpy(dtype=float))
            Z = np.hstack([np.asarray(_model_matrix(spec.random_formula(t), s2)) for t in spec.random])
            fixed = X @ beta
            fitted = fixed + np.einsum("ia,ia->i", Z, u[code[ok]])
            out.loc[ok, "fitted_fixed"] = fixed
            out.loc[ok, "fitted"] = fitted
            out.loc[ok, "resid"] = s2[spec.outcome].to_numpy(dtype=float) - fitted
        return out

    meta = pd.DataFrame({d.group: pd.Series(dtype=ddf[d.group].dtype), "fitted_fixed": pd.Series(dtype=float),
                         "fitted": pd.Series(dtype=float), "resid": pd.Series(dtype=float)})
    return ddf.map_partitions(one, meta=meta)


def _model_matrix(rhs: str, rows: pd.DataFrame) -> np.ndarray:
    import formulaic

    return formulaic.model_matrix(rhs, rows, context={}).to_numpy(dtype=float)
