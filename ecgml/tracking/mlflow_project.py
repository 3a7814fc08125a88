"""What ``mlflow run . -e STEP`` does for ecgml before its entry point starts, as an MLflow plugin.

Why: MLflow creates the project's run before it builds the environment, in the experiment named on its
command line or else in ``Default``; and when the environment cannot be built, nothing ends that run.
MLflow asks its ``mlflow.default_experiment_provider`` plugins for the experiment when
none was given; this one answers only inside ``mlflow run`` on an ecgml project, with the step's own
experiment (``ecgml-finetune``, ``ecgml-study``, ...). ``--experiment-name``/``--experiment-id`` and
``MLFLOW_EXPERIMENT_NAME``/``_ID`` still win, and MLflow then never asks a provider.

Whichever way the experiment was chosen, the run the launcher created is not left RUNNING when the
launcher exits before the entry point has finished it (marked FAILED, with a tag that says why). MLflow
offers no hook between creating that run and building the environment, so the provider, which MLflow
instantiates once when it is imported, registers that check at exit when (and only when) the process is
the ``mlflow run`` command itself (:func:`launcher_args`). There it also tells the entry point which MLflow
launched it, so that an environment MLflow built before an upgrade is brought in step
(:mod:`ecgml.tracking.project_env`).

Registered in ``pyproject.toml``; loaded by MLflow in every process that imports it, so importing this
module must stay cheap and free of side effects, and constructing the provider outside ``mlflow run``
does nothing.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from pathlib import Path
from typing import Any

from ecgml.defaults import (
    CALIBRATE_EXPERIMENT,
    DATA_EXPERIMENT,
    EVALUATE_EXPERIMENT,
    FINETUNE_EXPERIMENT,
    PRETRAIN_EXPERIMENT,
    STANDALONE_EXPERIMENT,
    STUDY_EXPERIMENT,
    TUNE_EXPERIMENT,
)
from ecgml.tracking.project_env import record_launcher_mlflow

#: The MLproject's ``name``: the projects this plugin speaks for.
PROJECT_NAME = "ecgml"
#: The experiment of each MLproject entry point.
STEP_EXPERIMENTS: dict[str, str] = {
    "main": STUDY_EXPERIMENT, "experiment": STUDY_EXPERIMENT, "report": STUDY_EXPERIMENT,
    "synth": DATA_EXPERIMENT, "download": DATA_EXPERIMENT, "prepare": DATA_EXPERIMENT, "stats": DATA_EXPERIMENT,
    "pretrain": PRETRAIN_EXPERIMENT, "register": PRETRAIN_EXPERIMENT, "train_standalone": STANDALONE_EXPERIMENT,
    "finetune": FINETUNE_EXPERIMENT, "calibrate": CALIBRATE_EXPERIMENT, "evaluate": EVALUATE_EXPERIMENT,
    "tune": TUNE_EXPERIMENT,
}
#: Tag on a run the launcher left unfinished: why it was marked FAILED.
UNSTARTED_TAG = "ecgml.launch_failure"
#: The run MLflow creates right after asking for the experiment: how long after to still take it for ours.
_CLAIM_WINDOW_MS = 120_000
#: A tracking server's clock may run a little behind this machine's.
_CLOCK_SKEW_MS = 5_000


def project_step(params: dict[str, Any]) -> str | None:
    """The entry point of an ``mlflow run`` on a local ecgml project that names no experiment (None for
    anything else): the launches whose experiment this plugin chooses."""
    if params.get("experiment_name") or params.get("experiment_id"):
        return None
    return _ecgml_entry(params)


def launched_step(params: dict[str, Any], cwd: str | None = None) -> str | None:
    """The entry point of a synchronous (local backend) ``mlflow run`` on a local ecgml project, whatever
    its experiment (None for anything else; a relative ``uri`` is read from ``cwd``)."""
    if (params.get("backend") or "local") != "local":
        return None  # other backends return while their run is legitimately RUNNING
    return _ecgml_entry(params, cwd)


def _ecgml_entry(params: dict[str, Any], cwd: str | None = None) -> str | None:
    uri = params.get("uri")
    if not isinstance(uri, str):
        return None
    mlproject = Path(cwd or ".") / uri / "MLproject"
    try:
        text = mlproject.read_text(encoding="utf-8")
    except OSError:
        return None
    if not any(line.split(":", 1)[-1].strip() == PROJECT_NAME for line in text.splitlines()
               if line.startswith("name:")):
        return None
    entry = params.get("entry_point") or "main"
    return entry if entry in STEP_EXPERIMENTS else None


def launcher_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``run`` when ``argv`` is the ``mlflow run`` command (``mlflow run ...`` or
    ``python -m mlflow run ...``), else None."""
    if len(argv) < 2 or argv[1] != "run":
        return None
    program = Path(argv[0])
    if program.name == "mlflow" or (program.name == "__main__.py" and program.parent.name == "mlflow"):
        return list(argv[2:])
    return None


def _launch_params() -> dict[str, Any] | None:
    """The parameters of the ``mlflow run`` command this process is running, if it is running one."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name != "run" or not ctx.command.callback:
        return None
    if not ctx.command.callback.__module__.startswith("mlflow."):
        return None
    return dict(ctx.params)


def parse_launch(args: list[str]) -> dict[str, Any] | None:
    """``mlflow run``'s own parse of ``args`` (its options' environment variables included, so
    ``MLFLOW_EXPERIMENT_NAME``/``_ID`` count); None when MLflow's command cannot be loaded."""
    try:
        from mlflow.cli import run as run_command

        return dict(run_command.make_context("run", list(args), resilient_parsing=True).params)
    except Exception:  # the launcher is exiting: never mask its own error
        return None


def launch_experiment(params: dict[str, Any], step: str) -> str | None:
    """The experiment the launch created its run in: ``--experiment-id``, else ``--experiment-name`` (or
    their variables), else the step's own experiment; None when it does not exist (no run was created)."""
    import mlflow

    if params.get("experiment_id"):
        return str(params["experiment_id"])
    found = mlflow.MlflowClient().get_experiment_by_name(params.get("experiment_name") or STEP_EXPERIMENTS[step])
    return None if found is None else str(found.experiment_id)


class ProjectExperimentProvider:
    """MLflow ``default_experiment_provider``: the step's experiment for ``mlflow run`` on ecgml, and, in
    the ``mlflow run`` process only, the exit check that fails the launch's unfinished run."""

    def __init__(self) -> None:
        self._step: str | None = None
        self._experiment_id: str | None = None
        args = launcher_args(sys.argv)
        if args is not None:
            record_launcher_mlflow()
            atexit.register(self.at_launcher_exit, args, os.getcwd(), int(time.time() * 1000))

    def in_context(self) -> bool:
        params = _launch_params()
        self._step = project_step(params) if params is not None else None
        return self._step is not None

    def get_experiment_id(self) -> str:
        import mlflow

        step = self._step or "main"
        name = STEP_EXPERIMENTS[step]
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
        if found is None:
            from ecgml.tracking.runs import describe_experiment

            describe_experiment(experiment_id)
        sys.stderr.write(f"ecgml: `mlflow run -e {step}` logs into experiment {name!r} "
                         "(--experiment-name chooses another)\n")
        self._experiment_id = str(experiment_id)
        return str(experiment_id)

    def at_launcher_exit(self, args: list[str], cwd: str, since_ms: int) -> str | None:
        """At the ``mlflow run`` launcher's exit: fail its run if it is still RUNNING (returns its id)."""
        params = parse_launch(args)
        step = launched_step(params, cwd) if params is not None else None
        if params is None or step is None:
            return None
        try:
            experiment_id = self._experiment_id or launch_experiment(params, step)
        except Exception as exc:  # the launcher is exiting anyway: say it, never mask its own error
            sys.stderr.write(f"ecgml: could not check the run `mlflow run` left behind ({exc})\n")
            return None
        return None if experiment_id is None else fail_unfinished_launch(experiment_id, step, since_ms)


def fail_unfinished_launch(experiment_id: str, step: str, since_ms: int) -> str | None:
    """At the launcher's exit: the run it created, if still RUNNING, is marked FAILED (returns its id).

    ``mlflow run`` marks a run whose entry point ran FINISHED or FAILED itself; one still RUNNING when the
    launcher exits never reached its entry point (the environment could not be built, or it was
    interrupted meanwhile). It is the earliest RUNNING run of this step and user created since MLflow
    asked for the experiment.
    """
    import mlflow
    from mlflow.projects.utils import _get_user

    try:
        client = mlflow.MlflowClient()
        runs = client.search_runs(
            [experiment_id], max_results=20, order_by=["attributes.start_time ASC"],
            filter_string=(f"attributes.status = 'RUNNING' and "
                           f"attributes.start_time >= {since_ms - _CLOCK_SKEW_MS} and "
                           f"attributes.start_time <= {since_ms + _CLAIM_WINDOW_MS} and "
                           f"tags.`mlflow.project.entryPoint` = '{step}' and tags.`mlflow.user` = '{_get_user()}'"))
        if not runs:
            return None
        run_id = runs[0].info.run_id
        client.set_tag(run_id, UNSTARTED_TAG, "mlflow run exited before the entry point finished the run (the "
                                              "environment could not be built, or it was interrupted); see its "
                                              "terminal output")
        client.set_terminated(run_id, "FAILED")
        sys.stderr.write(f"ecgml: run {run_id} never reached its entry point; marked FAILED\n")
        return run_id
    except Exception as exc:  # the launcher is exiting anyway: say it, never mask its own error
        sys.stderr.write(f"ecgml: could not check the run `mlflow run` left behind ({exc})\n")
        return None
