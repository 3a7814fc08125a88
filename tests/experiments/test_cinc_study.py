"""The study with a Challenge collection as the target, end to end with no real data: ``ecgml experiment fraction
--target cinc`` on a synthetic CPSC 2018-shaped tree (the abbreviation dialect of the 2020 first release), its
backbone pretrained on a synthetic PTB-XL tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ecgml.cli import main
from ecgml.data.synth import generate_cpsc, generate_ptbxl
from ecgml.experiments import schema

TINY = ("--backbone", "xresnet1d18", "--backbone-kwargs", json.dumps({"width": 0.25, "layers": [1, 1]}),
        "--batch-size", "16", "--standalone", "xresnet1d18")


@pytest.mark.slow
def test_a_fraction_sweep_runs_on_a_synthetic_cpsc_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    generate_ptbxl(tmp_path / "ptbxl", 120, seed=0, sampling_rates=(100,), workers=1, progress=False)
    generate_cpsc(tmp_path / "cpsc", 120, seed=2, workers=1, progress=False, seconds=20.0)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("ECGML_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = CliRunner().invoke(main, [
        "experiment", "fraction", "--target", "cinc", "--source-root", str(tmp_path / "ptbxl"),
        "--target-root", str(tmp_path / "cpsc"), "--min-positives", "5", "--values", "1", "--seeds", "0",
        "--pretrain-task", "superdiagnostic", "--pretrain-epochs", "1", "--epochs", "1", "--jobs", "1", *TINY,
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("ecgml-study")
    runs = client.search_runs([experiment.experiment_id])
    trained = {r.data.tags[schema.KIND]: r for r in runs if r.data.tags.get(schema.KIND) in ("finetune", "standalone")}
    assert set(trained) == {"finetune", "standalone"}
    for kind, run in trained.items():
        assert run.info.status == "FINISHED", kind
        assert run.data.params["target"] == "cinc" and run.data.tags["dataset"] == "cinc"
        assert 0.0 <= run.data.metrics["test_macro_auc"] <= 1.0
        label_map = json.loads(Path(client.download_artifacts(run.info.run_id, "label_map.json")).read_text())
        # the target's own SNOMED CT codes, mapped from the first release's abbreviations
        assert "164889003" in label_map["classes"] and label_map["min_positives"] == 5
    pretrain = next(r for r in runs if r.data.tags.get(schema.KIND) == "pretrain")
    assert pretrain.data.tags["dataset"] == "ptbxl"
