"""The installed package stands alone: the wheel holds ``services`` only, and nothing in it needs the repository.

The wheel is built from a copy of what the Dockerfile copies (pyproject.toml, README.md, services/), as the image
builds it. Then every module in it:

- names no module of the repository's development side (``tests``, ``devtools``, ``bench``, ``deploy``), neither
  in an import nor as a string such as ``python -m tests.fakes.graph_api`` (how the wheel once started the Graph
  API stand-in);
- imports in a fresh interpreter that sees only the unpacked wheel and the installed dependencies: the checkout
  and the editable install are out of reach, and importing a development package fails loudly.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.samples import REPO_ROOT

pytestmark = pytest.mark.unit

DEVELOPMENT_PACKAGES = ("tests", "devtools", "bench", "deploy")
NAMES_A_DEVELOPMENT_MODULE = re.compile(rf"(?<![\w.])(?:{'|'.join(DEVELOPMENT_PACKAGES)})\.\w+")

# Run in the clean interpreter: the unpacked wheel first on sys.path, the editable install's finder gone, the
# development packages unimportable; then import every module and say where each came from.
CLEAN_IMPORT = """
import importlib, importlib.abc, json, os, sys
site, modules, blocked = sys.argv[1], json.loads(sys.argv[2]), tuple(json.loads(sys.argv[3]))

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name}: a development package, not in the wheel")
        return None

sys.meta_path[:] = [Blocked()] + [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
def checkout(entry):
    return not entry or any(os.path.exists(os.path.join(entry, name)) for name in blocked)

sys.path[:] = [site] + [entry for entry in sys.path if not checkout(entry)]
failures = {}
for name in modules:
    try:
        module = importlib.import_module(name)
        if not (module.__file__ or "").startswith(site):
            failures[name] = f"imported from {module.__file__}, not from the wheel"
    except BaseException as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
failures.update({name: "loaded" for name in sys.modules if name.split(".")[0] in blocked})
print(json.dumps(failures))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built with pip from a copy of the sources the image is built from."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "services", source / "services", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("wa_archive-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def modules_of(site: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(site.rglob("*.py")):
        parts = path.relative_to(site).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imported_names(path: Path, module: str) -> Iterator[str]:
    """Every module ``path`` imports, relative imports resolved against ``module``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            yield ".".join(part for part in (base, node.module or "") if part)


def test_the_wheel_holds_the_services_and_nothing_of_the_repository(unpacked: Path) -> None:
    tops = {path.name for path in unpacked.iterdir() if not path.name.endswith(".dist-info")}
    assert tops == {"services"}
    modules = dict(modules_of(unpacked))
    assert "services.tools.replay" in modules, "the operator tools ship"
    assert "services.archiver.consumer" in modules
    schemas = unpacked / "services" / "evidence" / "schemas"
    assert (schemas / "rsmf_schema_2_0_0.json").is_file(), "the vendored RSMF schema ships"
    assert "kCura LLC" in (schemas / "LICENSE.rsmf-schema").read_text(), "with its BSD-3 notice"


def test_no_module_in_the_wheel_names_a_development_package(unpacked: Path) -> None:
    found: list[str] = []
    for module, path in modules_of(unpacked):
        for name in imported_names(path, module):
            if name.split(".")[0] in DEVELOPMENT_PACKAGES:
                found.append(f"{module} imports {name}")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.extend(
                    f"{module} names {match.group()}" for match in NAMES_A_DEVELOPMENT_MODULE.finditer(node.value)
                )
    assert found == []


def test_every_module_of_the_wheel_imports_without_the_repository(unpacked: Path) -> None:
    # A __main__ runs its command when imported (services/cli/__main__.py has no guard): its imports are checked
    # above and its package is imported here.
    modules = [module for module, _ in modules_of(unpacked) if not module.endswith("__main__")]
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            CLEAN_IMPORT,
            str(unpacked),
            json.dumps(modules),
            json.dumps(DEVELOPMENT_PACKAGES),
        ],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {}
    assert len(modules) > 50


def test_the_check_sees_an_import_of_the_tests(tmp_path: Path) -> None:
    """The scan itself: a module that imports the tests, or starts one of them, is caught."""
    module = tmp_path / "services" / "tools" / "driver.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from tests.support import free_port\n"
        "from . import replay\n"
        "COMMAND = ['python', '-m', 'tests.fakes.graph_api']\n"
    )
    assert list(imported_names(module, "services.tools.driver")) == ["tests.support", "services.tools"]
    assert NAMES_A_DEVELOPMENT_MODULE.findall("python -m tests.fakes.graph_api; see tests/data") == ["tests.fakes"]
