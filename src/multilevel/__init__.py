"""multilevel: hierarchical linear models (linear mixed models) with HLM's report and lme4's numbers.

    import multilevel as ml
    hsb = ml.datasets.hsb()
    fit = ml.fit("mathach ~ (sector + meanses) * cses + (cses | school)", hsb)
    print(fit.report())
"""
from __future__ import annotations

import importlib
TYPE_CHECKING = False  # (not typing.TYPE_CHECKING: importing typing alone costs more than the rest)

# Names are loaded on first use (PEP 562), so `import multilevel` costs milliseconds; pandas, scipy
# and formulaic load with the first `ml.fit`, numba with its first compiled loop.
_WHERE = {
    "datasets": None,
    "fit": "api", "fit_levels": "api", "fit_spec": "api", "levels": "api",
    "Deviance": "compare", "compare": "compare",
    "design_effect": "effect_sizes", "effective_n": "effect_sizes", "pseudo_r2": "effect_sizes",
    "true_intercept_variance": "effect_sizes",
    "DataError": "errors", "MultilevelError": "errors", "MultilevelWarning": "errors", "SpecificationError": "errors",
    "parse_formula": "formula",
    "PooledFit": "imputation", "pool": "imputation",
    "read": "reading",
    "Fit": "results",
    "ModelSpec": "spec", "RandomTerm": "spec",
    "SamplingWeights": "weights", "Weights": "weights",
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
    from . import datasets
    from .api import fit, fit_levels, fit_spec, levels
    from .compare import Deviance, compare
    from .effect_sizes import design_effect, effective_n, pseudo_r2, true_intercept_variance
    from .errors import DataError, MultilevelError, MultilevelWarning, SpecificationError
    from .formula import parse_formula
    from .imputation import PooledFit, pool
    from .reading import read
    from .results import Fit
    from .spec import ModelSpec, RandomTerm
    from .weights import SamplingWeights, Weights

__all__ = [
    "DataError",
    "Deviance",
    "Fit",
    "ModelSpec",
    "PooledFit",
    "MultilevelError",
    "MultilevelWarning",
    "RandomTerm",
    "SamplingWeights",
    "SpecificationError",
    "Weights",
    "compare",
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
