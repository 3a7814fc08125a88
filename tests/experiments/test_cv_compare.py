"""Fine-tuned and standalone cross-validations on the same folds compared fold by fold with the paired bootstrap:
on planted out-of-fold predictions, and by ``ecgml compare-cv`` on two parent runs of a SQLite store and of a real
``mlflow server`` over HTTP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from ecgml.cli import main
from ecgml.evaluate.paired import AlignmentError
from ecgml.experiments.crossval import CV_TAG, OOF_FILE
from ecgml.experiments.cv_compare import POOLED, CvCompareError, compare_oof

CLASSES = ("164889003", "59118001", "426783006")
K, PER_FOLD = 3, 40


def _oof(signal: float, seed: int) -> pd.DataFrame:
    """Out-of-fold predictions of 120 records in 3 folds; ``signal`` sets how well the probabilities rank."""
    labels_rng, rng = np.random.default_rng(0), np.random.default_rng(seed)
    n = K * PER_FOLD
    y = labels_rng.random((n, len(CLASSES))) < 0.3
    y[np.arange(n), np.arange(n) % len(CLASSES)] = True  # every fold sees every class
    common = labels_rng.normal(0, 1, y.shape)  # what is hard for one model is hard for both: pairing removes it
    p = 1 / (1 + np.exp(-(signal * (y - 0.5) * 4 + common + rng.normal(0, 0.5, y.shape))))
    frame = pd.DataFrame({"record_id": [f"A{i:04d}" for i in range(n)], "fold": np.arange(n) // PER_FOLD + 1})
    for j, c in enumerate(CLASSES):
        frame[f"true_{c}"] = y[:, j].astype(int)
    for j, c in enumerate(CLASSES):
        frame[f"prob_{c}"] = p[:, j]
    return frame


def _macro(frame: pd.DataFrame) -> float:
    return float(np.mean([roc_auc_score(frame[f"true_{c}"], frame[f"prob_{c}"]) for c in CLASSES]))


def test_each_fold_is_a_paired_comparison_on_its_own_records() -> None:
    tuned, alone = _oof(1.0, 1), _oof(0.3, 2)
    out = compare_oof(tuned, alone.sample(frac=1.0, random_state=0), names=("finetune", "standalone"), n_rounds=300)
    folds = out.folds
    assert list(folds["fold"]) == ["1", "2", "3"] and list(folds["n_records"]) == [PER_FOLD] * K
    for fold in (1, 2, 3):
        row = folds[folds["fold"] == str(fold)].iloc[0]
        a, b = tuned[tuned["fold"] == fold], alone[alone["fold"] == fold]
        assert row["auc_a"] == pytest.approx(_macro(a)) and row["auc_b"] == pytest.approx(_macro(b))
        assert row["diff"] == pytest.approx(_macro(a) - _macro(b))
        assert row["low"] <= row["diff"] <= row["high"]
    pooled = out.pooled
    assert pooled["fold"] == POOLED and pooled["n_records"] == K * PER_FOLD
    assert pooled["diff"] == pytest.approx(_macro(tuned) - _macro(alone))
    assert pooled["significance"] == "above"  # the planted gap is found
    assert "ahead in 3/3 folds" in out.summary() and "significant gain" in out.summary()
    assert "| pooled | 120 |" in out.markdown()


def test_two_equal_models_show_no_gap() -> None:
    out = compare_oof(_oof(0.8, 1), _oof(0.8, 1), n_rounds=200)
    assert out.pooled["diff"] == 0 and out.pooled["significance"] == "includes"
    assert set(out.folds["significance"]) == {"includes"}


def test_other_folds_or_other_records_are_refused() -> None:
    a = _oof(1.0, 1)
    moved = a.copy()
    moved.loc[0, "fold"] = 2  # A0000 is in fold 1 in a
    with pytest.raises(CvCompareError, match=r"put 1 record\(s\) in other folds \(e\.g\. A0000\): they were not"):
        compare_oof(a, moved)
    with pytest.raises(AlignmentError, match="not tested on the same records"):
        compare_oof(a, a.iloc[5:])


def _parent(client: object, experiment: str, name: str, frame: pd.DataFrame | None, folder: Path,
            cv: str | None = str(K)) -> str:
    run = client.create_run(experiment, run_name=name, tags={CV_TAG: cv} if cv else {})  # type: ignore[attr-defined]
    if frame is not None:
        folder.mkdir(parents=True)
        frame.to_csv(folder / OOF_FILE, index=False)
        client.log_artifact(run.info.run_id, str(folder / OOF_FILE))  # type: ignore[attr-defined]
    client.set_terminated(run.info.run_id)  # type: ignore[attr-defined]
    return str(run.info.run_id)


def test_compare_cv_command_on_two_parent_runs(store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    client = mlflow.MlflowClient(store)
    experiment = client.create_experiment("ecgml-finetune")
    tuned = _parent(client, experiment, "finetune cinc xresnet1d50_small f=1 s=0 cv=3", _oof(1.0, 1), tmp_path / "a")
    alone = _parent(client, experiment, "standalone cinc xresnet1d50_small f=1 s=0 cv=3", _oof(0.3, 2),
                    tmp_path / "b")
    out = tmp_path / "table.csv"
    result = CliRunner().invoke(main, ["compare-cv", tuned, alone, "--bootstrap", "200", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "finetune cinc xresnet1d50_small f=1 s=0 cv=3 − standalone cinc" in result.output
    assert "significant gain; ahead in 3/3 folds" in result.output
    table = pd.read_csv(out, dtype={"fold": str})
    assert list(table["fold"]) == ["1", "2", "3", POOLED] and table["diff"].iloc[-1] > 0

    single = _parent(client, experiment, "finetune cinc s=0", None, tmp_path / "c", cv=None)
    result = CliRunner().invoke(main, ["compare-cv", tuned, single])
    assert result.exit_code == 1 and "is not a cross-validation parent run (no tag ecgml.cv)" in result.output
    five = _parent(client, experiment, "standalone cinc cv=5", _oof(0.3, 2), tmp_path / "d", cv="5")
    result = CliRunner().invoke(main, ["compare-cv", tuned, five])
    assert result.exit_code == 1 and "has 3 folds" in result.output and "same --cv K" in result.output


def test_a_cross_validation_against_the_zero_shot_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What fine-tuning adds over the backbone as it is: a zero-shot run of every record, scored on the
    cross-validation's folds and on the classes it could score."""
    import mlflow

    from ecgml.posttrain.evaluate import ZERO_SHOT_TAG

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    client = mlflow.MlflowClient(store)
    experiment = client.create_experiment("ecgml-evaluate")
    tuned = _parent(client, experiment, "finetune cv=3", _oof(1.0, 1), tmp_path / "a")
    zero = _oof(0.5, 3).drop(columns=[f"true_{CLASSES[2]}", f"prob_{CLASSES[2]}"])  # a class with no equivalent
    zero["fold"] = 10  # the stored ten folds' number, not the cross-validation's
    (tmp_path / "z").mkdir()
    zero.to_csv(tmp_path / "z" / "predictions_all.csv", index=False)

    def zero_shot_run(split: str) -> str:
        run = client.create_run(experiment, run_name=f"evaluate zero-shot {split}", tags={ZERO_SHOT_TAG: "true"})
        client.log_param(run.info.run_id, "split", split)
        client.log_artifact(run.info.run_id, str(tmp_path / "z" / "predictions_all.csv"), "eval")
        client.set_terminated(run.info.run_id)
        return str(run.info.run_id)

    result = CliRunner().invoke(main, ["compare-cv", tuned, zero_shot_run("all"), "--bootstrap", "200"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "| 1 | 40 |" in result.output and "| pooled | 120 |" in result.output  # the cross-validation's folds
    assert f"compared on the 2 class(es) the zero-shot run scores; left out: {CLASSES[2]}" in result.output
    result = CliRunner().invoke(main, ["compare-cv", tuned, zero_shot_run("test")])
    assert result.exit_code == 1 and "compare one of every record (--split all)" in result.output
