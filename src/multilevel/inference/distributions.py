"""The tail areas and quantiles of the t, chi-square, F and normal distributions, as scipy.stats
gives them, without importing scipy.stats.

`import scipy.stats` takes about a third of a second (it loads scipy.optimize, scipy.spatial,
scipy.ndimage, ...), more than a small fit; these are the same scipy.special functions that
scipy.stats calls (`t.sf` is `stdtr(df, -x)`, `chi2.sf` is `chdtrc(df, x)`, `f.sf` is
`fdtrc(dfn, dfd, x)`, `norm.ppf` is `ndtri(q)`, `t.ppf` is `stdtrit(df, q)`, `chi2.ppf` is
`2 gammaincinv(df/2, q)`), with scipy.stats' rules at the edges of the support and for invalid
parameters (rv_continuous.sf/.ppf: nan for a parameter <= 0 or a nan argument; sf = 1 at or below
the support's lower end and 0 at its upper end; ppf(0) and ppf(1) the ends of the support), so the
values are scipy.stats' to the last digit (tests/inference/test_distributions.py). scipy.special
itself is imported on the first call: a fit that reports no p-value does not load it.
"""
from __future__ import annotations

import numpy as np


def _result(out: np.ndarray):
    # scipy.stats returns a numpy scalar for scalar input, an array otherwise
    return out[()] if out.ndim == 0 else out


def _sf(values: np.ndarray, x: np.ndarray, valid: np.ndarray, lower: float):
    """rv_continuous.sf's edges: 1 for x <= lower (the support's lower end), 0 for x = +inf, nan for
    invalid parameters or nan x; `values` (the special function) inside the support."""
    out = np.where((x > lower) & (x < np.inf), values, 0.0)
    out = np.where(x <= lower, 1.0, out)
    return _result(np.where(valid & ~np.isnan(x), out, np.nan))


def _ppf(values: np.ndarray, q: np.ndarray, valid: np.ndarray, lower: float):
    """rv_continuous.ppf's edges: the support's ends at q = 0 and 1, nan outside [0, 1] or for
    invalid parameters; `values` (the special function) for 0 < q < 1."""
    out = np.where(q == 0, lower, np.where(q == 1, np.inf, values))
    return _result(np.where(valid & (q >= 0) & (q <= 1), out, np.nan))


def _floats(*args) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a, dtype=float) for a in np.broadcast_arrays(*args))


def t_sf(x, df):
    """P(T > x), T Student's t with df degrees of freedom (scipy.stats.t.sf): stdtr(df, -x)."""
    from scipy import special

    x, df = _floats(x, df)
    return _sf(special.stdtr(df, -x), x, df > 0, -np.inf)


def t_ppf(q, df):
    """The q quantile of Student's t (scipy.stats.t.ppf): stdtrit(df, q)."""
    from scipy import special

    q, df = _floats(q, df)
    return _ppf(special.stdtrit(df, q), q, df > 0, -np.inf)


def chi2_sf(x, df):
    """P(X > x), X chi-square with df degrees of freedom (scipy.stats.chi2.sf): chdtrc(df, x)."""
    from scipy import special

    x, df = _floats(x, df)
    return _sf(special.chdtrc(df, x), x, df > 0, 0.0)


def chi2_ppf(q, df):
    """The q quantile of the chi-square distribution (scipy.stats.chi2.ppf): 2 gammaincinv(df/2, q)."""
    from scipy import special

    q, df = _floats(q, df)
    return _ppf(2 * special.gammaincinv(df / 2, q), q, df > 0, 0.0)


def f_sf(x, dfn, dfd):
    """P(F > x), F with (dfn, dfd) degrees of freedom (scipy.stats.f.sf): fdtrc(dfn, dfd, x)."""
    from scipy import special

    x, dfn, dfd = _floats(x, dfn, dfd)
    return _sf(special.fdtrc(dfn, dfd, x), x, (dfn > 0) & (dfd > 0), 0.0)


def norm_ppf(q):
    """The q quantile of the standard normal distribution (scipy.stats.norm.ppf): ndtri(q)."""
    from scipy import special

    (q,) = _floats(q)
    return _ppf(special.ndtri(q), q, np.ones(q.shape, dtype=bool), -np.inf)
