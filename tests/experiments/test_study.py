"""Sweeps: planning (pure) and a tiny fraction sweep end to end, with reuse of finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecgml.data.synth import generate_g12ec, generate_ptbxl
from ecgml.experiments import schema
from ecgml.experiments.study import StudyConfig, check_values, parse_values, plan_sweep

TINY = {"backbone": "xresnet1d18", "backbone_kwargs": {"width": 0.25, "layers": [1, 1]}, "batch_size": 16}


def test_plans_have_the_arms_settings_and_seeds_the_issue_asks_for() -> None:
    study = StudyConfig(seeds=(0, 1, 2))
    jobs = plan_sweep("fraction", study)
    assert [j.arm for j in jobs[:1]] == ["pretrain"]  # one backbone, first
    finetune = [j for j in jobs if j.arm == "finetune"]
    standalone = [j for j in jobs if j.arm == "standalone"]
    assert len(finetune) == 5 * 3 and len(standalone) == 5 * 3 * 3  # 5 fractions x 3 seeds (x 3 families)
    assert {j.config.model.backbone for j in standalone} == set(study.standalone_backbones)
    assert {j.public_setting["target_fraction"] for j in finetune} == {1.0, 0.5, 0.25, 0.1, 0.05}
    assert all(j.pretrain_key == jobs[0].key for j in finetune)
    assert len({j.key for j in jobs}) == len(jobs)  # every job distinct

    rates = plan_sweep("sampling-rate", study)
    assert sorted(j.config.data.data.fs for j in rates if j.arm == "pretrain") == [50, 100, 250, 500]
    tuned = plan_sweep("pretrain-fraction", study)
    assert sorted(j.config.fraction for j in tuned if j.arm == "pretrain") == [0.1, 0.25, 0.5, 1.0]
    assert {j.config.fraction for j in tuned if j.arm != "pretrain"} == {0.1}
    assert len([j for j in tuned if j.arm == "standalone"]) == 3  # the same 10% baseline, once per seed
    leads = plan_sweep("leads", study, ("12", "3"))
    assert {j.config.data.leads for j in leads} == {"12", "3"}
    domains = plan_sweep("input-domain", study, ("time", "fft_magnitude"))
    assert {j.config.input_domain for j in domains} == {"time", "fft_magnitude"}
    strategies = plan_sweep("strategy", study)
    assert {j.config.optim.strategy for j in strategies if j.arm == "finetune"} == {"linear", "full", "gradual"}

    seed = plan_sweep("fraction", StudyConfig(protocol="seed", seeds=(0,)), (0.1,))
    ft = next(j for j in seed if j.arm == "finetune")
    assert ft.config.center_crop and ft.config.optim.strategy == "gradual" and ft.config.optim.epochs == 40
    assert ft.config.data.data.splits == "1-9/10/10" and ft.config.data.data.label_map == "seed"
    assert ft.tags[schema.PROTOCOL] == "seed"

    with_uri = plan_sweep("fraction", StudyConfig(seeds=(0,), backbone_uri="models:/x/1"), (0.1,))
    assert all(j.arm != "pretrain" for j in with_uri)


def test_bad_sweep_values_fail_early() -> None:
    assert parse_values("fraction", "1, 0.1") == (1.0, 0.1)
    with pytest.raises(ValueError, match="do not fit"):
        parse_values("sampling-rate", "fast")
    with pytest.raises(ValueError, match=r"fractions must be in \(0, 1\]"):
        check_values("fraction", (1.5,))
    with pytest.raises(ValueError, match="rates must be among"):
        check_values("sampling-rate", (1000,))
    with pytest.raises(ValueError, match="unknown sweep"):
        plan_sweep("nonsense", StudyConfig())
    with pytest.raises(ValueError, match="unknown protocol"):
        StudyConfig(protocol="mine")


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    generate_ptbxl(root / "synthetic" / "ptbxl", 240, seed=0, sampling_rates=(100,), workers=1, progress=False)
    generate_g12ec(root / "synthetic" / "g12ec", 240, seed=1, workers=1, progress=False)
    return root


@pytest.mark.slow
def test_a_tiny_fraction_sweep_runs_and_is_reused(trees: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    import mlflow

    from ecgml.experiments import study as study_module

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # The checkout under test may be dirty (no reuse then, by design): pretend it is a clean commit.
    monkeypatch.setattr("ecgml.tracking.runs.git_commit", lambda *_: "0123abcd")
    config = StudyConfig(seeds=(0,), source_root=trees / "synthetic" / "ptbxl",
                         target_root=trees / "synthetic" / "g12ec",
                         standalone_backbones=("xresnet1d18",), pretrain_task="superdiagnostic", pretrain_epochs=2,
                         epochs=2, runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", **TINY)
    lines: list[str] = []
    sweep_id, results = study_module.run_sweep("calibration", config, (1.0, 0.5), say=lines.append)
    assert [r.job.arm for r in results] == ["pretrain", "finetune", "standalone", "finetune", "standalone"]
    assert not any(r.reused for r in results)
    client = mlflow.MlflowClient()
    children = client.search_runs([client.get_experiment_by_name("ecgml-study").experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{sweep_id}'")
    kinds = sorted(r.data.tags[schema.KIND] for r in children)
    assert kinds == ["finetune"] * 2 + ["pretrain"] + ["standalone"] * 2
    # each calibration is a nested child of the run it calibrates, not a sibling of it
    calibrations = client.search_runs([client.get_experiment_by_name("ecgml-study").experiment_id],
                                      filter_string=f"tags.`{schema.KIND}` = 'calibrate'")
    for run in [*children, *calibrations]:
        assert run.info.status == "FINISHED"
        assert run.data.tags[schema.SWEEP] == "calibration" and run.data.tags[schema.SEED] == "0"
    finetune = [r for r in children if r.data.tags[schema.KIND] == "finetune"]
    assert {json.loads(r.data.tags[schema.SETTING])["target_fraction"] for r in finetune} == {1.0, 0.5}
    assert all(r.data.tags["ecgml.backbone_version"] == "models:/ecgml-study-backbone/1" for r in finetune)
    trained = sorted(r.info.run_id for r in children if r.data.tags[schema.KIND] in ("finetune", "standalone"))
    assert sorted(r.data.tags[schema.CALIBRATED_RUN] for r in calibrations) == trained
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in calibrations) == trained

    again_id, again = study_module.run_sweep("calibration", config, (1.0, 0.5), say=lines.append)
    assert all(r.reused for r in again) and again_id != sweep_id
    assert [r.run_id for r in again] == [r.run_id for r in results]
    assert len(client.search_model_versions("name = 'ecgml-study-backbone'")) == 1
    assert len(client.search_runs([client.get_experiment_by_name("ecgml-study").experiment_id],
                                  filter_string=f"tags.`{schema.KIND}` = 'calibrate'")) == 4  # reused too



def test_a_sweep_on_another_target_reads_it_with_its_own_label_space(tmp_path: Path) -> None:
    study = StudyConfig(seeds=(0,), target="cinc", target_root=tmp_path / "cpsc", target_min_positives=5,
                        target_tranches=("A",))
    jobs = plan_sweep("fraction", study, (1.0,))
    pretrain, *trained = jobs
    assert pretrain.config.data.data.source == "ptbxl"
    assert {(j.config.data.data.source, j.config.data.data.task, j.config.data.data.min_positives,
             j.config.data.data.tranches) for j in trained} == {("cinc", "own", 5, ("A",))}
    assert all(j.public_setting == {"target_fraction": 1.0} for j in trained)
    with pytest.raises(ValueError, match="target must differ from the source"):
        StudyConfig(target="ptbxl")
