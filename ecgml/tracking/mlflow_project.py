"""What ``mlflow run . -e STEP`` does for ecgml before its entry point starts, as an MLflow plugin.

Why: MLflow creates the project's run before it builds the environment, in the experiment named on its
command line or else in ``Default``. Typed as the README shows it (``mlflow run . -e finetune -P
fraction=0.1``), a run landed in ``Default``, and when the environment could not be built the run stayed
RUNNING forever. MLflow asks its ``mlflow.default_experiment_provider`` plugins for the experiment when
none was given; this one answers only inside ``mlflow run`` on an ecgml project, with the step's own
experiment (``ecgml-finetune``, ``ecgml-study``, ...), and makes sure the run it is about to get is not
left RUNNING if the launcher exits before the entry point has finished it (marked FAILED, with a tag that
says why). ``--experiment-name``/``--experiment-id`` and ``MLFLOW_EXPERIMENT_NAME``/``_ID`` still win.

Registered in ``pyproject.toml``; loaded by MLflow in every process that imports it, so importing this
module must stay cheap and free of side effects.
"""

from __future__ import annotations

import atexit
import sys
import time
from pathlib import Path
from typing import Any

from ecgml.defaults import (
    CALIBRATE_EXPERIMENT,
    EVALUATE_EXPERIMENT,
    FINETUNE_EXPERIMENT,
    PRETRAIN_EXPERIMENT,
    STANDALONE_EXPERIMENT,
    STUDY_EXPERIMENT,
    TUNE_EXPERIMENT,
)

#: The MLproject's ``name``: the projects this plugin speaks for.
PROJECT_NAME = "ecgml"
#: Experiment of the data steps (the experiment ``ecgml data`` logs into under ``mlflow run``).
DATA_EXPERIMENT = "ecgml"
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
    """The entry point of an ``mlflow run`` on a local ecgml project (None for anything else)."""
    uri = params.get("uri")
    if not isinstance(uri, str) or params.get("experiment_name") or params.get("experiment_id"):
        return None
    mlproject = Path(uri) / "MLproject"
    try:
        text = mlproject.read_text(encoding="utf-8")
    except OSError:
        return None
    if not any(line.split(":", 1)[-1].strip() == PROJECT_NAME for line in text.splitlines()
               if line.startswith("name:")):
        return None
    entry = params.get("entry_point") or "main"
    return entry if entry in STEP_EXPERIMENTS else None


def _launch_params() -> dict[str, Any] | None:
    """The parameters of the ``mlflow run`` command this process is running, if it is running one."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name != "run" or not ctx.command.callback:
        return None
    if not ctx.command.callback.__module__.startswith("mlflow."):
        return None
    return dict(ctx.params)


class ProjectExperimentProvider:
    """MLflow ``default_experiment_provider``: the step's experiment for ``mlflow run`` on ecgml."""

    def __init__(self) -> None:
        self._step: str | None = None
        self._watched: set[str] = set()

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
        sys.stderr.write(f"ecgml: `mlflow run -e {step}` logs into experiment {name!r} "
                         "(--experiment-name chooses another)\n")
        if experiment_id not in self._watched:
            self._watched.add(experiment_id)
            atexit.register(fail_unfinished_launch, experiment_id, step, int(time.time() * 1000))
        return str(experiment_id)


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
