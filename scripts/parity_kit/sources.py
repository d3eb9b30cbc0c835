"""
The upstream tests on disk: the providers' sdists from PyPI (cached), the scratch tree the runs use,
and the test-only packages the upstream modules import (cached in their own directory).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["TEST_DEPENDENCIES", "install_test_dependencies", "prepare_tests", "sdist_tests"]

#: Distribution of each provider whose sdist holds the tests; the installed version is fetched.
DISTRIBUTIONS = {
    "amazon": "apache-airflow-providers-amazon",
    "databricks": "apache-airflow-providers-databricks",
}
#: Packages the upstream modules import that the project's environment does not have, pinned (the
#: versions pip resolves against requirements/constraints-3.11.txt). Installed with --no-deps into
#: build/parity/deps, never into the venv. OpenLineage: the SageMaker modules import its
#: extractors. Flask-Session: the Databricks module skips itself without it (an importorskip for
#: FAB; the tests do not use it).
TEST_DEPENDENCIES = (
    "apache-airflow-providers-openlineage==2.20.3",
    "openlineage-python==1.54.0",
    "openlineage-integration-common==1.54.0",
    "openlineage-sql==1.54.0",
    "httpx2==2.17.0",
    "httpcore2==2.17.0",
    "truststore==0.10.5",
    "Flask-Session==0.8.0",
    "cachelib==0.17.0",
)
#: Data files the upstream modules read, relative to the sdist's tests/ directory.
DATA = (
    "unit/amazon/aws/operators/athena_metadata.json",
    "unit/amazon/aws/config_templates",
)


def _pip(*args: str) -> None:
    """``pip`` with its output shown only when it fails."""
    done = subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)
        raise SystemExit(f"parity: pip {args[0]} failed (exit {done.returncode})")


def sdist_tests(provider: str, cache: Path) -> Path:
    """The ``tests/`` directory of the installed provider's sdist, downloaded and extracted once."""
    distribution = DISTRIBUTIONS[provider]
    version = metadata.version(distribution)
    stem = f"{distribution.replace('-', '_')}-{version}"
    extracted = cache / "src" / stem
    if not (extracted / "tests").is_dir():
        archive = cache / "sdist" / f"{stem}.tar.gz"
        if not archive.exists():
            _pip("download", "--no-deps", "--no-binary", ":all:", f"{distribution}=={version}",
                 "-d", str(archive.parent))  # fmt: skip
        with tarfile.open(archive) as tar:
            tar.extractall(cache / "src", filter="data")
    return extracted / "tests"


def install_test_dependencies(target: Path) -> Path:
    """``TEST_DEPENDENCIES`` in ``target`` (reinstalled only when the pins change)."""
    stamp = target / ".parity-pins"
    wanted = "\n".join(TEST_DEPENDENCIES)
    if not stamp.exists() or stamp.read_text() != wanted:
        shutil.rmtree(target, ignore_errors=True)
        _pip("install", "--no-deps", "--target", str(target), *TEST_DEPENDENCIES)
        stamp.write_text(wanted)
    return target


def prepare_tests(modules: Iterable[tuple[Path, str]], scratch: Path) -> Path:
    """
    A fresh scratch tree with the test modules, the ``unit.*`` modules they import, the
    ``__init__.py`` and ``conftest.py`` files on their paths, and ``DATA``.

    :param modules: ``(sdist tests/ dir, module path relative to it)`` pairs.
    """
    shutil.rmtree(scratch, ignore_errors=True)
    pending = list(dict.fromkeys(modules))
    done: set[tuple[Path, str]] = set()
    while pending:
        root, relative = pending.pop()
        if (root, relative) in done:
            continue
        done.add((root, relative))
        _copy(root, relative, scratch)
        for parent in Path(relative).parents:
            for name in ("__init__.py", "conftest.py"):
                if (root / parent / name).exists() and parent != Path("."):
                    _copy(root, str(parent / name), scratch)
        pending.extend((root, found) for found in _imported_unit_modules(root, relative))
    for root in {root for root, _ in done}:
        for relative in DATA:
            if (root / relative).exists():
                _copy(root, relative, scratch)
    return scratch


def _copy(root: Path, relative: str, scratch: Path) -> None:
    source, target = root / relative, scratch / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def _imported_unit_modules(root: Path, relative: str) -> list[str]:
    """The files of the ``unit.*`` modules that ``relative`` imports (upstream's test utilities)."""
    tree = ast.parse((root / relative).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unit."):
            path = node.module.replace(".", "/")
            for candidate in (f"{path}.py", f"{path}/__init__.py"):
                if (root / candidate).exists():
                    found.append(candidate)
    return found
