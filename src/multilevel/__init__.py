"""multilevel: hierarchical linear models (linear mixed models) with HLM's report and lme4's numbers.

    import multilevel as ml
    hsb = ml.datasets.hsb()
    fit = ml.fit("mathach ~ (sector + meanses) * cses + (cses | school)", hsb)
    print(fit.report())
"""
from __future__ import annotations

import importlib

TYPE_CHECKING = False  # (not typing.TYPE_CHECKING: importing typing alone costs more than the rest)

# Names are loaded on first use (PEP 562), so `import multilevel` costs milliseconds; pandas loads
# with the first `ml.fit`, numba with its first compiled loop, formulaic and scipy's statistics only
# when a fit needs them (tests/interfaces/test_imports.py).
_WHERE = {
    "datasets": None,
    "fit": "interfaces.api", "fit_levels": "interfaces.api", "fit_spec": "interfaces.api", "levels": "interfaces.api",
    "Deviance": "inference.compare", "compare": "inference.compare",
    "design_effect": "diagnostics.effect_sizes", "effective_n": "diagnostics.effect_sizes", "pseudo_r2": "diagnostics.effect_sizes",
    "true_intercept_variance": "diagnostics.effect_sizes",
    "DataError": "errors", "MultilevelError": "errors", "MultilevelWarning": "errors", "SpecificationError": "errors",
    "parse_formula": "model.formula",
    "PooledFit": "interfaces.imputation", "pool": "interfaces.imputation",
    "read": "data.reading",
    "dask_residuals": "interfaces.streaming",
    "Fit": "interfaces.fit",
    "ModelSpec": "model.spec", "RandomTerm": "model.spec",
    "SamplingWeights": "data.weights", "Weights": "data.weights",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'multilevel' has no attribute {name!r}")
    where = _WHERE[name]
    value = importlib.import_module(f".{name}", __name__) if where is None else getattr(
        importlib.import_module(f".{where}", __name__), name
    )
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:
    from multilevel import datasets
    from multilevel.data.reading import read
    from multilevel.data.weights import SamplingWeights, Weights
    from multilevel.diagnostics.effect_sizes import design_effect, effective_n, pseudo_r2, true_intercept_variance
    from multilevel.errors import DataError, MultilevelError, MultilevelWarning, SpecificationError
    from multilevel.inference.compare import Deviance, compare
    from multilevel.interfaces.api import fit, fit_levels, fit_spec, levels
    from multilevel.interfaces.fit import Fit
    from multilevel.interfaces.imputation import PooledFit, pool
    from multilevel.interfaces.streaming import dask_residuals
    from multilevel.model.formula import parse_formula
    from multilevel.model.spec import ModelSpec, RandomTerm

__all__ = [
    "DataError",
    "Deviance",
    "Fit",
    "ModelSpec",
    "MultilevelError",
    "MultilevelWarning",
    "PooledFit",
    "RandomTerm",
    "SamplingWeights",
    "SpecificationError",
    "Weights",
    "compare",
    "dask_residuals",
    "datasets",
    "design_effect",
    "effective_n",
    "fit",
    "fit_levels",
    "fit_spec",
    "levels",
    "parse_formula",
    "pool",
    "pseudo_r2",
    "read",
    "true_intercept_variance",
]
__version__ = "0.1.0"
