"""An `mlflow run` environment built before an MLflow upgrade is brought in step with the launcher before its
entry point opens the tracking store (MLflow names the environment after python_env.yaml alone)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata

import pytest

from ecgml.tracking.project_env import (
    ALIGNED_VARIABLE,
    LAUNCHER_VARIABLE,
    ProjectEnvError,
    align_with_launcher,
    installed_mlflow,
    launcher_mismatch,
    record_launcher_mlflow,
)

OLD = {"mlflow": "3.17.2", "mlflow-skinny": "3.17.2"}


def test_the_launcher_records_its_own_mlflow() -> None:
    environ: dict[str, str] = {}
    record_launcher_mlflow(environ)
    assert environ == {LAUNCHER_VARIABLE: f"mlflow=={metadata.version('mlflow')}"} == {LAUNCHER_VARIABLE:
                                                                                         installed_mlflow()}


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),  # not launched by `mlflow run`
    ({LAUNCHER_VARIABLE: "mlflow==3.18.0"}, None),  # no run: an ecgml process of the launcher's own shell
    ({"MLFLOW_RUN_ID": "r", LAUNCHER_VARIABLE: "mlflow==3.17.2"}, None),  # the same release
    ({"MLFLOW_RUN_ID": "r", LAUNCHER_VARIABLE: "mlflow==3.18.0"}, "mlflow==3.18.0"),  # upgraded launcher
    ({"MLFLOW_RUN_ID": "r", LAUNCHER_VARIABLE: "mlflow==3.1.0"}, "mlflow==3.1.0"),  # downgraded launcher
    ({"MLFLOW_RUN_ID": "r", LAUNCHER_VARIABLE: "mlflow-skinny==3.18.0"}, "mlflow-skinny==3.18.0"),
    ({"MLFLOW_RUN_ID": "r", LAUNCHER_VARIABLE: "garbage"}, None),
])
def test_a_mismatch_is_only_an_entry_point_whose_mlflow_differs_from_the_launchers(
        environ: dict[str, str], expected: str | None) -> None:
    assert launcher_mismatch(environ, OLD.get) == expected


class _Recorder:
    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.installed: list[str] = []
        self.started: list[Sequence[str]] = []

    def install(self, requirement: str) -> int:
        self.installed.append(requirement)
        return self.status

    def start_again(self, argv: Sequence[str]) -> None:
        self.started.append(list(argv))


def test_a_stale_environment_installs_the_launchers_mlflow_once_and_starts_again(
        capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"MLFLOW_RUN_ID": "r", LAUNCHER_VARIABLE: "mlflow==3.18.0"}
    calls = _Recorder()
    argv = ["-m", "ecgml.cli", "finetune", "--fraction", "0.1"]
    assert align_with_launcher(argv, environ, version_of=OLD.get, install=calls.install,
                               start_again=calls.start_again)
    assert calls.installed == ["mlflow==3.18.0"] and calls.started == [argv]
    assert environ[ALIGNED_VARIABLE] == "mlflow==3.18.0"
    said = capsys.readouterr().err
    assert sys.prefix in said and "mlflow 3.17.2" in said and "installing mlflow==3.18.0" in said
    # started again and still not in step (the install did not take): an error, never a loop
    with pytest.raises(ProjectEnvError, match=re.escape("still has mlflow 3.17.2 after installing mlflow==3.18.0")):
        align_with_launcher(argv, environ, version_of=OLD.get, install=calls.install,
                            start_again=calls.start_again)
    assert calls.installed == ["mlflow==3.18.0"] and len(calls.started) == 1


def test_an_environment_in_step_does_nothing() -> None:
    calls = _Recorder()
    environ = {"MLFLOW_RUN_ID": "r", LAUNCHER_VARIABLE: "mlflow==3.17.2"}
    assert not align_with_launcher(["-m", "ecgml.cli"], environ, version_of=OLD.get, install=calls.install,
                                   start_again=calls.start_again)
    assert calls.installed == [] and calls.started == [] and ALIGNED_VARIABLE not in environ


def test_a_failed_install_names_the_environment_and_the_fixes() -> None:
    calls = _Recorder(status=1)
    environ = {"MLFLOW_RUN_ID": "r", LAUNCHER_VARIABLE: "mlflow==3.18.0"}
    with pytest.raises(ProjectEnvError) as failed:
        align_with_launcher(["-m", "ecgml.cli"], environ, version_of=OLD.get, install=calls.install,
                            start_again=calls.start_again)
    message = str(failed.value)
    assert "could not install mlflow==3.18.0" in message and sys.prefix in message
    assert "--env-manager local" in message and f"{sys.executable} -m pip install 'mlflow==3.18.0'" in message
    assert calls.started == [] and ALIGNED_VARIABLE not in environ


def test_the_entry_point_command_refuses_with_the_fix_before_it_runs(tmp_path) -> None:
    """`python -m ecgml.cli` as MLproject runs it, launched by an MLflow no index here has: one clear error, exit 1,
    and the command itself never ran (offline pip fails at once)."""
    env = {**os.environ, "MLFLOW_RUN_ID": "r", LAUNCHER_VARIABLE: "mlflow==0.0.1", "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": str(tmp_path)}
    env.pop(ALIGNED_VARIABLE, None)
    done = subprocess.run([sys.executable, "-m", "ecgml.cli", "--version"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Error: could not install mlflow==0.0.1 into the `mlflow run` environment" in done.stderr
    assert "version" not in done.stdout  # `--version` never ran
