"""
The checks ``scripts/check_wheel.sh`` runs on the built package, each a sub-command.

- ``files WHEEL SOURCE...``: every file of the package in the checkout is in the wheel.
- ``imports RUNTIME|TESTING``: every module of the package imports in this environment (with
  ``RUNTIME``, extras ``[amazon,databricks]``, all but ``airflow_resumable.testing``); the Celery
  bridge may fail only for want of what the ``[celery]`` extra installs. Every operator of both
  providers' ``__all__`` (fourteen) is imported by name.
- ``config``: standard input (``airflow config list --section resumable --show-values``) names
  every option the provider declares.

Runs in the fresh virtual environment, outside the checkout; exits non-zero with one line per
problem.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import zipfile

#: The operators a user of ``[amazon,databricks]`` imports: both providers' ``__all__``.
PROVIDERS = ("airflow_resumable.providers.amazon", "airflow_resumable.providers.databricks")
#: Twelve since 0.3.0; fewer means an operator fell out of an ``__all__``.
OPERATORS = 14


def check_files(wheel: str, sources: list[str]) -> list[str]:
    """
    The package files of the checkout (``git ls-files airflow_resumable``) missing from the wheel.

    :param wheel: path of the built ``.whl``.
    :param sources: paths relative to the checkout's root.
    :return: one problem per missing file.
    """
    names = set(zipfile.ZipFile(wheel).namelist())
    return [f"{path}: in the checkout, not in the wheel" for path in sources if path not in names]


def _wants_celery(error: ModuleNotFoundError) -> bool:
    """Whether the missing module is one the ``[celery]`` extra installs."""
    missing = error.name or ""
    return missing.split(".")[0] == "celery" or missing.startswith("airflow.providers.celery")


def check_imports(scope: str) -> list[str]:
    """
    Import every module of the installed package (see the module docstring for ``scope``).

    :param scope: ``RUNTIME`` or ``TESTING``.
    :return: one problem per module that did not import, and one if an operator is missing.
    """
    import airflow_resumable

    problems: list[str] = []
    print(f"airflow_resumable {airflow_resumable.__version__} from {airflow_resumable.__path__[0]}")
    for module in pkgutil.walk_packages(airflow_resumable.__path__, "airflow_resumable."):
        name = module.name
        if scope == "RUNTIME" and name.startswith("airflow_resumable.testing"):
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if name == "airflow_resumable.celery" and _wants_celery(error):
                continue  # the Celery bridge needs the [celery] extra
            problems.append(f"{name}: {type(error).__name__}: {error}")
        except Exception as error:  # report every module, not just the first that fails
            problems.append(f"{name}: {type(error).__name__}: {error}")
    operators = []
    for provider in PROVIDERS:
        package = importlib.import_module(provider)
        operators += [getattr(package, name) for name in package.__all__]
    print(f"{len(operators)} operators: {', '.join(sorted(op.__name__ for op in operators))}")
    if len(operators) != OPERATORS:
        problems.append(f"expected {OPERATORS} operators in {PROVIDERS}, found {len(operators)}")
    return problems


def check_config(listing: str) -> list[str]:
    """
    Options of the ``[resumable]`` section the provider declares but the listing does not show.

    :param listing: the output of ``airflow config list --section resumable --show-values``.
    :return: one problem per missing option.
    """
    from airflow_resumable.get_provider_info import get_provider_info

    options = get_provider_info()["config"]["resumable"]["options"]
    shown = {line.split("=", 1)[0].strip() for line in listing.splitlines() if "=" in line}
    print(f"[resumable]: {len(options)} options declared, {len(shown & set(options))} listed")
    return [f"[resumable] {option}: declared, not listed" for option in options if option not in shown]


def main(argv: list[str]) -> int:
    """Run one check; print its problems; 1 if there were any."""
    command, args = argv[0], argv[1:]
    if command == "files":
        problems = check_files(args[0], args[1:])
    elif command == "imports":
        problems = check_imports(args[0])
    elif command == "config":
        problems = check_config(sys.stdin.read())
    else:
        raise SystemExit(f"unknown check {command!r}")
    for problem in problems:
        print(f"FAILED {command}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
