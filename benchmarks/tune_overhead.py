"""Per-trial overhead of tuning (claiming the trial, sampling, heartbeats, the MLflow trial logger, telling the
storage) against the training run itself, measured in one run of a real study on a tiny synthetic tree.

A trial's wall time (Optuna's start to complete) minus the time spent inside ``run_training`` is what the tuning
layer costs; the ratio says how much of a study is spent outside training. Target: under 10% of a trial here,
where trials are deliberately tiny (a few seconds); real trials (minutes) make it negligible.

    python benchmarks/tune_overhead.py [--trials 6] [--epochs 2] [--records 300] [--storage journal|sqlite]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--storage", choices=["journal", "sqlite"], default="journal")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tune-overhead-"))
    os.environ.update({"MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", "ECGML_DATA": str(workdir),
                       "PYTHONWARNINGS": "ignore"})
    os.environ.pop("MLFLOW_RUN_ID", None)
    os.chdir(workdir)
    try:
        return _measure(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(args: argparse.Namespace, workdir: Path) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    import optuna

    import ecgml.train.runner
    from ecgml.config import DataConfig, PrepareConfig
    from ecgml.data.synth import generate_ptbxl
    from ecgml.train.loop import OptimConfig
    from ecgml.train.pipeline import ModelConfig, TrainConfig
    from ecgml.tune.space import SearchSpace, parse_overrides
    from ecgml.tune.spec import TuneSpec
    from ecgml.tune.study import RunSettings, run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    generate_ptbxl(workdir / "ptbxl", args.records, seed=0, sampling_rates=(100,), workers=1, progress=False)
    data = PrepareConfig(DataConfig(source="ptbxl", root=workdir / "ptbxl", task="superdiagnostic"),
                         cache_dir=workdir / "cache")
    base = TrainConfig(kind="pretrain", data=data, model=ModelConfig("xresnet1d18", {"layers": [1, 1]}),
                       optim=OptimConfig(epochs=args.epochs), runs_dir=workdir / "runs", experiment="overhead")
    space = SearchSpace.default("pretrain").narrowed(parse_overrides(
        ["backbone=xresnet1d18", "crop_s=2.5", "batch_size=16", "width=0.125,0.25"]))
    spec = TuneSpec(stage="pretrain", space=space, base=base, n_trials=args.trials, pruner="none", sampler="random")
    storage = str(workdir / "study.journal") if args.storage == "journal" else f"sqlite:///{workdir / 'optuna.db'}"

    inside: list[float] = []
    real = ecgml.train.runner.run_training

    def timed(*a: Any, **k: Any) -> Any:
        began = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            inside.append(time.perf_counter() - began)

    ecgml.train.runner.run_training = timed  # type: ignore[assignment]
    began = time.perf_counter()
    result = run_study(spec, "overhead", RunSettings(storage=storage, heartbeat_interval=5, register=False),
                       echo=lambda line: None)
    wall = time.perf_counter() - began
    study = optuna.load_study(study_name="overhead", storage=storage if "://" in storage else
                              optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)))
    trial_s = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]
    overhead = [t - i for t, i in zip(trial_s, inside, strict=True)]
    mean_trial, mean_over = sum(trial_s) / len(trial_s), sum(overhead) / len(overhead)
    ratio = mean_over / mean_trial
    print(f"storage {args.storage}: {len(trial_s)} trials ({result.counts}), {args.epochs} epochs each")
    print(f"trial wall time     {mean_trial:6.2f} s (mean)")
    print(f"inside run_training {sum(inside) / len(inside):6.2f} s (mean)")
    print(f"tuning overhead     {mean_over:6.3f} s per trial = {ratio:.1%} of a trial (target < {TARGET:.0%})")
    print(f"study wall time     {wall:6.1f} s ({60 * len(trial_s) / wall:.1f} trials per minute, one worker, "
          "including study set-up and the summary)")
    return 0 if ratio < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
