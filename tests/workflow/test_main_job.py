"""`ecgml main` end to end at tiny size: every step a child run of one main run; a rerun reuses them all; a run on
changed data reuses only what does not read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgml.data.synth import generate_g12ec, generate_ptbxl
from ecgml.experiments import schema
from tests.workflow.isolation import isolate_main_job


@pytest.mark.slow
def test_main_chains_every_step_and_reuses_finished_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from ecgml.workflow.main import MainConfig, run_main

    isolate_main_job(tmp_path, monkeypatch)
    data = tmp_path / "data"
    generate_ptbxl(data / "synthetic" / "ptbxl", 240, seed=0, sampling_rates=(100, 500), workers=1, progress=False)
    generate_g12ec(data / "synthetic" / "g12ec", 240, seed=1, workers=1, progress=False)
    config = MainConfig(data_dir=data, ptbxl_records=240, target_records=240, data_seed=0, fractions=(1.0, 0.5),
                        seeds=(0,), backbone="xresnet1d18_small",
                        standalone_backbones=("xresnet1d18_small",), pretrain_epochs=2, epochs=2, batch_size=32,
                        report_dir=tmp_path / "report", workers=1, jobs=2)
    said: list[str] = []
    first = run_main(config, say=said.append)
    assert set(first.steps) == {"data", "pretrain", "register", "finetune", "calibrate", "promote", "evaluate",
                                "sweep", "report"}
    assert first.reused == [] and first.report.is_file()
    assert "## Sweep `fraction`, protocol `standard`" in first.report.read_text()
    client = mlflow.MlflowClient()
    children = {r.info.run_id: r for r in client.search_runs(
        [client.get_experiment_by_name("ecgml-study").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{first.run_id}'")}
    # every step a direct child of the main run but the calibration, a nested child of the run it calibrates
    assert {run_id for step, run_id in first.steps.items() if step != "calibrate"} <= set(children)
    assert first.steps["calibrate"] not in children
    calibration = client.get_run(first.steps["calibrate"])
    assert calibration.data.tags["mlflow.parentRunId"] == first.steps["finetune"]
    assert calibration.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in children.values())
    main_run = client.get_run(first.run_id)
    assert "one child run per step" in main_run.data.tags["mlflow.note.content"]  # its description in the UI
    assert "`params.arm`" in main_run.data.tags["mlflow.note.content"]
    production = client.get_model_version_by_alias("ecgml-g12ec-classifier", "production")
    assert production.tags["ecgml.calibrated_from"] == "models:/ecgml-g12ec-classifier/1"
    assert client.get_model_version_by_alias("ecgml-ptbxl-backbone", "production").run_id == first.steps["pretrain"]
    evaluated = client.get_run(first.steps["evaluate"])
    assert evaluated.data.tags["ecgml.evaluated_version"] == f"models:/ecgml-g12ec-classifier/{production.version}"
    sweep_children = client.search_runs([evaluated.info.experiment_id],
                                        filter_string=f"tags.mlflow.parentRunId = '{first.steps['sweep']}'")
    kinds = sorted(r.data.tags[schema.KIND] for r in sweep_children)
    assert kinds == ["finetune"] * 2 + ["standalone"] * 2
    # the sweep's standalone runs went beside the chain (pretrain to evaluate: seconds at this size, so the
    # first run starts once a worker has started), its fine-tuned ones after the backbone was registered
    registered = client.get_run(first.steps["register"]).info
    standalone = [r.info for r in sweep_children if r.data.tags[schema.KIND] == "standalone"]
    assert min(r.start_time for r in standalone) < evaluated.info.end_time
    assert all(r.info.start_time >= registered.start_time for r in sweep_children
               if r.data.tags[schema.KIND] == "finetune")
    assert any(line.startswith("sweep: ") and "beside pretraining" in line for line in said)
    calibrations = client.search_runs([evaluated.info.experiment_id], filter_string=(
        f"tags.`{schema.KIND}` = 'calibrate' and tags.`{schema.SWEEP}` = 'fraction'"))
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in calibrations) == sorted(
        r.data.tags[schema.CALIBRATED_RUN] for r in calibrations) == sorted(r.info.run_id for r in sweep_children)
    assert any("report:" in line for line in said) and any("mlflow ui --backend-store-uri" in line for line in said)

    second = run_main(config, say=said.append)
    assert set(second.reused) == {"data", "pretrain", "register", "finetune", "calibrate", "promote", "evaluate"}
    for step in ("pretrain", "finetune", "calibrate", "evaluate"):
        assert second.steps[step] == first.steps[step]
    assert len(client.search_model_versions("name = 'ecgml-g12ec-classifier'")) == 2  # nothing registered again
    sweep = client.get_run(second.steps["sweep"])
    assert sweep.data.metrics["reused"] == sweep.data.metrics["runs"] == 4

    # other G12EC data at the same path: main regenerates the tree and retrains everything that reads it
    from dataclasses import replace

    # (with --jobs 1: the steps one after another in this process, the order main keeps where nothing can go beside)
    third = run_main(replace(config, target_records=200, jobs=1), say=said.append)
    assert any("was generated with other options (n_records 240 -> 200)" in line for line in said)
    assert set(third.reused) == {"pretrain", "register"}  # PTB-XL did not change
    for step in ("data", "finetune", "calibrate", "evaluate"):
        assert third.steps[step] != first.steps[step], step
    sweep = client.get_run(third.steps["sweep"])
    assert sweep.data.metrics["reused"] == 0 and sweep.data.metrics["runs"] == 4
