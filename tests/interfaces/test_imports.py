"""What a new process loads: `import multilevel` loads no numerical library, and a plain fit of
numeric columns (HSB model 4) loads none of the heavy modules it does not use (scipy.stats and
scipy.optimize: p-values come from scipy.special when asked; formulaic: only factors and the like
need it; plots, Dask, polars). pyarrow is not on the list: pandas imports it when it is installed."""
import json
import subprocess
import sys

HSB4 = "mathach ~ (sector + meanses) * cses + (cses | school)"
UNUSED_BY_A_FIT = ("scipy.stats", "scipy.optimize", "scipy.special", "formulaic", "matplotlib", "dask", "polars",
                   "statsmodels", "pyreadstat")


def loaded_after(code: str, names) -> list[str]:
    """Which of `names` (packages, or scipy's subpackages) a new process has loaded after `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    modules = json.loads(out.strip().splitlines()[-1])
    return sorted({n for n in names for m in modules if m == n or m.startswith(n + ".")})


def test_import_multilevel_loads_no_numerical_library():
    assert loaded_after("import multilevel", ("numpy", "pandas", "scipy.linalg", "numba", "formulaic")) == []


def test_a_plain_fit_loads_no_module_it_does_not_use():
    code = f"import multilevel as ml\nfit = ml.fit({HSB4!r}, ml.datasets.hsb())\nassert fit.beta.size == 6"
    assert loaded_after(code, UNUSED_BY_A_FIT) == []


def test_a_factor_loads_formulaic_and_p_values_scipy_special():
    code = ("import multilevel as ml\nfit = ml.fit('mathach ~ C(sector) * cses + (1 | school)', ml.datasets.hsb())\n"
            "fit.coef_table()")
    assert loaded_after(code, ("formulaic", "scipy.special", "scipy.stats")) == ["formulaic", "scipy.special"]
