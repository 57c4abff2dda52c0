"""What ships: the wheel holds the product (code, contract, SQL) and nothing of the development
package, the tests or the simulator; the product never imports the development package; and every
declared runtime dependency is imported by shipped code."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT = REPO / "pe_assets"
DEVELOPMENT = ("pe_dev", "pe_assets_tests")
# Never part of a build: environments, caches, local data and earlier build output.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".pe_data", ".*_cache", "*.duckdb*"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built offline from a copy of the checkout (building in place would write build/
    and egg-info into the working tree); pe_dev and the tests are in the copy, so their absence
    from the wheel is the packaging config's doing."""
    work = tmp_path_factory.mktemp("build")
    source = work / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    # Offline: no index, no isolated build env (setuptools and wheel come with the dev dependencies).
    pip_wheel = ["pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check"]
    completed = subprocess.run(
        [sys.executable, "-m", *pip_wheel, "-q", "-w", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (built,) = (work / "dist").glob("pe_assets-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def _names(wheel: zipfile.ZipFile) -> list[PurePosixPath]:
    return [PurePosixPath(name) for name in wheel.namelist()]


def test_wheel_holds_no_development_package_simulator_or_tests(wheel):
    names = _names(wheel)
    assert not [n for n in names if n.parts[0] in DEVELOPMENT], "pe_dev or the tests are in the wheel"
    assert not [n for n in names if "simulator" in str(n).lower()]
    assert not [n for n in names if n.name.startswith("test_") or n.name in ("conftest.py", "dev.py")]
    assert {n.parts[0] for n in names if not n.parts[0].endswith(".dist-info")} == {"pe_assets"}


def test_wheel_holds_the_contract_and_sql(wheel):
    names = {str(n) for n in _names(wheel)}
    for folder, pattern in (("contract", "*.yaml"), ("sql", "*.sql")):
        expected = {str(PurePosixPath(p.relative_to(REPO))) for p in (PRODUCT / folder).glob(pattern)}
        assert expected, f"no pe_assets/{folder}/{pattern} in the checkout"
        assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    shipped_code = {str(PurePosixPath(p.relative_to(REPO))) for p in PRODUCT.rglob("*.py")}
    assert shipped_code <= names


def test_wheel_declares_no_simulator_console_script(wheel):
    entry_points = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = "".join(wheel.read(n).decode() for n in entry_points)
    assert "pe-simulator" not in text and "pe_dev" not in text


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, dotted, absolute imports only (relative ones stay inside).

    ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (c may be a module); ``importlib.import_module``
    and ``__import__`` with a literal name count too.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
        ):
            found.add(node.args[0].value)
    return found


SHIPPED_IMPORTS = {path: _imports(path) for path in sorted(PRODUCT.rglob("*.py"))}


def test_shipped_code_never_imports_the_development_package():
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in modules if m.split(".")[0] in DEVELOPMENT)
        for path, modules in SHIPPED_IMPORTS.items()
    }
    assert len(SHIPPED_IMPORTS) > 10 and not {k: v for k, v in offenders.items() if v}


def test_loading_the_code_location_loads_nothing_of_the_development_package(tmp_path):
    # Building the definitions too, not just importing the module: imports inside functions count.
    code = (
        "import sys\n"
        "from pe_assets.definitions import code_location\n"
        "code_location().get_repository_def()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pe_dev', 'pe_assets_tests')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PE_", "GENESYSCLOUD_", "DAGSTER_", "SNOWFLAKE_"))}
    env.update(
        GENESYSCLOUD_OAUTHCLIENT_ID="dummy-id",
        GENESYSCLOUD_OAUTHCLIENT_SECRET="dummy-secret",
        PE_DATA_DIR=str(tmp_path / "data"),
        DAGSTER_HOME=str(tmp_path / "home"),
    )
    (tmp_path / "home").mkdir()
    # From the repository root, so `import pe_dev` would succeed if anything tried it.
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = []
    for requirement in project["dependencies"]:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        assert match, requirement
        names.append(_canonical(match.group(1)))
    return names


def _modules_of(distribution: str) -> set[str]:
    """The dotted modules a distribution installs, from its RECORD (``snowflake.connector``, not
    the ``snowflake`` namespace other distributions share)."""
    modules: set[str] = set()
    for file in importlib.metadata.distribution(distribution).files or ():
        parts = PurePosixPath(str(file)).parts
        if not parts or parts[0] == ".." or parts[0].endswith((".dist-info", ".data")):
            continue
        stem = parts[-1].split(".")[0]
        if parts[-1].endswith((".py", ".so", ".pyd")) and stem.isidentifier():
            dotted = [*parts[:-1], stem] if stem != "__init__" else list(parts[:-1])
            if dotted:
                modules.add(".".join(dotted))
    return modules


# Needed but not imported: the UI's server, run by the `dagster dev` / `dg dev` / `dagster-webserver`
# commands (dagster dev refuses to start without it), so the code location can be served.
NOT_IMPORTED = {"dagster-webserver"}


def test_every_declared_dependency_is_imported_by_shipped_code():
    imported = set().union(*SHIPPED_IMPORTS.values())
    declared = _declared_dependencies()
    assert NOT_IMPORTED <= set(declared), "the exception names no declared dependency any more"
    unused = []
    for distribution in declared:
        if distribution in NOT_IMPORTED:
            continue
        modules = _modules_of(distribution)
        assert modules, f"{distribution} is not installed or installs no module"
        if not imported & modules:
            unused.append(distribution)
    assert not unused, f"declared in [project].dependencies but imported by no file under pe_assets/: {unused}"
