"""``ecgml experiment ... --cv K``: every fine-tuned and standalone run of a sweep is a cross-validation (a parent
child of the sweep run, a child per fold), reused by key, the arms compared fold by fold in the sweep's output and
in the report; the same runs with ``--jobs 2``; bad ``--cv`` refused before anything trains. On a synthetic CPSC
2018-shaped tree, the backbone pretrained on a synthetic PTB-XL tree."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from ecgml.cli import main
from ecgml.data.sources import get_dataset_source
from ecgml.data.synth import generate_cpsc, generate_ptbxl
from ecgml.experiments import schema
from ecgml.experiments.crossval import CV_FOLD_TAG, CV_TAG, OOF_FILE
from ecgml.experiments.cv_sweep import cv_pairs
from ecgml.experiments.study import StudyConfig, plan_sweep
from ecgml.tracking.reuse import STEP_KEY

TINY = ("--backbone", "xresnet1d18", "--backbone-kwargs", json.dumps({"width": 0.25, "layers": [1, 1]}),
        "--batch-size", "16", "--standalone", "xresnet1d18")
TARGET = "PhysioNet/CinC Challenge"  # the cinc entry's title in the dataset registry


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cv-sweep")
    generate_ptbxl(root / "ptbxl", 120, seed=0, sampling_rates=(100,), workers=1, progress=False)
    generate_cpsc(root / "cpsc", 60, seed=2, workers=1, progress=False, seconds=20.0)
    return root


def _sweep(trees: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, *args: str, name: str = "fraction",
           uri: str | None = None) -> Result:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri or f"sqlite:///{folder / 'mlflow.db'}")
    monkeypatch.setenv("ECGML_DATA", str(folder / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the checkout under test may be dirty (no reuse then, by design): pretend it is a clean commit
    monkeypatch.setattr("ecgml.tracking.runs.git_commit", lambda *_: "0123abcd")
    return CliRunner().invoke(main, [
        "experiment", name, "--target", "cinc", "--source-root", str(trees / "ptbxl"),
        "--target-root", str(trees / "cpsc"), "--min-positives", "5", "--values", "1", "--seeds", "0",
        "--pretrain-task", "superdiagnostic", "--pretrain-epochs", "1", "--epochs", "1", *TINY, *args,
    ], catch_exceptions=False)


def _runs(folder: Path, uri: str | None = None) -> list[Any]:
    client = mlflow.MlflowClient(uri or f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ecgml-study")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def test_the_arms_pair_by_seed_and_setting_and_only_as_cross_validations() -> None:
    def row(run_id: str, arm: str, setting: dict[str, Any], seed: int = 0, cv: Any = "3") -> dict[str, Any]:
        return {"run_id": run_id, "arm": arm, "model": "xresnet1d18", "setting": setting, "seed": seed, "cv": cv}

    rows = [row("ft-lin", "finetune", {"strategy": "linear", "target_fraction": 0.1}),
            row("ft-full", "finetune", {"strategy": "full", "target_fraction": 0.1}),
            row("ft-seed1", "finetune", {"strategy": "full", "target_fraction": 0.1}, seed=1),
            row("ft-plain", "finetune", {"strategy": "full", "target_fraction": 1.0}, cv=None),
            row("ft-k5", "finetune", {"strategy": "full", "target_fraction": 1.0}, cv="5"),
            row("sa", "standalone", {"target_fraction": 0.1}),  # the baseline of both strategies at 0.1
            row("sa-1", "standalone", {"target_fraction": 1.0})]
    pairs = cv_pairs(rows)
    assert [(p.finetune_run_id, p.standalone_run_id) for p in pairs] == [("ft-lin", "sa"), ("ft-full", "sa")]
    assert pairs[0].names == ("fine-tuned xresnet1d18", "standalone xresnet1d18") and pairs[0].k == 3
    assert pairs[0].heading("CPSC") == ("strategy=linear, target_fraction=0.1, seed 0: fine-tuned xresnet1d18 vs "
                                        "standalone xresnet1d18, 3 folds of CPSC")


def test_a_cross_validated_plan_keys_its_jobs_by_k(tmp_path: Path) -> None:
    def plan(cv: int) -> list[Any]:
        return plan_sweep("fraction", StudyConfig(seeds=(0,), target="cinc", target_root=tmp_path, cv=cv,
                                                  standalone_backbones=("xresnet1d18",)), (1.0,))

    plain, folded = plan(0), plan(2)
    assert [j.config.data.data.cv for j in folded] == [0, 2, 2]  # the PTB-XL pretraining is no cross-validation
    assert plain[0].key == folded[0].key  # so it is the same job, reused by either
    assert {j.key for j in plain[1:]}.isdisjoint(j.key for j in folded[1:])
    assert [j.key for j in plan(2)] == [j.key for j in folded] and [j.key for j in plan(3)][1:] != [
        j.key for j in folded][1:]


@pytest.mark.slow
def test_a_cross_validated_sweep_logs_parents_with_folds_compares_them_and_is_reused(
        trees: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    result = _sweep(trees, tmp_path, monkeypatch, "--cv", "2", "--jobs", "1", "--calibrate-all",
                    "--report-dir", str(tmp_path / "report"), uri=store)
    assert result.exit_code == 0, result.output
    assert "not calibrated: a cross-validation has no single model" in result.output
    runs = _runs(tmp_path, store)
    assert not [r for r in runs if r.data.tags.get(schema.KIND) == "calibrate"]
    sweep = next(r for r in runs if r.data.tags.get(schema.KIND) == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    parents = {r.data.tags[schema.ARM]: r for r in children if r.data.tags[schema.ARM] != "pretrain"}
    assert set(parents) == {"finetune", "standalone"}
    folds: dict[str, dict[int, str]] = {}
    for arm, parent in parents.items():
        tags, metrics = parent.data.tags, parent.data.metrics
        assert parent.info.status == "FINISHED" and tags[CV_TAG] == "2" and STEP_KEY in tags
        assert json.loads(tags[schema.SETTING]) == {"target_fraction": 1.0} and tags[schema.SEED] == "0"
        assert parent.info.run_name.endswith(" cv=2") and parent.data.params["cv"] == "2"
        assert metrics["test_macro_auc_low"] <= metrics["test_macro_auc"] <= metrics["test_macro_auc_high"]
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.data.tags[CV_FOLD_TAG] for r in kids) == ["1", "2"]
        assert sorted(r.info.run_name for r in kids) == [f"{parent.info.run_name} fold {k}/2" for k in (1, 2)]
        oof = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path=OOF_FILE),
                          dtype={"record_id": str})
        folds[arm] = dict(zip(oof["record_id"], oof["fold"], strict=True))
    assert folds["finetune"] == folds["standalone"]  # both arms on the same stored folds
    assert set(folds["finetune"].values()) == {1, 2}
    assert parents["finetune"].data.tags["ecgml.backbone_version"] == "models:/ecgml-study-backbone/1"

    # the summary: the fold-by-fold table, its pooled row the arms' pooled out-of-fold AUCs, and its sentence
    out = result.output
    heading = ("fold by fold, target_fraction=1.0, seed 0: fine-tuned xresnet1d18 vs standalone xresnet1d18, "
               f"2 folds of {TARGET}:")
    assert heading in out
    pooled = re.search(r"^\| pooled \| (\d+) \| ([0-9.]+) \| ([0-9.]+) \|", out, flags=re.MULTILINE)
    assert pooled is not None, out
    assert int(pooled.group(1)) == len(folds["finetune"])
    assert pooled.group(2) == f"{parents['finetune'].data.metrics['test_macro_auc']:.3f}"
    assert pooled.group(3) == f"{parents['standalone'].data.metrics['test_macro_auc']:.3f}"
    assert re.search(r"^\| 1 \| \d+ \|", out, flags=re.MULTILINE) and re.search(r"^\| 2 \| \d+ \|", out,
                                                                                flags=re.MULTILINE)
    assert "fine-tuned xresnet1d18 − standalone xresnet1d18: pooled out-of-fold macro AUC" in out
    logged = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=sweep.info.run_id,
                                                             artifact_path="comparison/cv_folds.csv"))
    assert list(logged["fold"].astype(str)) == ["1", "2", "pooled"]

    report = (tmp_path / "report" / "report.md").read_text()
    assert f"### Fold by fold: fine-tuned against standalone on the same folds of {TARGET}" in report
    assert (f"#### target_fraction=1.0, seed 0: fine-tuned xresnet vs standalone xresnet, 2 folds of {TARGET}"
            in report)
    assert "| pooled |" in report
    assert "skipped" not in report.split("## Problems met while writing the report")[1].split("## Appendix")[0]
    assert (tmp_path / "report" / "tables" / "cv_folds_fraction-standard.csv").is_file()

    again = _sweep(trees, tmp_path, monkeypatch, "--cv", "2", "--jobs", "1", uri=store)
    assert again.exit_code == 0, again.output
    assert "3 child runs (3 reused)" in again.output and heading in again.output
    assert len(_runs(tmp_path, store)) == len(runs) + 1  # only the second sweep run itself


def _comparable(folder: Path) -> dict[str, Any]:
    """The store's runs as names, parents (by name), tags and params, without what differs between any two stores
    (run ids become the names of the runs they name) or between processes (thread shares)."""
    runs = _runs(folder)
    names = {r.info.run_id: r.info.run_name for r in runs}
    volatile = ("mlflow.", "ecgml.model_uri", "threads", "interop_threads")

    def named(value: str) -> str:
        return re.sub(r"[0-9a-f]{32}", lambda m: f"<{names.get(m.group(0), m.group(0))}>", value)

    return {r.info.run_name: {
        "status": r.info.status, "parent": names.get(r.data.tags.get("mlflow.parentRunId", "")),
        "tags": {k: named(v) for k, v in r.data.tags.items() if not k.startswith(volatile)},
        "params": {k: v for k, v in r.data.params.items() if not k.startswith(volatile)}}
        for r in runs if r.data.tags.get(schema.KIND) != "sweep"}


@pytest.mark.slow
def test_two_jobs_give_the_same_cross_validated_runs_as_one(trees: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    outputs = {}
    for jobs in ("1", "2"):
        (tmp_path / jobs).mkdir()
        result = _sweep(trees, tmp_path / jobs, monkeypatch, "--cv", "2", "--jobs", jobs)
        assert result.exit_code == 0, result.output
        outputs[jobs] = result.output
    assert "in 2 worker processes side by side" in outputs["2"]
    one, two = _comparable(tmp_path / "1"), _comparable(tmp_path / "2")
    assert len(one) == 1 + 2 * 3  # the pretraining, and two cross-validations of two folds each
    assert one == two
    assert all("fold by fold, target_fraction=1.0, seed 0" in out for out in outputs.values())


def test_bad_cv_is_refused_naming_it_before_anything_trains(trees: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    result = _sweep(trees, tmp_path, monkeypatch, "--cv", "1")
    assert result.exit_code == 2 and "--cv 1: cross-validation needs at least 2 folds" in result.output
    result = _sweep(trees, tmp_path, monkeypatch, "--cv", "40")  # 60 records: no class has 40 positives
    assert result.exit_code == 1, result.output
    assert "--cv 40 needs at least 40 positive records of every class" in result.output
    result = _sweep(trees, tmp_path, monkeypatch, "--cv", "2", name="calibration")
    assert result.exit_code == 1 and "--cv 2: the calibration sweep calibrates" in result.output
    assert "Traceback" not in result.output
    assert not _runs(tmp_path) and not (tmp_path / "data" / "cache").exists()  # nothing trained, nothing cached
    result = CliRunner().invoke(main, ["experiment", "fraction", "--cv", "3"])  # G12EC: fixed folds
    assert result.exit_code == 2 and f"--cv 3: {get_dataset_source('g12ec').title} has fixed" in result.output
    assert "cross-validation is for targets with their own label space (cinc, folder)" in result.output
