"""The PTB-XL benchmark of Strodthoff et al. (2020) on the real 100 Hz records, each task a tracked MLflow run.

    python benchmarks/real_ptbxl.py --root ~/.cache/ecgml/real-ptbxl              # all six tasks
    python benchmarks/real_ptbxl.py --root DIR --tasks superdiagnostic,all --epochs 30

Protocol: train on folds 1-8, select the epoch on fold 9 (validation), report fold 9 macro AUC with a
1,000-round bootstrap interval. When the root holds fold 10 (a full PTB-XL download does; the copy this
project was developed on withholds it on purpose), fold 10 is the test fold and its macro AUC is reported
too: that is the figure comparable with the published one. Without fold 10, validation and test are both
fold 9 (``--splits 1-8/9/9``) and the test column says so.

Every task is one ``ecgml pretrain`` run (the same library call) in the experiment ``ecgml-benchmark-ptbxl``.
A task whose run already finished with the same configuration digest is reused, not trained again, so the
table can be built over several sittings. ``--seeds 0,1`` trains one run per seed and reports the mean
of their probabilities (a seed ensemble, said in the table's model column).

The published column is the xresnet1d101 test-fold (fold 10) macro AUC of Strodthoff et al. 2020, Table 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.defaults import BENCHMARK_EXPERIMENT

#: xresnet1d101 macro AUC on the PTB-XL test fold (Strodthoff et al. 2020, IEEE JBHI, Table 2).
PUBLISHED = {"all": 0.925, "diagnostic": 0.937, "subdiagnostic": 0.929, "superdiagnostic": 0.928,
             "form": 0.896, "rhythm": 0.957}
TASKS = tuple(PUBLISHED)
EXPERIMENT = BENCHMARK_EXPERIMENT
BENCHMARK_TAG = "ecgml.benchmark"
KEY_TAG = "ecgml.benchmark.key"


@dataclass(frozen=True)
class TaskResult:
    task: str
    model: str
    run_ids: tuple[str, ...]
    epochs: str
    minutes: float
    val_auc: float
    val_low: float
    val_high: float
    test_auc: float | None
    reused: bool


def has_fold(root: Path, fold: int) -> bool:
    """Whether any record of ``fold`` is on disk (the metadata lists all ten folds either way)."""
    table = pd.read_csv(root / "ptbxl_database.csv", usecols=["strat_fold", "filename_lr"])
    for name in table.loc[table["strat_fold"] == fold, "filename_lr"].head(50):
        if (root / f"{name}.hea").exists():
            return True
    return False


def backbone_for(args: argparse.Namespace, task: str) -> tuple[str, dict[str, Any]]:
    """The backbone and constructor arguments of ``task``: ``--task-backbone`` where given, else ``--backbone``."""
    return args.task_backbones.get(task, (args.backbone, json.loads(args.backbone_kwargs)))


def model_label(name: str, kwargs: dict[str, Any]) -> str:
    return name + "".join(f" {k}={v}" for k, v in sorted(kwargs.items()))


def make_config(args: argparse.Namespace, task: str, seed: int, splits: str) -> Any:
    from ecgml.config import DataConfig, PrepareConfig
    from ecgml.train.loop import OptimConfig
    from ecgml.train.pipeline import ModelConfig, TrainConfig

    backbone, kwargs = backbone_for(args, task)
    data = PrepareConfig(DataConfig(source="ptbxl", root=args.root, fs=100, task=task, splits=splits),
                         cache_dir=args.cache_dir, workers=args.cache_workers)
    return TrainConfig(
        kind="pretrain", data=data, model=ModelConfig(backbone, kwargs),
        optim=OptimConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, patience=args.patience, aggregate=args.aggregate),
        crop_s=2.5, seed=seed, device=args.device, experiment=EXPERIMENT,
        run_name=f"benchmark {task} {model_label(backbone, kwargs)} s={seed} 100Hz", runs_dir=args.runs_dir,
    )


def benchmark_key(args: argparse.Namespace, task: str, seed: int, splits: str) -> str:
    """What makes two benchmark runs the same: the benchmark's own settings, not the engine's config digest
    (which grows with every new engine option, and would make finished tasks retrain after an upgrade)."""
    backbone, kwargs = backbone_for(args, task)
    doc = {"task": task, "seed": seed, "splits": splits, "backbone": backbone, "backbone_kwargs": kwargs,
           "epochs": args.epochs,
           "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
           "patience": args.patience, "aggregate": args.aggregate, "fs": 100, "crop_s": 2.5}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def finished_run(key: str) -> Any | None:
    """The newest FINISHED benchmark run with this key, if any (what makes a rerun cheap)."""
    import mlflow

    found = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list", max_results=1,
                               filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
                               order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def predictions(run_id: str, split: str) -> pd.DataFrame:
    """The run's per-record predictions of one split, as logged (``eval/predictions_<split>.csv``)."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"eval/predictions_{split}.csv")
    return pd.read_csv(path)


def labels_and_probs(frames: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """True labels and the mean probability over runs (a seed ensemble when several), aligned by record."""
    first = frames[0].set_index("record_id")
    classes = [c[len("true_"):] for c in first.columns if c.startswith("true_")]
    probs = []
    for frame in frames:
        frame = frame.set_index("record_id").loc[first.index]
        probs.append(frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64))
    return first[[f"true_{c}" for c in classes]].to_numpy(dtype=bool), np.mean(probs, axis=0)


def run_task(args: argparse.Namespace, task: str, splits: str, with_test: bool) -> TaskResult:
    import mlflow

    from ecgml.evaluate.auc import bootstrap_auc, macro_auc
    from ecgml.train.runner import run_training

    run_ids, minutes, epochs, reused = [], 0.0, [], True
    for seed in args.seeds:
        key = benchmark_key(args, task, seed, splits)
        run = finished_run(key)
        if run is None:
            reused = False
            print(f"[{task} seed {seed}] training {model_label(*backbone_for(args, task))} for up to {args.epochs} "
                  "epochs", flush=True)
            run_training(make_config(args, task, seed, splits), progress=sys.stderr.isatty(),
                         extra_tags={BENCHMARK_TAG: "real_ptbxl", "ecgml.benchmark.task": task, KEY_TAG: key})
            run = finished_run(key)
            if run is None:
                raise RuntimeError(f"the {task} run of seed {seed} did not finish")
        run_ids.append(run.info.run_id)
        minutes += (run.info.end_time - run.info.start_time) / 60_000
        best = int(run.data.tags.get("ecgml.best_epoch", "-1")) + 1
        ran = len(mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "val_macro_auc"))
        epochs.append(f"{best}/{ran}")
    y_val, p_val = labels_and_probs([predictions(r, "val") for r in run_ids])
    interval = bootstrap_auc(y_val, p_val, n_rounds=args.bootstrap, seed=0)
    test_auc = None
    if with_test:
        y_test, p_test = labels_and_probs([predictions(r, "test") for r in run_ids])
        test_auc = macro_auc(y_test, p_test)
    model = model_label(*backbone_for(args, task)) + (f" x{len(args.seeds)} seeds" if len(args.seeds) > 1 else "")
    return TaskResult(task, model, tuple(run_ids), ", ".join(epochs), minutes, macro_auc(y_val, p_val),
                      interval["low"], interval["high"], test_auc, reused)


def reproduce_command(args: argparse.Namespace, task: str) -> str:
    """The benchmark command that trains this task's runs again (same settings, so the same benchmark key)."""
    backbone, kwargs = backbone_for(args, task)
    words = ["python", "benchmarks/real_ptbxl.py", "--root", "PTBXL_ROOT", "--tasks", task,
             "--backbone", backbone, "--backbone-kwargs", json.dumps(kwargs), "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--lr", f"{args.lr:g}", "--weight-decay", f"{args.weight_decay:g}",
             "--patience", str(args.patience), "--aggregate", args.aggregate,
             "--seeds", ",".join(map(str, args.seeds))]
    return shlex.join(words)


def export(args: argparse.Namespace, result: TaskResult, name: str, with_test: bool) -> Path:
    """Write the task's model as a shipped backbone (``ecgml/pretrained/models/<name>``) with its model card.

    A seed ensemble ships its first seed's weights; the card then says so and gives that run's own figures.
    """
    import mlflow

    from ecgml.evaluate.auc import bootstrap_auc, macro_auc
    from ecgml.pretrained.export import export_pretrained

    run_id = result.run_ids[0]
    run = mlflow.get_run(run_id)
    y, p = labels_and_probs([predictions(run_id, "val")])
    interval = bootstrap_auc(y, p, n_rounds=args.bootstrap, seed=0)
    metrics = {"val_macro_auc": macro_auc(y, p), "val_macro_auc_low": interval["low"],
               "val_macro_auc_high": interval["high"]}
    if with_test:
        y_test, p_test = labels_and_probs([predictions(run_id, "test")])
        metrics["test_macro_auc"] = macro_auc(y_test, p_test)
    # ecgml's own tag is the commit of the engine that trained (the benchmark script may be newer).
    commit = args.commit or run.data.tags.get("git_commit") or run.data.tags.get("mlflow.source.git.commit")
    if not commit or commit == "unknown":
        raise SystemExit(f"run {run_id} does not record its commit; pass --commit")
    best, ran = result.epochs.split(", ")[0].split("/")
    training = {"epochs_run": int(ran), "best_epoch": int(best), "minutes_on_2_cpu_cores": round(result.minutes, 1),
                "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
                "schedule": "AdamW, one-cycle", "crop_s": 2.5, "mlflow_run_id": run_id,
                "published_xresnet1d101_test_macro_auc": PUBLISHED[result.task],
                "benchmark_script_commit": run.data.tags.get("mlflow.source.git.commit", "unknown")}
    return export_pretrained(run_id, name, metrics=metrics, command=reproduce_command(args, result.task),
                             commit=commit, out_dir=args.export_dir, training=training, overwrite=True,
                             description=f"{model_label(*backbone_for(args, result.task))} trained on real PTB-XL "
                                         f"100 Hz records, task {result.task!r}, with benchmarks/real_ptbxl.py")


def table(results: list[TaskResult], with_test: bool) -> str:
    lines = ["| task | model | best/ran epochs | minutes | fold 9 macro AUC [95% CI] | fold 10 macro AUC | "
             "published (xresnet1d101, fold 10) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        test = f"{r.test_auc:.3f}" if r.test_auc is not None else ("n/a" if with_test else "fold 10 not on disk")
        lines.append(f"| {r.task} | {r.model} | {r.epochs} | {r.minutes:.1f} | {r.val_auc:.3f} "
                     f"[{r.val_low:.3f}, {r.val_high:.3f}] | {test} | {PUBLISHED[r.task]:.3f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="A PTB-XL root (ptbxl_database.csv, records100/).")
    parser.add_argument("--tasks", default=",".join(TASKS), help="Comma list of tasks [all six].")
    parser.add_argument("--backbone", default="xresnet1d50_small")
    parser.add_argument("--backbone-kwargs", default="{}")
    parser.add_argument("--task-backbone", action="append", default=[], metavar="TASK=NAME[:JSON]",
                        help='Another backbone for one task, e.g. all=xresnet1d50:{"width": 0.5} (repeatable).')
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--patience", type=int, default=0, help="0: run every epoch (one-cycle schedule).")
    parser.add_argument("--aggregate", choices=("max", "mean"), default="max")
    parser.add_argument("--seeds", default="0", help="Comma list; several seeds are ensembled.")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    parser.add_argument("--cache-workers", type=int, default=2)
    parser.add_argument("--runs-dir", type=Path, default=Path("data/runs"))
    parser.add_argument("--tracking-uri", default=None, help="[default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db]")
    parser.add_argument("--export", action="append", default=[], metavar="TASK=NAME",
                        help="Ship the task's model as ecgml/pretrained/models/NAME with a model card (repeatable).")
    parser.add_argument("--export-dir", type=Path, default=Path(__file__).resolve().parents[1] / "ecgml" /
                        "pretrained" / "models")
    parser.add_argument("--commit", default=None, help="The commit that trained the runs [the runs' own tag].")
    parser.add_argument("--out", type=Path, default=Path("benchmark-ptbxl.md"), help="Where the table is written.")
    args = parser.parse_args(argv)
    args.root = args.root.expanduser()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    args.exports = dict(text.partition("=")[::2] for text in args.export)
    bad = [t for t, n in args.exports.items() if t not in TASKS or not n]
    if bad:
        parser.error(f"--export expects TASK=NAME with a task of {', '.join(TASKS)}")
    args.task_backbones = {}
    for text in args.task_backbone:
        task, sep, spec = text.partition("=")
        name, _, kwargs = spec.partition(":")
        if not sep or task not in TASKS or not name:
            parser.error(f"--task-backbone {text!r}: expected TASK=NAME[:JSON] with a task of {', '.join(TASKS)}")
        try:
            args.task_backbones[task] = (name, json.loads(kwargs) if kwargs else {})
        except ValueError:
            parser.error(f"--task-backbone {text!r}: {kwargs!r} is not JSON")
    if not (args.root / "ptbxl_database.csv").is_file():
        parser.error(f"{args.root} is not a PTB-XL root: ptbxl_database.csv is missing")
    return args


def main(argv: list[str] | None = None) -> int:
    import os

    import mlflow

    args = parse_args(argv)
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    elif not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri("sqlite:///mlflow.db")
    if not has_fold(args.root, 9):
        raise SystemExit(f"{args.root}: no record of fold 9 on disk; the benchmark selects on fold 9")
    with_test = has_fold(args.root, 10)
    splits = "1-8/9/10" if with_test else "1-8/9/9"
    print(f"PTB-XL at {args.root}: fold 10 {'present: test on fold 10' if with_test else 'absent: fold 9 only'}",
          flush=True)
    results = []
    started = time.monotonic()
    for task in args.tasks:
        result = run_task(args, task, splits, with_test)
        results.append(result)
        print(f"{task}: fold 9 macro AUC {result.val_auc:.3f} [{result.val_low:.3f}, {result.val_high:.3f}]"
              f"{' (reused)' if result.reused else ''}; runs {', '.join(result.run_ids)}", flush=True)
    for result in results:
        if result.task in args.exports:
            print(f"shipped {result.task} as {export(args, result, args.exports[result.task], with_test)}")
    text = table(results, with_test)
    print(text)
    args.out.write_text(text + "\n")
    print(f"table written to {args.out} ({(time.monotonic() - started) / 60:.1f} min this sitting)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
