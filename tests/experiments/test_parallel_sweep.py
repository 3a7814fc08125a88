"""``--jobs 2``: the same sweep as ``--jobs 1`` (runs, names, tags, nesting, calibrations, backbone versions,
children.json), its runs trained in two worker processes side by side."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ecgml.experiments import schema
from ecgml.experiments.parallel import job_count
from ecgml.experiments.study import StudyConfig
from ecgml.tracking.reuse import STEP_KEY
from tests.experiments.test_study import TINY, trees  # noqa: F401 - the module's synthetic trees fixture


def _sweep(trees: Path, folder: Path, jobs: int, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list[str]]:  # noqa: F811
    """Run the tiny calibration sweep in a store of its own; its runs as comparable records, and its log."""
    import mlflow

    from ecgml.experiments import study as study_module

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    config = StudyConfig(seeds=(0,), source_root=trees / "synthetic" / "ptbxl",
                         target_root=trees / "synthetic" / "g12ec", standalone_backbones=("xresnet1d18",),
                         pretrain_task="superdiagnostic", pretrain_epochs=1,
                         epochs=1, runs_dir=folder / "runs", cache_dir=trees / "cache", jobs=jobs, **TINY)
    lines: list[str] = []
    sweep_id, results = study_module.run_sweep("calibration", config, (0.5,), say=lines.append)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("ecgml-study").experiment_id
    runs = {r.info.run_id: r for r in client.search_runs([experiment])}
    names = {run_id: r.info.run_name for run_id, r in runs.items()}
    volatile = ("mlflow.parentRunId", "mlflow.runName", "mlflow.log-model.history", "ecgml.model_uri",
                schema.CALIBRATED_RUN, "mlflow.source.name", "mlflow.user", "mlflow.source.git.commit")

    def record(run: object) -> dict:
        tags = run.data.tags  # type: ignore[attr-defined]
        parent = tags.get("mlflow.parentRunId")
        return {"name": run.info.run_name, "status": run.info.status,  # type: ignore[attr-defined]
                "parent": names.get(parent, "sweep" if parent == sweep_id else parent),
                "tags": {k: v for k, v in tags.items() if k not in volatile and not k.startswith("mlflow.")},
                "params": dict(run.data.params)}  # type: ignore[attr-defined]

    names[sweep_id] = "sweep"

    def named(value: object) -> object:  # run ids differ between the stores: compare the runs they name
        if isinstance(value, dict):
            return {k: named(v) for k, v in value.items()}
        if isinstance(value, str):
            return re.sub(r"[0-9a-f]{32}", lambda m: f"<{names.get(m.group(0), m.group(0))}>", value)
        return value

    comparable = {r.info.run_name: named(record(r)) for run_id, r in runs.items() if run_id != sweep_id}
    for run in comparable.values():  # a calibration's key hashes the id of the run it calibrates: compared above
        if run["tags"].get(schema.KIND) == "calibrate":
            run["tags"].pop(STEP_KEY)
    children = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=sweep_id, artifact_path="children.json"))
                          .read_text())
    comparable["children.json"] = [{k: v for k, v in c.items() if k not in ("run_id", "seconds")} for c in children]
    comparable["results"] = [(r.job.arm, r.job.public_setting, r.reused) for r in results]
    return comparable, lines


def _differences(a: object, b: object, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{where}/{k}")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def test_two_jobs_give_the_same_sweep_as_one(trees: Path, tmp_path: Path,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ecgml.tracking.runs.git_commit", lambda *_: "0123abcd")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, _ = _sweep(trees, tmp_path / "one", 1, monkeypatch)
    two, lines = _sweep(trees, tmp_path / "two", 2, monkeypatch)
    assert any("in 2 worker processes side by side" in line for line in lines)
    for tags in (r["tags"] for r in two.values() if isinstance(r, dict)):  # a worker's own thread share
        assert tags.get("threads", "1") == "1"
    shared = {k: v for k, v in two.items() if isinstance(v, dict)}
    for name, run in shared.items():  # a worker's budget is logged as params: its share, not the cores
        if "threads" in run["params"]:
            assert run["params"]["threads"] == "1" and "sweep jobs" in run["params"]["threads_source"]
            del run["params"]["threads"], run["params"]["threads_source"], run["params"]["interop_threads"]
            del one[name]["params"]["threads"], one[name]["params"]["threads_source"]
            del one[name]["params"]["interop_threads"]
    assert _differences(two, one) == []
    # and a second --jobs 2 sweep reuses every run, found in the sweep's process: no worker is started for them
    from concurrent.futures import ProcessPoolExecutor

    def no_worker(*_: object, **__: object) -> None:
        raise AssertionError("a worker was started for a finished job")

    monkeypatch.setattr(ProcessPoolExecutor, "submit", no_worker)
    again, _ = _sweep(trees, tmp_path / "two", 2, monkeypatch)
    assert all(reused for _, _, reused in again["results"])


def test_the_default_is_what_the_thread_budget_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecgml.runtime import threads

    monkeypatch.setattr(threads, "_applied", threads.plan_budget(cores=4, env={}))
    assert job_count(None, 24) == 4 and job_count(None, 3) == 3 and job_count(2, 24) == 2
    monkeypatch.setattr(threads, "_applied", threads.plan_budget(cores=4, env={"OMP_NUM_THREADS": "2"}))
    assert job_count(None, 24) == 2  # processes of the count the user set, as many as fit the cores
    monkeypatch.setattr(threads, "_applied", threads.plan_budget(cores=4, env={"ECGML_THREAD_BUDGET": "off"}))
    assert job_count(None, 24) == 1


def test_work_beside_a_sweep_holds_a_core_and_its_failure_stops_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecgml.experiments.parallel import plan_beside
    from ecgml.runtime import threads

    monkeypatch.setattr(threads, "_applied", threads.plan_budget(cores=2, env={}))
    assert plan_beside(1, 24) is None  # --jobs 1: the sweep after the work, in this process
    beside = plan_beside(None, 24)
    assert beside is not None and [b.threads for b in beside.budgets] == [1, 1]
    assert beside.free_workers(2) == 1 and beside.failure() is None
    beside.backbone.set_result("models:/ecgml-ptbxl-backbone/1")
    assert beside.free_workers(2) == 1 and beside.failure() is None  # registered, but still training beside
    beside.finish()
    assert beside.free_workers(2) == 2 and beside.failure() is None

    failed = plan_beside(None, 24)
    assert failed is not None
    failed.finish(ValueError("pretraining failed"))
    assert isinstance(failed.failure(), ValueError) and failed.backbone.done()  # the waiting jobs never start


def test_budget_for_a_while_puts_back_the_environment_and_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import torch

    from ecgml.runtime import threads

    monkeypatch.delenv("ECGML_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(threads, "_applied", None)
    before = torch.get_num_threads()
    share = threads.child_budgets(threads.plan_budget(cores=2, env={}), 2, "sweep jobs")[0]
    with threads.budget_for_a_while(share) as applied:
        assert applied.threads == 1 == torch.get_num_threads()
        assert os.environ["ECGML_THREADS"] == "1"
    assert torch.get_num_threads() == before and "ECGML_THREADS" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "2" and threads.applied_budget() is None
