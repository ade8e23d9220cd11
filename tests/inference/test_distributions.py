"""inference.distributions gives scipy.stats' values to the last digit, edges included, and its
import does not load scipy.stats."""
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from multilevel.inference import distributions as dist

X = np.array([-np.inf, -40.0, -3.0, -1e-300, -0.0, 0.0, 1e-12, 0.3, 1.0, 1.96, 2.5, 7.0, 38.0, 1e4, np.inf, np.nan])
Q = np.array([-0.1, 0.0, 1e-300, 1e-12, 0.025, 0.3, 0.5, 0.8, 0.95, 0.975, 0.995, 1 - 1e-12, 1.0, 1.5, np.nan])
DF = np.array([-1.0, 0.0, 0.3, 1.0, 2.0, 3.5, 17.0, 158.0, 1e6, np.inf, np.nan])


def same(a, b) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)  # nan where nan; every other value to the last digit


@pytest.mark.parametrize("df", DF)
def test_t_and_chi2_match_scipy_stats(df):
    same(dist.t_sf(X, df), scipy.stats.t.sf(X, df))
    same(dist.chi2_sf(X, df), scipy.stats.chi2.sf(X, df))
    same(dist.t_ppf(Q, df), scipy.stats.t.ppf(Q, df))
    same(dist.chi2_ppf(Q, df), scipy.stats.chi2.ppf(Q, df))


@pytest.mark.parametrize("dfn", [-1.0, 0.0, 1.0, 3.0, 12.5])
@pytest.mark.parametrize("dfd", [0.0, 1.0, 7.0, 160.0, 1e7, np.inf])
def test_f_matches_scipy_stats(dfn, dfd):
    same(dist.f_sf(X, dfn, dfd), scipy.stats.f.sf(X, dfn, dfd))


def test_normal_quantile_and_scalars_match_scipy_stats():
    same(dist.norm_ppf(Q), scipy.stats.norm.ppf(Q))
    # scalars in, numpy scalars out, as scipy.stats
    for ours, theirs in [(dist.norm_ppf(0.975), scipy.stats.norm.ppf(0.975)), (dist.t_sf(2.1, 12), scipy.stats.t.sf(2.1, 12)),
                         (dist.chi2_sf(3.3, 2), scipy.stats.chi2.sf(3.3, 2)), (dist.f_sf(2.0, 3, 40), scipy.stats.f.sf(2.0, 3, 40))]:
        assert type(ours) is type(theirs) and ours == theirs
    # arrays broadcast against the degrees of freedom
    same(dist.t_sf(X[:, None], DF[None, :]), scipy.stats.t.sf(X[:, None], DF[None, :]))


def test_import_loads_no_scipy():
    code = "import sys, multilevel.inference.distributions; print(sorted(m for m in sys.modules if m.startswith('scipy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
