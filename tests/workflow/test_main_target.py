"""`ecgml main --target NAME`: the target is a role of the compact study, G12EC by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ecgml.cli import main
from ecgml.data.labels import OWN_TASK, SHARED_TASK
from ecgml.workflow.main import MAIN_TARGETS, SYNTHETIC_SHAPES, MainConfig, _study
from tests.workflow.isolation import isolate_main_job


def test_the_default_target_is_g12ec_with_its_classifier_name(tmp_path: Path) -> None:
    config = MainConfig(data_dir=tmp_path)
    assert config.target == "g12ec" and config.classifier_model == "ecgml-g12ec-classifier"
    assert config.target_title == "G12EC"


def test_a_cinc_target_reads_the_synthetic_challenge_tree_with_its_own_codes(tmp_path: Path) -> None:
    from ecgml.experiments.study import finetune_config, pretrain_config

    config = MainConfig(data_dir=tmp_path, target="cinc")
    assert config.classifier_model == "ecgml-cinc-classifier"
    roots = {"ptbxl": tmp_path / "synthetic" / "ptbxl", "cinc": tmp_path / "synthetic" / SYNTHETIC_SHAPES["cinc"]}
    study = _study(config, roots)
    assert (study.source, study.target) == ("ptbxl", "cinc")
    tuned = finetune_config(study, fraction=1.0, seed=0)
    assert tuned.data.data.source == "cinc" and tuned.data.data.task == OWN_TASK
    assert tuned.data.data.root == roots["cinc"]
    # pretraining is the same whatever the target: the default study's backbone is reused
    assert pretrain_config(study).digest() == pretrain_config(_study(MainConfig(data_dir=tmp_path), {
        "ptbxl": roots["ptbxl"], "g12ec": tmp_path / "synthetic" / "g12ec"})).digest()
    default = finetune_config(_study(MainConfig(data_dir=tmp_path), {
        "ptbxl": roots["ptbxl"], "g12ec": tmp_path / "synthetic" / "g12ec"}), fraction=1.0, seed=0)
    assert default.data.data.task == SHARED_TASK


@pytest.mark.parametrize("target", ["ptbxl", "nonesuch"])
def test_a_target_without_a_synthetic_tree_is_refused(tmp_path: Path, target: str) -> None:
    with pytest.raises(ValueError, match=f"--target {target!r} has no synthetic tree; choose one of"):
        MainConfig(data_dir=tmp_path, target=target)


def test_fractions_are_named_after_the_target(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give two or more PhysioNet/CinC Challenge fractions"):
        MainConfig(data_dir=tmp_path, target="cinc", fractions=(0.5,))
    with pytest.raises(ValueError, match="give two or more G12EC fractions"):
        MainConfig(data_dir=tmp_path, fractions=(0.5,))


def test_the_cli_passes_the_target_and_its_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("ecgml.workflow.main.run_main", lambda config: seen.append(config))
    result = CliRunner().invoke(main, ["main", "--out", str(tmp_path), "--target", "cinc", "--target-records", "300"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (seen[0].target, seen[0].target_records) == ("cinc", 300)
    # the option's old name still works, and the default target is unchanged
    result = CliRunner().invoke(main, ["main", "--out", str(tmp_path), "--g12ec-records", "200"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (seen[1].target, seen[1].target_records) == ("g12ec", 200)
    result = CliRunner().invoke(main, ["main", "--target", "ptbxl"])
    assert result.exit_code == 2 and "ptbxl" in result.output
    assert "ptbxl" not in MAIN_TARGETS and {"g12ec", "cinc"} <= set(MAIN_TARGETS)


@pytest.mark.slow
def test_main_runs_the_compact_study_on_a_cinc_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end at tiny size: main writes a synthetic CPSC 2018-shaped Challenge tree (abbreviation dialect,
    records of 6-60 s), its own codes fine-tuned,
    ecgml-cinc-classifier registered, calibrated and promoted, and a report that names the target by its title."""
    import mlflow

    from ecgml.data.sources import get_dataset_source
    from ecgml.data.synth import generate_ptbxl
    from ecgml.workflow.main import run_main

    isolate_main_job(tmp_path, monkeypatch)
    data = tmp_path / "data"
    generate_ptbxl(data / "synthetic" / "ptbxl", 240, seed=0, sampling_rates=(100, 500), workers=1, progress=False)
    config = MainConfig(data_dir=data, ptbxl_records=240, target="cinc", target_records=240, fractions=(1.0, 0.5),
                        seeds=(0,), backbone="xresnet1d18_small", standalone_backbones=("xresnet1d18_small",),
                        pretrain_epochs=1, epochs=1, batch_size=32, report_dir=tmp_path / "report", workers=1)
    said: list[str] = []
    outcome = run_main(config, say=said.append)
    assert any("synthetic cpsc-shaped records" in line for line in said)
    assert (data / "synthetic" / "cpsc" / "A0001.hea").read_text().count("#Dx:") == 1
    client = mlflow.MlflowClient()
    production = client.get_model_version_by_alias("ecgml-cinc-classifier", "production")
    assert production.tags["ecgml.calibrated_from"] == "models:/ecgml-cinc-classifier/1"
    evaluated = client.get_run(outcome.steps["evaluate"])
    assert evaluated.data.tags["dataset"] == "cinc"
    tuned = client.get_run(outcome.steps["finetune"])
    assert tuned.data.params["target"] == "cinc" and tuned.data.params["task"] == OWN_TASK
    main_run = client.get_run(outcome.run_id)
    assert main_run.data.params["target"] == "cinc" and main_run.data.params["target_records"] == "240"
    title = get_dataset_source("cinc").title
    assert any(f"{title} test macro AUC" in line for line in said)
    text = outcome.report.read_text()
    assert f"{title} training runs (fine-tuned and standalone)" in text and "G12EC" not in text
