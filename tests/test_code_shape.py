"""The shape of the code that pllbench installs (pllbench/, methods/, datasets/): modules under 400 lines, functions
under 80, comments that say what and why (no dates, no "before 20xx" / "since 20xx" history notes), and every
document a comment cites inside the repository (the specification is docs/spec/)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("pllbench", "methods", "datasets") for p in (REPO / folder).rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
HISTORY = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b|\b(before|since|until|as of) 20\d\d\b", re.IGNORECASE)
OUTSIDE = re.compile(r"\.\./shared|shared/spec|(?<![\w.])\.\./\.\./")
CITED = re.compile(r"(?<![\w./-])([\w./-]+\.md)\b(\s*§)?")


def shown(path: Path) -> str:
    return str(path.relative_to(REPO))


def long_functions(tree: ast.Module) -> list[tuple[str, int, int]]:
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def citation_problems(text: str) -> list[str]:
    """A cited document that is not a file of the repository, a bare `name.md §n`, or a path out of the repository."""
    problems = [f"points outside the repository: {m.group(0)!r}" for m in OUTSIDE.finditer(text)]
    for match in CITED.finditer(text):
        name, section = match.group(1), match.group(2)
        if "/" in name and not (REPO / name).is_file():
            problems.append(f"cites {name}, not a file of the repository")
        elif "/" not in name and section:
            problems.append(f"cites {name} {section.strip()} without its path (docs/spec/{name}?)")
    return problems


def test_the_checks_see_the_sources():
    assert len(SOURCES) > 80 and REPO / "methods" / "dirk.py" in SOURCES and REPO / "datasets" / "fmnist.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=shown)
def test_modules_and_functions_are_short(path):
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{shown(path)}: {lines} lines (at most {MAX_MODULE_LINES})"
    long = long_functions(ast.parse(text))
    assert not long, "; ".join(f"{shown(path)}:{line}: {name} has {n} lines (at most {MAX_FUNCTION_LINES})"
                               for name, line, n in long)


@pytest.mark.parametrize("path", SOURCES, ids=shown)
def test_no_dated_history_notes(path):
    found = [f"{shown(path)}:{number}: {line.strip()}" for number, line in enumerate(path.read_text().splitlines(), 1)
             if HISTORY.search(line)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", SOURCES, ids=shown)
def test_every_cited_document_is_in_the_repository(path):
    problems = citation_problems(path.read_text())
    assert not problems, f"{shown(path)}: " + "; ".join(problems)


def test_the_checks_catch_what_they_look_for():
    # the samples are assembled, so that this file holds no dated note or outside pointer itself
    dated, year = "-".join(["2026", "12", "02"]), str(2027)
    assert HISTORY.search(f"# a run recorded before {dated}") and HISTORY.search(f"how it is done since {year}")
    assert not HISTORY.search("seed 2026 of 20 epochs")
    assert long_functions(ast.parse("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)) == [
        ("f", 1, MAX_FUNCTION_LINES + 1)]
    assert citation_problems("(see " + "/".join(["..", "shared", "spec", "methods.md"]) + " §3)")
    assert citation_problems("the kernel (candidates.md §2)") == [
        "cites candidates.md § without its path (docs/spec/candidates.md?)"]
    assert citation_problems("docs/spec/nowhere.md") == ["cites docs/spec/nowhere.md, not a file of the repository"]
    assert citation_problems("docs/spec/methods.md §3, docs/calibration.md and report.md") == []
