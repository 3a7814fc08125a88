"""Run one tracked training job (pretrain on PTB-XL, standalone on G12EC) end to end.

Resumption: a killed run (even ``kill -9``) leaves its MLflow run RUNNING and a checkpoint under
``<runs_dir>/<run_id>/``. ``resume=True`` finds the newest unfinished run of the same config digest (or
takes ``resume_run_id``), continues it from the checkpoint in the same MLflow run, and re-logs any epoch
the checkpoint holds that MLflow had not received, so no epoch is lost or logged twice.

Tracking outages: per-epoch metrics go through :class:`~ecgml.tracking.runs.MetricLog`, so a stopped
tracking server does not stop the training (the epochs are queued, and every epoch is in the checkpoint).
At the end the run waits ``$ECGML_TRACKING_WAIT_S`` for the server, then fails with
:class:`~ecgml.tracking.runs.TrackingUnavailable`: the message names the server, what was not logged,
where the checkpoint is, and the exact command that finishes the same run once the server is back.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ecgml.data.prepare import prepare
from ecgml.tracking.runs import (
    MetricLog,
    TrackingError,
    TrackingUnavailable,
    apply_http_defaults,
    epochs_text,
    log_json,
    tracking_unreachable,
    tracking_uri,
    tracking_wait_s,
)
from ecgml.train.data import SlidingWindowDataset
from ecgml.train.device import configure_speedups, resolve_device, seed_everything
from ecgml.train.distributed import DistContext, barrier, broadcast_object, init_distributed, shutdown_distributed
from ecgml.train.loop import EpochRecord, Trainer
from ecgml.train.pipeline import (
    Splits,
    TrainConfig,
    build_splits,
    cache_workers,
    epoch_metrics,
    label_map_document,
    make_datasets,
    predictions_frame,
)


@dataclass(frozen=True)
class _Hooks:
    parent_run_id: str | None
    extra_tags: dict[str, str]
    on_epoch: Callable[[EpochRecord], None] | None


@dataclass
class RunOutcome:
    run_id: str | None
    best_epoch: int
    val_macro_auc: float
    test_macro_auc: float
    weights_dir: Path | None
    metrics: dict[str, Any]


def _find_resumable(experiment: str, digest: str) -> str | None:
    import mlflow

    found = mlflow.search_runs(experiment_names=[experiment], output_format="list", max_results=1,
                               filter_string=f"tags.`ecgml.config_digest` = '{digest}' and "
                                             "attributes.status != 'FINISHED'",
                               order_by=["attributes.start_time DESC"])
    return found[0].info.run_id if found else None


#: The ``ecgml`` command that runs each kind of training (what a resume message tells the user to type).
COMMANDS: dict[str, str] = {"pretrain": "pretrain", "standalone": "train-standalone", "finetune": "finetune"}


def resume_command(kind: str, run_id: str, argv: Sequence[str] | None = None) -> str:
    """The command that finishes run ``run_id``: this process's own ``ecgml`` command line with
    ``--resume-run-id`` in place of any resume option, or a template when it was not started that way."""
    argv = list(sys.argv if argv is None else argv)
    command = COMMANDS.get(kind, kind)
    if len(argv) < 2 or argv[1] != command:
        return f"ecgml {command} <the same options as before> --resume-run-id {run_id}"
    rest: list[str] = []
    skip = False
    for arg in argv[2:]:
        if skip:
            skip = False
        elif arg == "--resume-run-id":
            skip = True
        elif arg != "--resume" and not arg.startswith("--resume-run-id="):
            rest.append(arg)
    return shlex.join(["ecgml", command, *rest, "--resume-run-id", run_id])


def outage_message(*, uri: str, reason: str | None, run_id: str, experiment: str, checkpoint: Path,
                   last_epoch: int | None, unlogged_steps: Sequence[int], final_phase_started: bool,
                   command: str, waited_s: float | None = None) -> str:
    """What a user needs after a tracking outage: which server, what is missing, that the training is
    safe (and where), and the one command that finishes the same run."""
    waited = f" after waiting {waited_s:g} s" if waited_s is not None else ""
    missing = []
    if unlogged_steps:
        missing.append(f"the metrics of {epochs_text(unlogged_steps)}")
    missing.append("the evaluation (best-epoch validation and test metrics, predictions, plots), the weights "
                   "and the model" + (" (part of them may have arrived before the server stopped)"
                                      if final_phase_started else ""))
    saved = (f"the checkpoint of epoch {last_epoch + 1} is kept at {checkpoint}" if last_epoch is not None
             else f"the checkpoint is kept at {checkpoint}")
    return (f"tracking server {uri} is unreachable ({reason or 'it stopped answering'}){waited}.\n"
            f"Not logged to run {run_id} (experiment {experiment!r}): {'; '.join(missing)}. "
            "What the server already holds is kept.\n"
            f"The training is not lost: {saved}.\n"
            "When the server answers again, finish the same run (nothing is retrained or logged twice) with:\n"
            f"  {command}")


def run_training(config: TrainConfig, *, resume: bool = False, resume_run_id: str | None = None,
                 progress: bool = True, parent_run_id: str | None = None, extra_tags: dict[str, str] | None = None,
                 on_epoch: Callable[[EpochRecord], None] | None = None) -> RunOutcome:
    """Validate, prepare, train (or resume), evaluate and log one run; returns its outcome.

    ``parent_run_id`` makes the run a child of that run (a study, a sweep, the main job) instead of
    adopting the run ``mlflow run`` started; ``extra_tags`` are added to its tags; ``on_epoch`` is called
    after each epoch is logged (a tuning study reports and prunes from there by raising).
    """
    from ecgml.evaluate.auc import macro_auc
    from ecgml.models import create_backbone
    from ecgml.tracking.runs import check_tracking_uri

    apply_http_defaults()
    tracking_wait_s()  # a bad $ECGML_TRACKING_WAIT_S fails now, not after the training
    device = resolve_device(config.device)
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    configure_speedups(device)
    seed_everything(config.seed)
    if ctx.is_main:
        check_tracking_uri()
    prepared = prepare(cache_workers(config.data), progress=progress and ctx.is_main) if ctx.is_main else None
    barrier(ctx)
    if prepared is None:  # other ranks reuse the cache rank 0 built
        prepared = prepare(config.data, progress=False)
    splits = build_splits(prepared, config.fraction, config.seed)
    leads = prepared.cache.leads
    lineage: dict[str, str] = {}
    if config.init_uri:
        model, lineage = _pretrained(config, tuple(leads), len(splits.classes))
    else:
        model = create_backbone(config.model.backbone, in_channels=len(leads), num_classes=len(splits.classes),
                                **config.model.kwargs)
    if config.crop_samples > prepared.cache.signals.shape[-1]:
        raise ValueError(f"crop of {config.crop_samples} samples is longer than the cached records")
    train_ds, val_ds, test_ds = make_datasets(prepared.cache, splits, config)

    try:
        if not ctx.is_main:
            outcome = _train_only(config, model, (train_ds, val_ds, test_ds), splits, device, ctx, macro_auc)
        else:
            hooks = _Hooks(parent_run_id, dict(extra_tags or {}), on_epoch)
            _warn_short_records(splits, config)
            outcome = _tracked_with_clear_errors(config, prepared, splits, model, (train_ds, val_ds, test_ds),
                                                 device, ctx, resume, resume_run_id, progress, macro_auc, lineage,
                                                 hooks)
    except BaseException:
        shutdown_distributed(ctx, wait=False)  # a failed rank must not wait for the others at a barrier
        raise
    shutdown_distributed(ctx)
    return outcome


def _warn_short_records(splits: Splits, config: TrainConfig) -> None:
    """Records shorter than the crop are zero-padded (one window at 0); say how many, never silently."""
    short = [(rid, int(n)) for part in (splits.train, splits.val, splits.test)
             for rid, n in zip(part.record_ids, part.n_valid, strict=True) if n < config.crop_samples]
    if short:
        rid, n = short[0]
        fs = config.data.data.fs
        sys.stderr.write(f"warning: {len(short)} record(s) are shorter than the {config.crop_s:g} s crop (e.g. "
                         f"{rid}: {n / fs:g} s); their crops and windows are zero-padded\n")


def _tracked_with_clear_errors(*args: Any) -> RunOutcome:
    """:func:`_tracked`, with MLflow's own exceptions turned into a :class:`TrackingError` naming the store."""
    from mlflow.exceptions import MlflowException

    try:
        return _tracked(*args)
    except MlflowException as exc:
        raise TrackingError(f"tracking store {tracking_uri()}: {exc.message}") from exc


def _pretrained(config: TrainConfig, leads: tuple[str, ...], n_classes: int) -> tuple[torch.nn.Module, dict[str, str]]:
    """The registered backbone ``config.init_uri`` names, checked against the target data, with a new head."""
    from ecgml.tracking.registry import download_weights, resolve_with_fallback
    from ecgml.tracking.weights import load_model

    info, warning = resolve_with_fallback(str(config.init_uri))
    if warning:  # said on stderr, where a user running a job looks, whatever the warnings filter
        sys.stderr.write(f"warning: {warning}\n")
    model, meta = load_model(download_weights(info))
    problems = []
    if meta.fs != config.data.data.fs:
        problems.append(f"it was trained at {meta.fs} Hz, the target is prepared at {config.data.data.fs} Hz "
                        f"(pass --fs {meta.fs} to resample the target)")
    if tuple(meta.leads) != leads:
        problems.append(f"it expects leads {','.join(meta.leads)}, the target has {','.join(leads)} "
                        f"(pass --leads {','.join(meta.leads)})")
    if meta.input_samples != config.crop_samples:
        problems.append(f"its input is {meta.input_samples / meta.fs:g} s, the crop is {config.crop_s:g} s "
                        f"(pass --crop-s {meta.input_samples / meta.fs:g})")
    if meta.input_domain != config.input_domain:
        problems.append(f"it reads {meta.input_domain} inputs, this run {config.input_domain}")
    if problems:
        raise ValueError(f"models:/{info.name}/{info.version} does not fit the target data: " + "; ".join(problems))
    model.reset_classifier(n_classes)
    model.train()
    return model, {"ecgml.backbone_version": f"models:/{info.name}/{info.version}",
                   "ecgml.backbone_run_id": str(info.run_id), "backbone": meta.backbone,
                   "ecgml.backbone_dataset": meta.source, "ecgml.backbone_task": meta.task}


def _make_trainer(config: TrainConfig, model: torch.nn.Module, train_ds: Any, val_ds: Any, splits: Splits,
                  device: torch.device, ctx: DistContext, score_fn: Any, run_id: str, *,
                  on_epoch: Any = None, progress: bool = False) -> Trainer:
    """The same trainer on every rank; its checkpoint lives under ``<runs_dir>/<run_id>/``."""
    return Trainer(model, train_ds, val_ds, splits.val.labels, config.optim, score_fn=score_fn, device=device,
                   checkpoint_path=config.runs_dir / run_id / "checkpoint.pt", seed=config.seed,
                   num_workers=config.num_workers, dist_ctx=ctx, on_epoch=on_epoch, progress=progress)


def _train_only(config: TrainConfig, model: torch.nn.Module, datasets: tuple, splits: Splits,
                device: torch.device, ctx: DistContext, score_fn: Any) -> RunOutcome:
    """A rank other than 0: the same steps, collectives in the same order, no tracking."""
    train_ds, val_ds, test_ds = datasets
    run_id = broadcast_object(None, ctx)
    resuming = bool(broadcast_object(None, ctx))
    trainer = _make_trainer(config, model, train_ds, val_ds, splits, device, ctx, score_fn, str(run_id))
    result = trainer.fit(resume=resuming)
    model.load_state_dict(result.best_state)
    for windows in (val_ds, test_ds):  # rank 0 gathers these predictions in _evaluate_and_log
        trainer.predict(windows, config.optim.aggregate)
    return RunOutcome(None, result.best_epoch, result.best_score, float("nan"), None, {})


def _tracked(config: TrainConfig, prepared: Any, splits: Splits, model: torch.nn.Module, datasets: tuple,
             device: torch.device, ctx: DistContext, resume: bool, resume_run_id: str | None, progress: bool,
             score_fn: Any, lineage: dict[str, str], hooks: _Hooks) -> RunOutcome:
    import mlflow

    from ecgml.tracking.runs import git_commit, log_split_inputs, open_run

    train_ds, val_ds, test_ds = datasets
    digest = config.digest()
    mlflow.set_tracking_uri(tracking_uri())
    # started by `mlflow run`: log into that run and its experiment (a child run never adopts it)
    adopted = None if hooks.parent_run_id else os.environ.get("MLFLOW_RUN_ID")
    if not adopted:
        mlflow.set_experiment(config.experiment)
    run_id = resume_run_id or (_find_resumable(config.experiment, digest) if resume else None) or adopted
    if resume and run_id is None:
        raise ValueError(f"nothing to resume: no unfinished {config.kind} run of this configuration "
                         f"(digest {digest[:12]}) in experiment {config.experiment!r}")
    dataset = prepared.dataset
    tags = {
        "ecgml.kind": config.kind, "ecgml.config_digest": digest, "dataset": dataset.source,
        "dataset_version": dataset.version, "cache_digest": prepared.cache.digest, "task": dataset.task,
        "label_map": dataset.label_map, "backbone": config.model.backbone,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        **lineage, **hooks.extra_tags,
    }
    if hooks.parent_run_id:
        tags["mlflow.parentRunId"] = hooks.parent_run_id
    with open_run(config.experiment, run_name=config.run_name, run_id=run_id, tags=tags,
                  nested=bool(hooks.parent_run_id)) as run:
        run_id = run.info.run_id
        broadcast_object(run_id, ctx)
        resuming = resume and (config.runs_dir / run_id / "checkpoint.pt").is_file()
        broadcast_object(resuming, ctx)
        if resume and not resuming:
            raise ValueError(f"run {run_id} has no checkpoint at {config.runs_dir / run_id}; cannot resume")
        if not resuming:
            log_json(config.to_json(), "config.json")
            log_json(label_map_document(prepared), "label_map.json")
            log_json(list(splits.classes), "classes.json")
            log_json(list(prepared.cache.leads), "leads.json")
            mlflow.log_params({"backbone": config.model.backbone, "fraction": config.fraction,
                               "epochs": config.optim.epochs, "lr": config.optim.lr,
                               "batch_size": config.optim.batch_size, "crop_s": config.crop_s,
                               "fs": config.data.data.fs, "n_train": len(splits.train)})
            log_split_inputs(splits.tables, name=f"{dataset.source}-{dataset.task}", source=str(dataset.root),
                             digest=prepared.cache.digest)
        uri = tracking_uri()
        metric_log = MetricLog(run_id, uri)
        logged = metric_log.logged_steps() if resuming else set()

        def on_epoch(record: EpochRecord) -> None:
            metric_log.log(record.epoch, epoch_metrics(record))  # an outage queues it; training goes on
            if hooks.on_epoch is not None:
                hooks.on_epoch(record)

        trainer = _make_trainer(config, model, train_ds, val_ds, splits, device, ctx, score_fn, run_id,
                                on_epoch=on_epoch, progress=progress)
        result = trainer.fit(resume=resuming)
        resumed_from = -1 if result.resumed_from is None else result.resumed_from
        for record in result.history:  # epochs checkpointed before a kill or an outage but never logged
            if record.epoch not in logged and record.epoch <= resumed_from:
                on_epoch(record)

        def outage(reason: str | None, final_phase_started: bool, waited_s: float | None = None) -> str:
            return outage_message(
                uri=uri, reason=reason, run_id=run_id, experiment=config.experiment,
                checkpoint=trainer.checkpoint_path, last_epoch=result.history[-1].epoch if result.history else None,
                unlogged_steps=sorted(metric_log.pending), final_phase_started=final_phase_started,
                command=resume_command(config.kind, run_id), waited_s=waited_s)

        try:
            metric_log.finish()
        except TrackingUnavailable:
            raise TrackingUnavailable(outage(metric_log.failure, False, tracking_wait_s())) from None
        try:
            return _finish_run(config, prepared, splits, model, trainer, (val_ds, test_ds), result, tags, run_id,
                               digest)
        except Exception as exc:
            reason = tracking_unreachable(uri)
            if reason is None:
                raise
            raise TrackingUnavailable(outage(reason, True)) from exc


def _finish_run(config: TrainConfig, prepared: Any, splits: Splits, model: torch.nn.Module, trainer: Trainer,
                windows: tuple[SlidingWindowDataset, SlidingWindowDataset], result: Any, tags: dict[str, str],
                run_id: str, digest: str) -> RunOutcome:
    """After the last epoch: evaluate the best epoch, log it, save and log the weights and the model,
    register it if asked."""
    import mlflow

    from ecgml.tracking.pyfunc import log_pyfunc
    from ecgml.tracking.registry import MODEL_URI_TAG, register_run_model
    from ecgml.tracking.weights import WeightMetadata, save_weights

    dataset = prepared.dataset
    model.load_state_dict(result.best_state)
    outcome = _evaluate_and_log(config, prepared, splits, trainer, windows, result)
    mean, std = prepared.cache.stats
    metadata = WeightMetadata(
        backbone=model.constructor["name"], backbone_kwargs=model.constructor["kwargs"],
        num_classes=len(splits.classes), fs=config.data.data.fs, input_samples=config.crop_samples,
        leads=tuple(prepared.cache.leads), classes=tuple(splits.classes), norm_mean=tuple(map(float, mean)),
        norm_std=tuple(map(float, std)), source=dataset.source, dataset_version=dataset.version,
        cache_digest=prepared.cache.digest, task=dataset.task, label_map=dataset.label_map,
        aggregate=config.optim.aggregate, input_domain=config.input_domain,
        extra={"run_id": run_id, "config_digest": digest},
    )
    weights_dir = save_weights(config.runs_dir / run_id / "weights", model, metadata)
    mlflow.log_artifacts(str(weights_dir), artifact_path="weights")
    model_info = log_pyfunc(weights_dir)
    mlflow.set_tag(MODEL_URI_TAG, model_info.model_uri)  # what `ecgml register` registers
    if config.register_as:
        version = register_run_model(config.register_as, run_id, model_info.model_uri,
                                     {**tags, **{f"metric.{k}": f"{v:.6f}" for k, v in outcome.items()
                                                 if k in ("best_val_macro_auc", "test_macro_auc")}})
        mlflow.set_tag("ecgml.registered_as", f"models:/{config.register_as}/{version}")
    mlflow.set_tags({"ecgml.best_epoch": str(result.best_epoch), "ecgml.stopped_early": str(result.stopped_early)})
    return RunOutcome(run_id, result.best_epoch, result.best_score, outcome["test_macro_auc"], weights_dir, outcome)


def _evaluate_and_log(config: TrainConfig, prepared: Any, splits: Splits, trainer: Trainer,
                      windows: tuple[SlidingWindowDataset, SlidingWindowDataset], result: Any) -> dict[str, Any]:
    """Predictions of the best epoch on validation and test, metrics with intervals, plots."""
    import mlflow

    from ecgml.evaluate.auc import bootstrap_auc, per_class_report
    from ecgml.evaluate.figures import plot_auc_bars, plot_learning_curves, plot_roc_curves
    from ecgml.evaluate.ranking import ranking_summary

    out: dict[str, Any] = {"best_epoch": result.best_epoch}
    folder = config.runs_dir / mlflow.active_run().info.run_id / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    history = {key: [getattr(r, key) for r in result.history] for key in ("train_loss", "val_loss", "val_macro_auc")}
    plot_learning_curves(history, folder / "learning_curves.png", title=f"{config.kind} ({config.model.backbone})")
    for name, split, ds in (("val", splits.val, windows[0]), ("test", splits.test, windows[1])):
        probs = trainer.predict(ds, config.optim.aggregate)
        frame = predictions_frame(split, splits.tables[name], splits.classes, probs)
        path = folder / f"predictions_{name}.csv"
        frame.to_csv(path, index=False)
        report = per_class_report(split.labels, probs, splits.classes)
        interval = bootstrap_auc(split.labels, probs, n_rounds=200, seed=config.seed)
        key = "best_val" if name == "val" else name  # per-epoch `val_macro_auc` is a curve; this is its best
        out[f"{key}_macro_auc"] = report["macro"]
        out[f"{key}_macro_auc_low"] = interval["low"]
        out[f"{key}_macro_auc_high"] = interval["high"]
        out[f"{key}_undefined_classes"] = report["undefined"]
        out[f"{key}_per_class_auc"] = report["auc"]
        ranking = ranking_summary(split.labels, probs, splits.classes)
        out[f"{key}_macro_auprc"] = ranking["macro_auprc"]
        out[f"{key}_fmax"] = ranking["fmax"]
        out[f"{key}_per_class_auprc"] = ranking["auprc"]
        aucs = [report["auc"][c] for c in splits.classes]
        plot_roc_curves(split.labels, probs, splits.classes, folder / f"roc_{name}.png", aucs=aucs)
        plot_auc_bars(splits.classes, aucs, folder / f"auc_{name}.png", low=interval["class_low"],
                      high=interval["class_high"], title=f"{name}: macro AUC {report['macro']:.3f} "
                      f"[{interval['low']:.3f}, {interval['high']:.3f}]")
    mlflow.log_metrics({k: float(v) for k, v in out.items() if isinstance(v, float | int) and not isinstance(v, bool)
                        and k != "best_epoch"})
    log_json(out, "metrics.json")
    mlflow.log_artifacts(str(folder), artifact_path="eval")
    return out
