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

Families and protocols (issue 26): ``--model NAME[:JSON]`` (repeatable) trains each backbone on every task, e.g.
``--model xresnet1d50_small --model s4d_small``; with two or more, an ensemble of the families (the mean of
their probabilities) gets a row of its own. ``--minutes M`` gives every model the same CPU minutes per task:
its epochs are chosen from a throughput probe of a few training steps (printed, and in the reproduce command).
The probe sees the machine as it is when it runs: for runs that will go side by side with others, or start
while another is building its cache, give the epochs measured under those conditions (``--epochs-for
'xresnet1d50 width=0.5=60'``). A run under ``--minutes`` is keyed by its minutes, so a rerun reuses it.
``--windows max-half,mean-disjoint`` scores each protocol (max over half-overlapping windows, or the 2025
benchmark's mean over non-overlapping ones); each is its own run, because the best epoch is selected under
it. When the ``all`` task runs, its model is also scored on the statement families (diagnostic, form, rhythm)
beside the models trained for them, in a second table labelled so. ``--fraction`` trains on a label-stratified
part of folds 1-8 (smoke runs only: figures from it are not the benchmark's).

The published column is the xresnet1d101 test-fold (fold 10) macro AUC of Strodthoff et al. 2020, Table 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.data.windows import DEFAULT_WINDOW_PROTOCOL, WINDOW_PROTOCOLS
from ecgml.defaults import BENCHMARK_EXPERIMENT

#: xresnet1d101 macro AUC on the PTB-XL test fold (Strodthoff et al. 2020, IEEE JBHI, Table 2).
PUBLISHED = {"all": 0.925, "diagnostic": 0.937, "subdiagnostic": 0.929, "superdiagnostic": 0.928,
             "form": 0.896, "rhythm": 0.957}
TASKS = tuple(PUBLISHED)
CROP_S = 2.5
EXPERIMENT = BENCHMARK_EXPERIMENT
BENCHMARK_TAG = "ecgml.benchmark"
KEY_TAG = "ecgml.benchmark.key"


ModelSpec = tuple[str, dict[str, Any]]


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
    windows: str = DEFAULT_WINDOW_PROTOCOL
    spec: ModelSpec | None = None
    #: Fold-9 record ids, classes, labels and probabilities (ensembles and statement families are built on them).
    val: tuple[tuple[str, ...], tuple[str, ...], np.ndarray, np.ndarray] | None = field(default=None, repr=False,
                                                                                      compare=False)


def has_fold(root: Path, fold: int) -> bool:
    """Whether any record of ``fold`` is on disk (the metadata lists all ten folds either way)."""
    table = pd.read_csv(root / "ptbxl_database.csv", usecols=["strat_fold", "filename_lr"])
    for name in table.loc[table["strat_fold"] == fold, "filename_lr"].head(50):
        if (root / f"{name}.hea").exists():
            return True
    return False


def backbone_for(args: argparse.Namespace, task: str, model: ModelSpec | None = None) -> ModelSpec:
    """The backbone and constructor arguments of ``task``: ``model`` when given (``--model``), else
    ``--task-backbone`` where given, else ``--backbone``."""
    if model is not None:
        return model
    return args.task_backbones.get(task, (args.backbone, json.loads(args.backbone_kwargs)))


def windows_settings(name: str) -> tuple[str, float | None]:
    """``(aggregate, eval_stride_s)`` of a protocol at the benchmark's 2.5 s crop (None: the default stride)."""
    aggregate, fraction = WINDOW_PROTOCOLS[name]
    return aggregate, None if name == DEFAULT_WINDOW_PROTOCOL else CROP_S * fraction


def epochs_for(args: argparse.Namespace, model: ModelSpec | None, task: str) -> int:
    """``--epochs``, or under ``--minutes`` the epochs this model fits in them (``args.model_epochs``)."""
    if args.minutes is None:
        return args.epochs
    return args.model_epochs[model_label(*backbone_for(args, task, model))]


def model_label(name: str, kwargs: dict[str, Any]) -> str:
    return name + "".join(f" {k}={v}" for k, v in sorted(kwargs.items()))


def make_config(args: argparse.Namespace, task: str, seed: int, splits: str, model: ModelSpec | None = None,
                windows: str | None = None) -> Any:
    from ecgml.config import DataConfig, PrepareConfig
    from ecgml.train.loop import OptimConfig
    from ecgml.train.pipeline import ModelConfig, TrainConfig

    backbone, kwargs = backbone_for(args, task, model)
    aggregate, stride_s = windows_settings(windows) if windows else (args.aggregate, None)
    data = PrepareConfig(DataConfig(source="ptbxl", root=args.root, fs=100, task=task, splits=splits),
                         cache_dir=args.cache_dir, workers=args.cache_workers)
    return TrainConfig(
        kind="pretrain", data=data, model=ModelConfig(backbone, kwargs),
        optim=OptimConfig(epochs=epochs_for(args, model, task), batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, patience=args.patience, aggregate=aggregate),  # type: ignore[arg-type]
        crop_s=CROP_S, eval_stride_s=stride_s, fraction=args.fraction, seed=seed, device=args.device,
        experiment=EXPERIMENT, run_name=f"benchmark {task} {model_label(backbone, kwargs)} s={seed} 100Hz",
        runs_dir=args.runs_dir,
    )


def benchmark_key(args: argparse.Namespace, task: str, seed: int, splits: str, model: ModelSpec | None = None,
                  windows: str | None = None) -> str:
    """What makes two benchmark runs the same: the benchmark's own settings, not the engine's config digest
    (which grows with every new engine option, and would make finished tasks retrain after an upgrade).
    Settings at their old values leave the key as it was (``max-half`` windows, all of folds 1-8)."""
    backbone, kwargs = backbone_for(args, task, model)
    aggregate, stride_s = windows_settings(windows) if windows else (args.aggregate, None)
    doc = {"task": task, "seed": seed, "splits": splits, "backbone": backbone, "backbone_kwargs": kwargs,
           "epochs": epochs_for(args, model, task),
           "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
           "patience": args.patience, "aggregate": aggregate, "fs": 100, "crop_s": CROP_S}
    if stride_s is not None:
        doc["eval_stride_s"] = stride_s
    if args.minutes is not None:
        # A run under --minutes is defined by its budget: the probe's epoch count varies with the machine's
        # load, and a rerun that probes one epoch more or less must reuse the finished run, not train it again.
        doc["minutes"] = args.minutes
        del doc["epochs"]
    if args.fraction != 1:
        doc["fraction"] = args.fraction
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
    _, _, labels, probs = aligned(frames)
    return labels, probs


def aligned(frames: list[pd.DataFrame]) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray, np.ndarray]:
    """Record ids, classes, true labels and the mean probability over runs, aligned by record."""
    first = frames[0].set_index("record_id")
    classes = [c[len("true_"):] for c in first.columns if c.startswith("true_")]
    probs = []
    for frame in frames:
        frame = frame.set_index("record_id").loc[first.index]
        probs.append(frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64))
    return (tuple(map(str, first.index)), tuple(classes), first[[f"true_{c}" for c in classes]].to_numpy(dtype=bool),
            np.mean(probs, axis=0))


def run_task(args: argparse.Namespace, task: str, splits: str, with_test: bool, model: ModelSpec | None = None,
             windows: str | None = None) -> TaskResult:
    import mlflow

    from ecgml.evaluate.auc import bootstrap_auc, macro_auc
    from ecgml.train.runner import run_training

    run_ids, minutes, epochs, reused = [], 0.0, [], True
    spec = backbone_for(args, task, model)
    for seed in args.seeds:
        key = benchmark_key(args, task, seed, splits, model, windows)
        run = finished_run(key)
        if run is None:
            reused = False
            print(f"[{task} seed {seed}] training {model_label(*spec)} for up to {epochs_for(args, model, task)} "
                  f"epochs, {windows or args.aggregate} windows", flush=True)
            run_training(make_config(args, task, seed, splits, model, windows), progress=sys.stderr.isatty(),
                         extra_tags={BENCHMARK_TAG: "real_ptbxl", "ecgml.benchmark.task": task, KEY_TAG: key})
            run = finished_run(key)
            if run is None:
                raise RuntimeError(f"the {task} run of seed {seed} did not finish")
        run_ids.append(run.info.run_id)
        minutes += (run.info.end_time - run.info.start_time) / 60_000
        best = int(run.data.tags.get("ecgml.best_epoch", "-1")) + 1
        ran = len(mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "val_macro_auc"))
        epochs.append(f"{best}/{ran}")
    val = aligned([predictions(r, "val") for r in run_ids])
    y_val, p_val = val[2], val[3]
    interval = bootstrap_auc(y_val, p_val, n_rounds=args.bootstrap, seed=0)
    test_auc = None
    if with_test:
        y_test, p_test = labels_and_probs([predictions(r, "test") for r in run_ids])
        test_auc = macro_auc(y_test, p_test)
    label = model_label(*spec) + (f" x{len(args.seeds)} seeds" if len(args.seeds) > 1 else "")
    return TaskResult(task, label, tuple(run_ids), ", ".join(epochs), minutes, macro_auc(y_val, p_val),
                      interval["low"], interval["high"], test_auc, reused, windows or legacy_windows(args), spec, val)


def legacy_windows(args: argparse.Namespace) -> str:
    """The table's name of ``--aggregate`` over the default half-overlapping windows."""
    return DEFAULT_WINDOW_PROTOCOL if args.aggregate == "max" else f"{args.aggregate}-half"


def ensemble(args: argparse.Namespace, members: list[TaskResult], with_test: bool) -> TaskResult:
    """The mean probability of several families' runs of one task and protocol (records aligned by id)."""
    from ecgml.evaluate.auc import bootstrap_auc, macro_auc

    run_ids = tuple(r for m in members for r in m.run_ids)
    val = aligned([predictions(r, "val") for r in run_ids])
    interval = bootstrap_auc(val[2], val[3], n_rounds=args.bootstrap, seed=0)
    test_auc = None
    if with_test:
        test_auc = macro_auc(*labels_and_probs([predictions(r, "test") for r in run_ids]))
    first = members[0]
    return TaskResult(first.task, "ensemble: " + " + ".join(m.model for m in members), run_ids,
                      "; ".join(m.epochs for m in members), sum(m.minutes for m in members), macro_auc(val[2], val[3]),
                      interval["low"], interval["high"], test_auc, all(m.reused for m in members), first.windows,
                      None, val)


def throughput_epochs(args: argparse.Namespace, spec: ModelSpec, n_train: int, n_val_windows: int) -> int:
    """Epochs of ``spec`` that fit ``--minutes``: a probe of a few training steps and one evaluation batch
    (one thread, as the runs), scaled to an epoch of ``n_train`` crops and ``n_val_windows`` windows."""
    import torch

    from ecgml.models import create_backbone

    torch.manual_seed(0)
    model = create_backbone(spec[0], **{"num_classes": 71, **spec[1]}).train()
    x = torch.randn(args.batch_size, 12, round(CROP_S * 100))
    y = (torch.rand(args.batch_size, 71) < 0.1).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    timings = []
    for _ in range(4):
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
        timings.append(time.perf_counter() - start)
    step_s = float(np.median(timings[1:]))
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        model(torch.randn(256, 12, round(CROP_S * 100)))
        eval_s = (time.perf_counter() - start) / 256
    epoch_s = n_train / args.batch_size * step_s + n_val_windows * eval_s
    return max(1, int(args.minutes * 60 // epoch_s))


def reproduce_command(args: argparse.Namespace, task: str, result: TaskResult | None = None) -> str:
    """The benchmark command that trains this task's runs again (same settings, so the same benchmark key)."""
    spec = result.spec if result is not None and result.spec is not None else None
    backbone, kwargs = backbone_for(args, task, spec)
    words = ["python", "benchmarks/real_ptbxl.py", "--root", "PTBXL_ROOT", "--tasks", task,
             "--backbone", backbone, "--backbone-kwargs", json.dumps(kwargs), "--epochs", str(epochs_for(args, spec,
                                                                                                           task)),
             "--batch-size", str(args.batch_size), "--lr", f"{args.lr:g}", "--weight-decay", f"{args.weight_decay:g}",
             "--patience", str(args.patience), "--seeds", ",".join(map(str, args.seeds))]
    windows = result.windows if result is not None else legacy_windows(args)
    words += ["--windows", windows] if windows in WINDOW_PROTOCOLS else ["--aggregate", args.aggregate]
    if args.fraction != 1:
        words += ["--fraction", f"{args.fraction:g}"]
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
    if result.task == "all":  # the card (and `ecgml pretrained list`) carries its statement families too
        from ecgml.data.labels import ScpStatements
        from ecgml.evaluate.families import family_metric, family_scores

        _, classes, y, p = aligned([predictions(run_id, "val")])
        for family, score in family_scores(y, p, classes, ScpStatements.read(args.root / "scp_statements.csv")).items():
            metrics[family_metric(family)] = score.macro_auc
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
    return export_pretrained(run_id, name, metrics=metrics, command=reproduce_command(args, result.task, result),
                             commit=commit, out_dir=args.export_dir, training=training, overwrite=True,
                             description=f"{result.model} trained on real PTB-XL "
                                         f"100 Hz records, task {result.task!r}, with benchmarks/real_ptbxl.py")


def table(results: list[TaskResult], with_test: bool) -> str:
    lines = ["| task | model | windows | best/ran epochs | minutes | fold 9 macro AUC [95% CI] | fold 10 macro AUC | "
             "published (xresnet1d101, fold 10) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        test = f"{r.test_auc:.3f}" if r.test_auc is not None else ("n/a" if with_test else "fold 10 not on disk")
        lines.append(f"| {r.task} | {r.model} | {r.windows} | {r.epochs} | {r.minutes:.1f} | {r.val_auc:.3f} "
                     f"[{r.val_low:.3f}, {r.val_high:.3f}] | {test} | {PUBLISHED[r.task]:.3f} |")
    return "\n".join(lines)


def family_table(args: argparse.Namespace, results: list[TaskResult]) -> str:
    """Fold-9 macro AUC of each statement family, from the `all` model and from the model trained for it."""
    from ecgml.data.labels import ScpStatements
    from ecgml.evaluate.families import STATEMENT_FAMILIES, family_scores

    statements = ScpStatements.read(args.root / "scp_statements.csv")
    lines = ["| family | windows | scored from | model | fold 9 macro AUC | records | classes | "
             "published (xresnet1d101 trained for it, fold 10) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.task != "all" or r.val is None:
            continue
        for family, score in family_scores(r.val[2], r.val[3], r.val[1], statements).items():
            lines.append(f"| {family} | {r.windows} | the `all` model | {r.model} | {score.macro_auc:.3f} | "
                         f"{score.records} | {score.classes} | {PUBLISHED[family]:.3f} |")
    for r in results:
        if r.task in STATEMENT_FAMILIES and r.val is not None:
            lines.append(f"| {r.task} | {r.windows} | a model trained for it | {r.model} | {r.val_auc:.3f} | "
                         f"{len(r.val[0])} | {len(r.val[1])} | {PUBLISHED[r.task]:.3f} |")
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
    parser.add_argument("--windows", default=None, metavar="PROTOCOL[,PROTOCOL]",
                        help=f"Test-time protocols to score ({', '.join(WINDOW_PROTOCOLS)}), each its own run; "
                             "instead of --aggregate.")
    parser.add_argument("--model", action="append", default=[], metavar="NAME[:JSON]",
                        help='A backbone to train on every task, e.g. s4d_small or xresnet1d50:{"width": 0.5} '
                             "(repeatable; two or more also give their ensemble). Instead of --backbone.")
    parser.add_argument("--minutes", type=float, default=None,
                        help="Equal CPU minutes: each model's epochs chosen to fit this many minutes per task.")
    parser.add_argument("--epochs-for", action="append", default=[], metavar="MODEL=N",
                        help="Under --minutes: N epochs for this model (its label as printed, e.g. 's4d_small' or "
                             "'xresnet1d50 width=0.5') instead of the probe's count, when the probe ran on a machine "
                             "busier or quieter than the runs will.")
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="Train on this label-stratified fraction of folds 1-8 (smoke runs).")
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
    args.windows = [w.strip() for w in args.windows.split(",") if w.strip()] if args.windows else []
    bad_windows = sorted(set(args.windows) - set(WINDOW_PROTOCOLS))
    if bad_windows:
        parser.error(f"--windows: unknown protocol(s) {', '.join(bad_windows)}; choose from "
                     f"{', '.join(WINDOW_PROTOCOLS)}")
    args.models = []
    for text in args.model:
        name, _, kwargs = text.partition(":")
        try:
            args.models.append((name, json.loads(kwargs) if kwargs else {}))
        except ValueError:
            parser.error(f"--model {text!r}: {kwargs!r} is not JSON")
    if args.minutes is not None and args.minutes <= 0:
        parser.error("--minutes must be positive")
    args.fixed_epochs = {}
    for text in args.epochs_for:
        label, sep, count = text.rpartition("=")
        if not sep or not label or not count.isdigit() or int(count) < 1:
            parser.error(f"--epochs-for {text!r}: expected MODEL=N with N a positive whole number")
        args.fixed_epochs[label.strip()] = int(count)
    if args.fixed_epochs and args.minutes is None:
        parser.error("--epochs-for goes with --minutes (without it, --epochs sets every model's epochs)")
    if not 0 < args.fraction <= 1:
        parser.error("--fraction must be in (0, 1]")
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


def probe_sizes(args: argparse.Namespace, splits: str) -> tuple[int, int]:
    """Training crops per epoch and validation windows, from the metadata (for ``--minutes``)."""
    from ecgml.data.records import SplitSpec

    spec = SplitSpec.parse(splits)
    table_ = pd.read_csv(args.root / "ptbxl_database.csv", usecols=["strat_fold"])
    n_train = int(table_["strat_fold"].isin(spec.folds("train")).sum() * args.fraction)
    n_val = int(table_["strat_fold"].isin(spec.folds("val")).sum())
    _, stride_s = windows_settings(args.windows[0]) if args.windows else (args.aggregate, None)
    per_record = 4 if stride_s == CROP_S else 7  # 10 s records: 4 disjoint or 7 half-overlapping 2.5 s windows
    return n_train, n_val * per_record


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
    models: list[ModelSpec | None] = list(args.models) or [None]
    protocols: list[str | None] = list(args.windows) or [None]
    args.model_epochs = dict(args.fixed_epochs)
    if args.minutes is not None:
        n_train, n_val_windows = probe_sizes(args, splits)
        for task in args.tasks:
            for model in models:
                spec = backbone_for(args, task, model)
                if model_label(*spec) not in args.model_epochs:
                    args.model_epochs[model_label(*spec)] = throughput_epochs(args, spec, n_train, n_val_windows)
        print("epochs for " + f"{args.minutes:g} CPU minutes per task: " +
              ", ".join(f"{k} {v}" for k, v in args.model_epochs.items()), flush=True)
    for task in args.tasks:
        for windows in protocols:
            members = []
            for model in models:
                result = run_task(args, task, splits, with_test, model, windows)
                members.append(result)
                print(f"{task} {result.model} ({result.windows}): fold 9 macro AUC {result.val_auc:.3f} "
                      f"[{result.val_low:.3f}, {result.val_high:.3f}]{' (reused)' if result.reused else ''}; "
                      f"runs {', '.join(result.run_ids)}", flush=True)
            results += members
            if len(members) > 1:
                results.append(ensemble(args, members, with_test))
    for result in results:
        if result.task in args.exports and not result.model.startswith("ensemble"):
            print(f"shipped {result.task} as {export(args, result, args.exports[result.task], with_test)}")
    text = table(results, with_test)
    if "all" in args.tasks:
        text += "\n\nStatement families on fold 9, scored from the `all` model and by the models trained for them:\n\n"
        text += family_table(args, results)
    print(text)
    args.out.write_text(text + "\n")
    print(f"table written to {args.out} ({(time.monotonic() - started) / 60:.1f} min this sitting)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
