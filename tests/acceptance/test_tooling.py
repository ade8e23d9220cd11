"""The checks CI runs stay switched on: ruff's rule families and files, mypy's files, and `make test`
(what .ci/run calls) running both before the tests. A change that quietly turns one of them off (a
family dropped from `select`, a folder excluded, a blanket `# ruff: noqa`, the recipe losing a line)
fails here.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy's own dependency, installed with the test extra
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
TOOL = CONFIG["tool"]
#: the folders CI lints (the Makefile's `ruff check` line) and the one mypy checks
LINTED = ("src", "tests", "benchmarks")
TYPED = "src/multilevel"
#: one rule (`B905`, `RUF001`), never a family (`B`, `RUF0`) or everything (`ALL`)
ONE_RULE = re.compile(r"[A-Z]+[0-9]{3,4}")


def python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if "__pycache__" not in p.parts)


def test_ruff_selects_the_families_that_catch_mistakes():
    lint = TOOL["ruff"]["lint"]
    select = set(lint["select"]) | set(lint.get("extend-select", []))
    if "ALL" in select:
        return
    # pyflakes (undefined names, unused imports), bugbear (likely bugs), isort, pycodestyle's warnings,
    # pyupgrade and ruff's own rules
    for family in ("F", "B", "I", "W", "UP", "RUF"):
        assert family in select, f"ruff's '{family}' rules are no longer selected in pyproject.toml"
    # pycodestyle's errors: all of E, or at least its import (E4), statement (E7) and syntax (E9) groups
    assert "E" in select or {"E4", "E7", "E9"} <= select, "pycodestyle's E4/E7/E9 errors are no longer selected"


def test_ruff_ignores_single_rules_only():
    lint = TOOL["ruff"]["lint"]
    ignored = list(lint.get("ignore", [])) + list(lint.get("extend-ignore", []))
    for codes in lint.get("per-file-ignores", {}).values():
        ignored += codes
    for codes in lint.get("extend-per-file-ignores", {}).values():
        ignored += codes
    families = [c for c in ignored if not ONE_RULE.fullmatch(c)]
    assert not families, f"pyproject.toml ignores whole rule families: {families}; ignore single rules, with a reason"


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (it is in the test extra)")
def test_ruff_checks_every_python_file_of_the_linted_folders():
    """What ruff itself says it checks (after `exclude`, `extend-exclude`, .gitignore and the like)."""
    shown = subprocess.run([sys.executable, "-m", "ruff", "check", "--show-files", *LINTED], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    checked = {Path(line.strip()).resolve() for line in shown.stdout.splitlines() if line.strip().endswith(".py")}
    missing = [str(p.relative_to(ROOT)) for p in python_files(*LINTED) if p.resolve() not in checked]
    assert not missing, f"ruff skips {missing[:10]}"


def test_mypy_checks_the_package():
    mypy = TOOL["mypy"]
    files = [f.rstrip("/") for f in ([mypy["files"]] if isinstance(mypy["files"], str) else mypy["files"])]
    assert any(f in ("src", TYPED) for f in files), f"mypy's files {files} do not cover {TYPED}"
    assert not mypy.get("ignore_errors", False)
    assert not mypy.get("exclude"), "mypy excludes files of the package"
    assert not mypy.get("disable_error_code"), "mypy's error codes are switched off for the whole package"
    for override in mypy.get("overrides", []):
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        if any(m == "multilevel" or m.startswith("multilevel.") for m in modules):
            assert not override.get("ignore_errors", False), f"mypy ignores the errors of {modules}"


def test_no_blanket_suppression_in_the_sources():
    """`# noqa` and `# type: ignore` name the rule they silence; no file turns its checks off whole."""
    blanket = re.compile(
        r"#\s*(?:ruff|flake8)\s*:\s*noqa\b"  # a whole file out of ruff
        r"|#\s*noqa(?!\s*:)"  # every rule on a line
        r"|#\s*type\s*:\s*ignore(?!\s*\[)"  # every mypy error on a line
        r"|#\s*mypy\s*:\s*ignore-errors",  # a whole file out of mypy
        re.IGNORECASE,
    )
    found = [
        f"{p.relative_to(ROOT)}:{k}"
        for p in python_files(*LINTED)
        for k, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if blanket.search(line) and p != Path(__file__).resolve()
    ]
    assert not found, f"blanket suppressions: {found}"


def make_commands(target: str, text: str) -> list[str]:
    """The commands `make target` runs, prerequisites first (a small reading of the Makefile's
    `target: prerequisites` lines and their tab-indented recipes; order-only prerequisites too)."""
    rules: dict[str, tuple[list[str], list[str]]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("\t") and current is not None:
            current.append(line.strip())
            continue
        m = re.match(r"^([^\s:=#][^:=]*?)\s*:(?!=)(.*)$", line)
        if m:
            prereqs = m.group(2).replace("|", " ").split()
            current = []
            for name in m.group(1).split():
                rules[name] = (prereqs, current)
        elif line.strip() and not line.startswith("#"):
            current = None
    out: list[str] = []
    seen: set[str] = set()

    def run(t: str) -> None:
        if t in seen or t not in rules:
            return
        seen.add(t)
        prereqs, recipe = rules[t]
        for p in prereqs:
            run(p)
        out.extend(recipe)

    run(target)
    return out


def test_make_test_runs_ruff_and_mypy_before_the_tests():
    assert re.search(r"^\s*make test\s*$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE), ".ci/run no longer calls make test"
    commands = make_commands("test", (ROOT / "Makefile").read_text())

    def first(pattern: str) -> int:
        hits = [k for k, c in enumerate(commands) if re.search(pattern, c)]
        assert hits, f"`make test` no longer runs {pattern!r}: {commands}"
        return hits[0]

    tests = first(r"-m pytest\b")
    assert first(r"\bruff check src tests benchmarks\b") < tests
    assert first(r"\bmypy\s*$") < tests
    # and a fresh `make test` installs them: the test extra names both
    extra = " ".join(CONFIG["project"]["optional-dependencies"]["test"])
    for tool in ("ruff", "mypy", "pytest"):
        assert re.search(rf"\b{tool}\b", extra), f"the test extra does not install {tool}"
    assert any(".[test]" in c for c in commands), "`make test` no longer installs the test extra"


def test_make_commands_reads_prerequisites_and_recipes():
    """The reader above, on a Makefile of its own: prerequisites run before the target's recipe."""
    text = "a: b | c\n\techo a\nb:\n\techo b\n# comment\nc: b\n\techo c\nX = 1\n"
    assert make_commands("a", text) == ["echo b", "echo c", "echo a"]
