"""The S4D family through the engine: exact resumption with its own optimizer groups (gradual unfreezing
and layer-wise rates), and end to end on the CLI: pretrain, register, fine-tune with every strategy, serve,
with the 2025 protocol's windows and the refusals that come before any training."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgml.config import STRATEGIES
from ecgml.data.cache.cache import build_cache
from ecgml.data.signal import Preprocessing
from ecgml.data.sources.ptbxl import read_ptbxl
from ecgml.data.synth import generate_g12ec, generate_ptbxl
from ecgml.models import create_backbone, get_backbone_entry
from ecgml.train.data import RandomCropDataset, SlidingWindowDataset, SplitArrays
from ecgml.train.loop import OptimConfig, Trainer
from tests.commands import run_ecgml
from tests.data.trees import write_tiny_ptbxl
from tests.mlflow_store import seeded_sqlite_uri

TINY = dict(get_backbone_entry("s4d").tiny)
TINY.pop("num_classes")
ARGS = ["--epochs", "2", "--batch-size", "16", "--backbone", "s4d", "--backbone-kwargs", json.dumps(TINY),
        "--seed", "3"]


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = (y.sum(0) > 0) & (y.sum(0) < len(y))
    return float(roc_auc_score(y[:, keep], p[:, keep], average="macro"))


def _trainer(tmp: Path, cache: object, train: SplitArrays, val: SplitArrays, epochs: int = 4) -> Trainer:
    mean, std = cache.stats  # type: ignore[attr-defined]
    torch.manual_seed(0)
    model = create_backbone("s4d", **{**TINY, "in_channels": 12, "num_classes": 3})
    optim = OptimConfig(epochs=epochs, batch_size=8, lr=3e-3, patience=0, strategy="gradual",
                        layer_lr_fractions=(0.1, 0.5))
    return Trainer(model, RandomCropDataset(cache.signals, train, mean, std, 250, seed=1),  # type: ignore[attr-defined]
                   SlidingWindowDataset(cache.signals, val, mean, std, 250, 250), val.labels, optim,  # type: ignore[attr-defined]
                   score_fn=_auc, device=torch.device("cpu"), checkpoint_path=tmp / "ck.pt", seed=1, progress=False)


def test_resume_continues_exactly_with_the_ssm_groups(tmp_path: Path) -> None:
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=40)
    dataset = read_ptbxl(root, fs=100, task="superdiagnostic")
    cache = build_cache(dataset, Preprocessing(fs=100), tmp_path / "c", progress=False)
    labels = dataset.label_matrix(dataset.records.set_index("record_id").loc[cache.records["record_id"]].reset_index())

    def split(folds: set[int]) -> SplitArrays:
        rows = np.flatnonzero(cache.records["fold"].isin(folds).to_numpy())
        return SplitArrays(rows, cache.records["n_valid"].to_numpy()[rows], labels[rows],
                           tuple(cache.records["record_id"].iloc[rows]))

    train, val = split(set(range(1, 9))), split({9, 10})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = _trainer(tmp_path / "a", cache, train, val).fit()
    first = _trainer(tmp_path / "b", cache, train, val)
    original = first._train_epoch

    def stop_after_two(epoch: int) -> tuple[float, int]:
        if epoch == 2:
            raise KeyboardInterrupt
        return original(epoch)

    first._train_epoch = stop_after_two  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = _trainer(tmp_path / "b", cache, train, val).fit(resume=True)
    assert resumed.resumed_from == 1 and [r.epoch for r in resumed.history] == [0, 1, 2, 3]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.val_macro_auc == pytest.approx(b.val_macro_auc, rel=1e-5)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("work")
    generate_ptbxl(root / "data" / "synthetic" / "ptbxl", 240, seed=0, sampling_rates=(100,), workers=1, progress=False)
    generate_g12ec(root / "data" / "synthetic" / "g12ec", 200, seed=1, workers=1, progress=False)
    return root


def _ecgml(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": seeded_sqlite_uri(workdir / "s4.db"),
           "ECGML_DATA": str(workdir / "data"), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return run_ecgml(args, cwd=workdir, env=env, timeout=300)


def _run_id(output: str) -> str:
    return next(ln for ln in output.splitlines() if ln.startswith("run ")).split()[1].rstrip(":")


def test_bad_s4d_options_fail_before_any_work(workdir: Path) -> None:
    for args, message in (
        (["--backbone-kwargs", json.dumps({**TINY, "l_max": 100})], "l_max=100 samples per window, not 250"),
        (["--layer-lr-fractions", "0.1,0.2,0.3,0.4,0.5"], "--layer-lr-fractions: give 1, 2 or 3 fractions"),
        (["--layer-lr-fractions", "0,0.1"], "in (0, 1]"),
        (["--windows", "mean-disjoint", "--aggregate", "max"], "drop --aggregate"),
    ):
        done = _ecgml(workdir, "pretrain", "--task", "superdiagnostic", *ARGS, *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr[-2000:])
    assert not (workdir / "data" / "cache").exists()  # refused before any cache was built


def test_pretrain_finetune_every_strategy_and_serve(workdir: Path) -> None:
    import mlflow

    pre = _ecgml(workdir, "pretrain", "--task", "superdiagnostic", *ARGS, "--windows", "mean-disjoint",
                 "--experiment", "s4-pre")
    assert pre.returncode == 0, pre.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir / 's4.db'}")
    run = client.get_run(_run_id(pre.stdout))
    assert run.info.status == "FINISHED" and 0 <= run.data.metrics["test_macro_auc"] <= 1
    assert {k: run.data.params[k] for k in ("family", "aggregate", "window_stride", "windows")} == {
        "family": "s4d", "aggregate": "mean", "window_stride": "250", "windows": "mean-disjoint"}
    meta = json.loads(Path(client.download_artifacts(run.info.run_id, "weights/metadata.json")).read_text())
    assert meta["backbone"] == "s4d" and meta["aggregate"] == "mean" and meta["window_stride"] == 250
    assert _ecgml(workdir, "register", "--experiment", "s4-pre", "--name", "s4bb").returncode == 0

    for strategy in STRATEGIES:
        extra = ["--layer-lr-fractions", "0.01,0.1"] if strategy != "linear" else []
        tuned = _ecgml(workdir, "finetune", *ARGS, "--backbone-uri", "models:/s4bb/1", "--strategy", strategy,
                       "--fraction", "0.5", "--register-as", f"s4clf-{strategy}", *extra)
        assert tuned.returncode == 0, (strategy, tuned.stderr[-3000:])
        params = client.get_run(_run_id(tuned.stdout)).data.params
        assert params["strategy"] == strategy and params["windows"] == "max-half"
        assert params["layer_lr_fractions"] == ("0.01,0.1" if extra else "none")

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 's4.db'}")
    served = mlflow.pyfunc.load_model("models:/s4clf-gradual/1")
    signal = np.random.default_rng(0).normal(0, 0.3, (12, 5000))  # a 10 s record at G12EC's 500 Hz
    out = served.predict([{"signal": signal.tolist(), "fs": 500}])
    assert out.shape[0] == 1 and ((out.to_numpy() >= 0) & (out.to_numpy() <= 1)).all()
