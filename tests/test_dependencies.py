"""koobill declares what it imports and imports what it declares (issue #15 point 7: psutil was
declared and unused, numpy imported and undeclared, openpyxl a runtime dependency only the tests
use), and pyproject.toml, requirements/main.in and the lock agree on every version."""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
OWN = {"pipelines", "expectations", "tests", "helpers", "web_helpers", "chromium", "live_server"}
# the tests' and the bench's own modules import each other by name
OWN |= {p.stem for folder in ("tests", "bench", "dags") for p in (REPO / folder).rglob("*.py")}
# Maintainer scripts run by hand, not imported by the package (fontTools is declared: the exports subset the font with it).
NOT_SHIPPED_CODE = {"pipelines/assets/make_fonts.py"}
# Declared, used, and not imported by name: the library that needs them imports them.
USED_WITHOUT_IMPORT = {
    "python-multipart": "FastAPI's Form() parses forms with it",
    "jinja2": "fastapi.templating.Jinja2Templates renders the pages with it",
    "itsdangerous": "Starlette's SessionMiddleware signs the session cookie with it",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(spec: str) -> tuple[str, str | None]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(?:==\s*([^\s;#]+))?.*", spec)
    assert m, spec
    return _norm(m[1]), m[2]


RUNTIME = dict(_requirement(s) for s in PROJECT["dependencies"])
EXTRAS = {
    group: dict(_requirement(s) for s in specs)
    for group, specs in PROJECT["optional-dependencies"].items()
}


def _imports(*folders: str) -> dict[str, set[str]]:
    """Top-level third-party modules imported under ``folders``, with the files importing them."""
    out: dict[str, set[str]] = {}
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel in NOT_SHIPPED_CODE or ".venv" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN:
                        out.setdefault(top, set()).add(rel)
    return out


@functools.cache
def _module_dists() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    dists = {_norm(d) for d in _module_dists().get(module, [])}
    if module == "airflow":  # apache-airflow is a meta-package over airflow-core and the sdk
        dists.add("apache-airflow")
    return dists


def _undeclared(imports: dict[str, set[str]], declared: set[str]) -> dict[str, list[str]]:
    return {m: sorted(f) for m, f in imports.items() if not _distributions(m) & declared}


def test_the_package_declares_what_it_imports() -> None:
    assert _undeclared(_imports("pipelines", "expectations"), set(RUNTIME)) == {}


def _closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (extras left out), as installed."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_requirement(r)[0] for r in requires if "extra ==" not in r]
    return seen


def test_the_tests_and_the_bench_import_only_what_is_declared_or_comes_with_it() -> None:
    """The tests may use what a declared dependency brings (pendulum with Airflow, PIL with
    fpdf2, hypothesis with schemathesis), since the lock installs it."""
    declared = _closure(set(RUNTIME) | set(EXTRAS["test"]) | set(EXTRAS["production"]))
    assert _undeclared(_imports("tests", "bench"), declared) == {}


def test_every_runtime_dependency_is_used() -> None:
    imported = set().union(*map(_distributions, _imports("pipelines", "expectations")))
    unused = set(RUNTIME) - imported - set(USED_WITHOUT_IMPORT)
    assert unused == set(), f"declared as runtime dependencies but never imported: {unused}"
    test_only = set(EXTRAS["test"]) - set().union(*map(_distributions, _imports("tests", "bench")))
    # pytest-xdist: a pytest plugin, loaded by `-n`; moto: its `moto_server` command (the local
    # S3 server of tests/s3server.py)
    assert test_only <= {"pytest-xdist", "moto"}, test_only


def _pins(path: Path) -> dict[str, str | None]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith(("#", "-", "--")):
            name, version = _requirement(line.split("\\")[0])
            out[name] = version
    return out


def test_pyproject_main_in_and_the_lock_agree() -> None:
    lock = _pins(REPO / "requirements" / "lock.txt")
    main_in = _pins(REPO / "requirements" / "main.in")
    declared = {**RUNTIME, **EXTRAS["test"], **EXTRAS["lint"], **EXTRAS["production"]}
    for name, version in declared.items():
        assert name in main_in, f"{name} is in pyproject.toml, not in requirements/main.in"
        assert main_in[name] == version, (name, main_in[name], version)
        if version is not None:
            assert lock[name] == version, f"{name}: lock {lock[name]}, pyproject {version}"
    assert "psutil" not in main_in  # Airflow still brings it; koobill does not use it
