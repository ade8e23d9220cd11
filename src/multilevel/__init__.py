"""multilevel: hierarchical linear models (linear mixed models) with HLM's report and lme4's numbers.

    import multilevel as ml
    hsb = ml.datasets.hsb()
    fit = ml.fit("mathach ~ (sector + meanses) * cses + (cses | school)", hsb)
    print(fit.report())
"""
from . import datasets
from .api import fit, fit_levels, fit_spec, levels
from .compare import Deviance, compare
from .effect_sizes import design_effect, effective_n, pseudo_r2, true_intercept_variance
from .errors import DataError, MultilevelError, SpecificationError
from .formula import parse_formula
from .imputation import PooledFit, pool
from .reading import read
from .results import Fit
from .spec import ModelSpec, RandomTerm
from .weights import Weights

__all__ = [
    "DataError",
    "Deviance",
    "Fit",
    "ModelSpec",
    "PooledFit",
    "MultilevelError",
    "RandomTerm",
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
