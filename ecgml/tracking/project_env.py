"""Keep the MLflow of an ``mlflow run`` environment in step with the MLflow that launched it.

Why: MLflow names a project's environment after ``python_env.yaml`` alone, so after ``pip install -U
mlflow`` the next ``mlflow run`` reuses the environment it built before, with the old MLflow in it. The
launcher (new MLflow) then creates or migrates the tracking store, and the entry point (old MLflow) refuses
it: "Detected out-of-date database schema ... run 'mlflow db upgrade'", the wrong advice, since the store
is newer than the MLflow reading it. A newer MLflow in the environment than in the launcher fails the
same way the other way round.

So the launcher (:class:`~ecgml.tracking.mlflow_project.ProjectExperimentProvider`, inside ``mlflow run``
only) records its own MLflow requirement in :data:`LAUNCHER_VARIABLE`, which the entry point inherits;
``python -m ecgml.cli`` (every MLproject command) compares it with the MLflow it imports and, when they
differ, installs the launcher's release into its own environment once and starts itself again. Reading
versions uses package metadata only: nothing here imports mlflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata

#: Set by the ``mlflow run`` launcher for its entry point: the requirement of its own MLflow
#: (``mlflow==3.18.0``, or ``mlflow-skinny==...`` for a launcher that has only the skinny package).
LAUNCHER_VARIABLE = "ECGML_LAUNCHER_MLFLOW"
#: Set before starting again after an install: a second mismatch is an error, never a loop.
ALIGNED_VARIABLE = "ECGML_ALIGNED_MLFLOW"
#: The distributions that provide ``mlflow``, full package first.
_DISTRIBUTIONS = ("mlflow", "mlflow-skinny")


class ProjectEnvError(RuntimeError):
    """The environment's MLflow differs from the launcher's and could not be brought in step."""


def installed_mlflow() -> str | None:
    """This interpreter's MLflow as a pinned requirement (``mlflow==3.18.0``); None without one."""
    for name in _DISTRIBUTIONS:
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def record_launcher_mlflow(environ: dict[str, str] | None = None) -> None:
    """In the ``mlflow run`` launcher: tell the entry point, through its environment, which MLflow launched it."""
    environ = os.environ if environ is None else environ
    requirement = installed_mlflow()
    if requirement is not None:
        environ[LAUNCHER_VARIABLE] = requirement


def _version_of(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def launcher_mismatch(environ: Mapping[str, str], version_of: Callable[[str], str | None] = _version_of) -> str | None:
    """The launcher's MLflow requirement when this process runs an ``mlflow run`` entry point whose MLflow
    differs from it (None otherwise: not launched by ``mlflow run``, or the same release)."""
    wanted = environ.get(LAUNCHER_VARIABLE, "")
    if not environ.get("MLFLOW_RUN_ID") or "==" not in wanted:
        return None
    name, version = wanted.split("==", 1)
    return None if version_of(name) == version else wanted


def _pip_install(requirement: str) -> int:
    return subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            requirement])


def _start_again(argv: Sequence[str]) -> None:
    os.execv(sys.executable, [sys.executable, *argv])


def align_with_launcher(argv: Sequence[str], environ: dict[str, str] | None = None, *,
                        version_of: Callable[[str], str | None] = _version_of,
                        install: Callable[[str], int] = _pip_install,
                        start_again: Callable[[Sequence[str]], None] = _start_again) -> bool:
    """Before the entry point touches MLflow: install the launcher's MLflow here and start ``argv`` again when
    the two differ (returns True when it did; ``start_again`` normally does not return). Raises
    :class:`ProjectEnvError`, naming the environment and the fix, when the install fails or did not take."""
    environ = os.environ if environ is None else environ
    wanted = launcher_mismatch(environ, version_of)
    if wanted is None:
        return False
    name = wanted.split("==", 1)[0]
    have = version_of(name) or "none"
    fix = (f"Delete the environment ({sys.prefix}) so that the next `mlflow run` builds it again, install "
           f"{wanted} into it ({sys.executable} -m pip install '{wanted}'), or pass `--env-manager local` "
           "to run in the launcher's own environment")
    if environ.get(ALIGNED_VARIABLE) == wanted:
        raise ProjectEnvError(f"the `mlflow run` environment {sys.prefix} still has {name} {have} after installing "
                              f"{wanted} for the launcher. {fix}.")
    sys.stderr.write(f"ecgml: this `mlflow run` environment ({sys.prefix}) has {name} {have}, the `mlflow run` "
                     f"that launched it {wanted}. MLflow keeps a project's environment across its own upgrades, "
                     f"and the two would not open the same tracking store: installing {wanted} here (once)\n")
    sys.stderr.flush()
    if install(wanted) != 0:
        raise ProjectEnvError(f"could not install {wanted} into the `mlflow run` environment {sys.prefix} (pip's "
                              f"output is above); its {name} {have} cannot share a tracking store with the "
                              f"launcher's. {fix}.")
    environ[ALIGNED_VARIABLE] = wanted
    start_again(argv)
    return True
