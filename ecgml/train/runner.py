"""Run one tracked training job (pretrain on PTB-XL, standalone on G12EC) end to end.

Resumption: a killed run (even ``kill -9``) leaves its MLflow run RUNNING and a checkpoint under
``<runs_dir>/<run_id>/``. ``resume=True`` finds the newest unfinished run of the same config digest (or
takes ``resume_run_id``), continues it from the checkpoint in the same MLflow run, and re-logs any epoch
the checkpoint holds that MLflow had not received, so no epoch is lost or logged twice.

Tracking outages: per-epoch metrics go through :class:`~ecgml.tracking.runs.MetricLog`, so a stopped
tracking server does not stop the training (the epochs are queued, and every epoch is in the checkpoint).
At the end the run waits ``$ECGML_TRACKING_WAIT_S`` for the server, then fails with
:class:`~ecgml.tracking.store.TrackingUnavailable`: the message names the server, what was not logged,
where the checkpoint is, and the exact command that finishes the same run once the server is back.

Under torchrun: rank 0 alone talks to MLflow, and the first rank of each machine builds that machine's
cache. Whatever one rank does alone (the cache, opening the run, each epoch's checkpoint and log, the
tracking wait, evaluation, uploads, registration) the others wait for on the long-timeout group
(``$ECGML_DIST_WAIT_S``), never inside a training collective (``$ECGML_DIST_TIMEOUT_S``); if it fails,
that rank reports why and the others stop with one line (see :mod:`ecgml.train.distributed`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ecgml.data.prepare import Prepared, prepare
from ecgml.runtime.signals import Terminated, sigterm_as_interrupt
from ecgml.runtime.threads import ensure_budget
from ecgml.tracking.registry import VersionInfo
from ecgml.tracking.runs import MetricLog, log_json
from ecgml.tracking.store import (
    TrackingError,
    TrackingUnavailable,
    apply_http_defaults,
    tracking_unreachable,
    tracking_uri,
    tracking_wait_s,
)
from ecgml.tracking.weights import WeightMetadata
from ecgml.train.context import RunContext, RunOutcome, RunRequest, TrackedRun
from ecgml.train.device import Precision, configure_speedups, resolve_device, seed_everything
from ecgml.train.distributed import (
    DistContext,
    PeerFailed,
    all_gather,
    from_main,
    init_distributed,
    report_peer_failure,
    settle,
    shutdown_distributed,
    solo,
)
from ecgml.train.finish import finish_run
from ecgml.train.loop import EpochRecord, FitResult, Trainer
from ecgml.train.outage import COMMANDS, interrupted_message, outage_message, resume_command
from ecgml.train.pipeline import (
    Splits,
    TrainConfig,
    build_splits,
    cache_workers,
    check_backbone_input,
    check_model,
    epoch_metrics,
    label_map_document,
    make_datasets,
)

__all__ = ["COMMANDS", "RunOutcome", "outage_message", "resume_command", "run_training"]


def _find_resumable(experiment: str, digest: str) -> str | None:
    import mlflow

    found = mlflow.search_runs(experiment_names=[experiment], output_format="list", max_results=1,
                               filter_string=f"tags.`ecgml.config_digest` = '{digest}' and "
                                             "attributes.status != 'FINISHED'",
                               order_by=["attributes.start_time DESC"])
    return found[0].info.run_id if found else None


def run_training(config: TrainConfig, *, resume: bool = False, resume_run_id: str | None = None,
                 progress: bool = True, parent_run_id: str | None = None, extra_tags: dict[str, str] | None = None,
                 on_epoch: Callable[[EpochRecord], None] | None = None) -> RunOutcome:
    """Validate, prepare, train (or resume), evaluate and log one run; returns its outcome.

    The keyword arguments are those of :class:`RunRequest`.
    """
    request = RunRequest(resume, resume_run_id, progress, parent_run_id, dict(extra_tags or {}), on_epoch)
    apply_http_defaults()
    tracking_wait_s()  # a bad $ECGML_TRACKING_WAIT_S fails now, not after the training
    device = resolve_device(config.device)
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    configure_speedups(device)
    seed_everything(config.seed)
    budget = ensure_budget().with_loader_workers(config.num_workers)  # this process's share of the cores
    config = replace(config, num_workers=budget.loader_workers)
    # SIGTERM (docker stop, Slurm, Kubernetes) stops a single-process training as Ctrl-C does; under torchrun
    # the launcher's own protocol sends it to the ranks, and it is left to that
    terminated_like_ctrl_c = nullcontext() if ctx.enabled else sigterm_as_interrupt()
    try:
        with terminated_like_ctrl_c:
            run = _build_context(config, device, ctx, progress)
            if not ctx.is_main:
                outcome = _train_only(run)
            else:
                _warn_short_records(run.splits, config)
                _warn_dropped_classes(run.prepared, config)
                outcome = _tracked_with_clear_errors(run, request)
    except PeerFailed as exc:  # another rank failed and says why; this one stops quietly, with exit code 0,
        report_peer_failure(ctx, exc)  # so that torchrun names the failed rank and never stops it mid-message
        shutdown_distributed(ctx, wait=False)
        return RunOutcome(None, -1, math.nan, math.nan, None, {}, stopped_by=str(exc))
    except BaseException:
        shutdown_distributed(ctx, wait=False)  # a failed rank must not wait for the others at a barrier
        raise
    shutdown_distributed(ctx)
    return outcome


def _build_context(config: TrainConfig, device: torch.device, ctx: DistContext, progress: bool) -> RunContext:
    """Check the tracking store, prepare the cache (the first rank of each machine builds it), split it
    and build the model."""
    from ecgml.evaluate.auc import macro_auc
    from ecgml.models import create_backbone

    prepared = _prepare_on_each_machine(config, ctx, progress)
    splits = build_splits(prepared, config.fraction, config.seed)
    leads = prepared.cache.leads
    lineage: dict[str, str] = {}
    if config.init_uri:
        model, lineage = _pretrained(config, tuple(leads), len(splits.classes), ctx)
        _refuse_overlap(config, prepared, lineage)
    else:
        model = create_backbone(config.model.backbone, in_channels=len(leads), num_classes=len(splits.classes),
                                **config.model.kwargs)
    if config.crop_samples > prepared.cache.signals.shape[-1]:
        raise ValueError(f"crop of {config.crop_samples} samples is longer than the cached records")
    check_model(model, config, len(leads))
    datasets = make_datasets(prepared.cache, splits, config)
    return RunContext(config, prepared, splits, model, datasets, device, ctx, macro_auc, lineage)


def _refuse_overlap(config: TrainConfig, prepared: Prepared, lineage: dict[str, str]) -> None:
    """A backbone is never fine-tuned on records of its own pretraining source (the Challenge's HR records are
    PTB-XL) unless the user forces it; forced, it is said on stderr."""
    from ecgml.data.sources import overlap_refusal

    backbone = lineage.get("ecgml.backbone_version", str(config.init_uri))
    reason = overlap_refusal(prepared.dataset, lineage.get("ecgml.backbone_dataset", ""), backbone)
    if reason and not config.data.data.allow_overlap:
        raise ValueError(reason)
    if reason:
        sys.stderr.write(f"warning: --allow-overlap given, fine-tuning anyway: {reason}\n")


def _prepare_on_each_machine(config: TrainConfig, ctx: DistContext, progress: bool) -> Prepared:
    """Rank 0 checks the tracking store (and the backbone), the first rank of each machine builds that
    machine's cache (no shared file system needed), and the other ranks wait for both on the long-timeout
    group, then read the cache their machine built. Every machine must have built the same cache."""
    from ecgml.tracking.store import check_tracking_uri

    def first_on_machine() -> Prepared:
        if ctx.is_main:
            check_tracking_uri()
            check_backbone_input(config)
            if config.init_uri:
                _check_backbone_before_cache(config)
        return prepare(cache_workers(config.data), progress=progress and ctx.is_main)

    prepared = solo(first_on_machine, ctx, here=ctx.is_main or ctx.is_local_main)
    if prepared is None:
        prepared = prepare(config.data, progress=False)
    digests = all_gather(prepared.cache.digest, ctx, group=ctx.wait_group)
    if len(set(digests)) > 1:
        failure = None if not ctx.is_main else ValueError(
            f"the machines built different caches (digests {', '.join(sorted(set(digests)))}): their copies of "
            f"{config.data.data.root} differ; give every machine the same data")
        settle(ctx, failure)
    return prepared


def _warn_short_records(splits: Splits, config: TrainConfig) -> None:
    """Records shorter than the crop are zero-padded (one window at 0); say how many, never silently."""
    short = [(rid, int(n)) for part in (splits.train, splits.val, splits.test)
             for rid, n in zip(part.record_ids, part.n_valid, strict=True) if n < config.crop_samples]
    if short:
        rid, n = short[0]
        fs = config.data.data.fs
        sys.stderr.write(f"warning: {len(short)} record(s) are shorter than the {config.crop_s:g} s crop (e.g. "
                         f"{rid}: {n / fs:g} s); their crops and windows are zero-padded\n")


def _warn_dropped_classes(prepared: Prepared, config: TrainConfig) -> None:
    """A target's own labels too rare to learn are left out of its classes: say which, with their counts."""
    space = prepared.dataset.label_space
    if not space or space.get("explicit") or not space.get("dropped"):
        return
    dropped = dict(space["dropped"])  # type: ignore[call-overload]
    listed = ", ".join(f"{c} ({n})" for c, n in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])))
    sys.stderr.write(f"warning: {config.data.data.root}: {len(dropped)} label(s) have fewer than "
                     f"{space.get('min_positives')} positive records (--min-positives) and are left out: {listed}\n")


def _tracked_with_clear_errors(run: RunContext, request: RunRequest) -> RunOutcome:
    """:func:`_tracked`, with MLflow's own exceptions turned into a :class:`TrackingError` naming the store."""
    from mlflow.exceptions import MlflowException

    try:
        return _tracked(run, request)
    except MlflowException as exc:
        raise TrackingError(f"tracking store {tracking_uri()}: {exc.message}") from exc


def _check_backbone_before_cache(config: TrainConfig) -> None:
    """A registered backbone whose rate, leads, input length or domain cannot fit the target is refused
    before any cache is built (a wrong ``--fs 500`` against a 100 Hz backbone would build a 900 MB cache first)."""
    from ecgml.data.leads import resolve_leads
    from ecgml.tracking.registry import download_weights, resolve_with_fallback
    from ecgml.tracking.weights import read_metadata

    info, _ = resolve_with_fallback(str(config.init_uri))  # the warning is said once, when the model loads
    _refuse_misfit(info, read_metadata(download_weights(info)), config, resolve_leads(config.data.leads))


def _refuse_misfit(info: VersionInfo, meta: WeightMetadata, config: TrainConfig, leads: tuple[str, ...]) -> None:
    """Raise a ValueError naming each way the backbone does not fit the target data, and the fix."""
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


def _pretrained(config: TrainConfig, leads: tuple[str, ...], n_classes: int,
                ctx: DistContext) -> tuple[torch.nn.Module, dict[str, str]]:
    """The registered backbone ``config.init_uri`` names, checked against the target data, with a new head.

    Under torchrun rank 0 alone asks the registry and downloads the weights; the other ranks get their
    metadata and tensors from it: one download instead of one per rank, and no rank but 0 talks to MLflow.
    """
    from ecgml.tracking.weights import build_model

    info, warning, meta, state = from_main(lambda: _fetch_backbone(str(config.init_uri)), ctx)
    if warning and ctx.is_main:  # said on stderr, where a user running a job looks, whatever the warnings filter
        sys.stderr.write(f"warning: {warning}\n")
    model = build_model(meta, state, where=f"models:/{info.name}/{info.version}")
    _refuse_misfit(info, meta, config, leads)
    model.reset_classifier(n_classes)
    model.train()
    return model, {"ecgml.backbone_version": f"models:/{info.name}/{info.version}",
                   "ecgml.backbone_run_id": str(info.run_id), "backbone": meta.backbone,
                   "ecgml.backbone_dataset": meta.source, "ecgml.backbone_task": meta.task}


def _fetch_backbone(uri: str) -> tuple[VersionInfo, str | None, WeightMetadata, dict[str, torch.Tensor]]:
    """The registered version ``uri`` resolves to (with the fallback's warning), its metadata and tensors."""
    from ecgml.tracking.registry import download_weights, resolve_with_fallback
    from ecgml.tracking.weights import load_state_dict, read_metadata

    info, warning = resolve_with_fallback(uri)
    folder = download_weights(info)
    return info, warning, read_metadata(folder), load_state_dict(folder)


def _make_trainer(run: RunContext, run_id: str, *, on_epoch: Callable[[EpochRecord], None] | None = None,
                  progress: bool = False) -> Trainer:
    """The same trainer on every rank; its checkpoint lives under ``<runs_dir>/<run_id>/``."""
    config = run.config
    train_ds, val_ds, _ = run.datasets
    return Trainer(run.model, train_ds, val_ds, run.splits.val.labels, config.optim, score_fn=run.score_fn,
                   device=run.device, checkpoint_path=config.runs_dir / run_id / "checkpoint.pt", seed=config.seed,
                   num_workers=config.num_workers, dist_ctx=run.dist, on_epoch=on_epoch, progress=progress,
                   device_data=config.device_data, compile_model=config.compile_model)


def _train_only(run: RunContext) -> RunOutcome:
    """A rank other than 0: the same steps, collectives in the same order, no tracking. Rank 0's own work
    (opening the run, each epoch's checkpoint and log, the end of the run) is waited for on the
    long-timeout group."""
    tracked, resuming = from_main(_rank_0_only, run.dist)
    trainer = _make_trainer(run, tracked.run_id)
    result = trainer.fit(resume=resuming)
    _best_predictions(run, trainer, result)
    settle(run.dist)  # rank 0 finishes the run alone: the tracking wait, evaluation, uploads, registration
    return RunOutcome(None, result.best_epoch, result.best_score, float("nan"), None, {})


def _rank_0_only() -> Any:
    raise AssertionError("only rank 0 opens the MLflow run")  # from_main never calls it on other ranks


def _best_predictions(run: RunContext, trainer: Trainer, result: FitResult) -> dict[str, np.ndarray]:
    """The best epoch's validation and test predictions, computed by every rank together (each scores its
    share of the windows) before rank 0 goes on alone."""
    run.model.load_state_dict(result.best_state)
    _, val, test = run.datasets
    return {name: trainer.predict(windows, run.config.optim.aggregate) for name, windows in (("val", val),
                                                                                            ("test", test))}


def _run_tags(run: RunContext, request: RunRequest, digest: str) -> dict[str, str]:
    """What identifies the run: its kind, config digest, data, backbone, code and lineage."""
    from ecgml.tracking.runs import git_commit

    config, dataset = run.config, run.prepared.dataset
    tags = {
        "ecgml.kind": config.kind, "ecgml.config_digest": digest, "dataset": dataset.source,
        "dataset_version": dataset.version, "cache_digest": run.prepared.cache.digest, "task": dataset.task,
        "label_map": dataset.label_map, "backbone": config.model.backbone,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        **run.lineage, **request.extra_tags,
    }
    return tags


def _run_to_open(config: TrainConfig, request: RunRequest, digest: str) -> str | None:
    """The run to log into: the one asked for, the unfinished one to resume, the one ``mlflow run``
    started (a child run never adopts it), or None for a new one."""
    import mlflow

    adopted = None if request.parent_run_id else os.environ.get("MLFLOW_RUN_ID")
    if not adopted:
        mlflow.set_experiment(config.experiment)
    run_id = (request.resume_run_id or (_find_resumable(config.experiment, digest) if request.resume else None)
              or adopted)
    if request.resume and run_id is None:
        raise ValueError(f"nothing to resume: no unfinished {config.kind} run of this configuration "
                         f"(digest {digest[:12]}) in experiment {config.experiment!r}")
    return run_id


def _open(run: RunContext, request: RunRequest, stack: ExitStack) -> tuple[TrackedRun, bool]:
    """Rank 0: open (or resume) the MLflow run, kept open by ``stack``, and log the inputs of a new run;
    returns the run and whether it resumes (handed to the other ranks by the caller)."""
    import mlflow

    from ecgml.tracking.run_names import config_run_name
    from ecgml.tracking.runs import open_run

    config = run.config
    digest = config.digest()
    mlflow.set_tracking_uri(tracking_uri())
    run_id = _run_to_open(config, request, digest)
    tags = _run_tags(run, request, digest)
    run_name = config.run_name or config_run_name(config, backbone=run.lineage.get("backbone"))
    active = stack.enter_context(open_run(config.experiment, run_name=run_name, run_id=run_id, tags=tags,
                                          parent_run_id=request.parent_run_id))
    tracked = TrackedRun(active.info.run_id, digest, tags)
    return tracked, _start_or_resume(run, request, tracked.run_id)


def runtime_params(run: RunContext) -> dict[str, str | int]:
    """Where and how the run trains, as MLflow params: the device it landed on (``auto`` says nothing),
    the precision the trainer uses there (the same rule, :class:`Precision`) and the number of ranks. A
    run resumed elsewhere keeps its first values (and says so on stderr)."""
    return {"train_device": str(run.device), "precision": Precision.choose(run.device).name,
            "world_size": run.dist.world_size}


def _start_or_resume(run: RunContext, request: RunRequest, run_id: str) -> bool:
    """Whether the run resumes; log the inputs of a new run, and where it trains on every start."""
    from ecgml.models.registry import family_of
    from ecgml.tracking.run_names import training_params
    from ecgml.tracking.runs import log_params_once, log_split_inputs

    config, prepared, splits = run.config, run.prepared, run.splits
    resuming = request.resume and (config.runs_dir / run_id / "checkpoint.pt").is_file()
    if request.resume and not resuming:
        raise ValueError(f"run {run_id} has no checkpoint at {config.runs_dir / run_id}; cannot resume")
    if not resuming:
        log_json(config.to_json(), "config.json")
        log_json(label_map_document(prepared), "label_map.json")
        log_json(list(splits.classes), "classes.json")
        log_json(list(prepared.cache.leads), "leads.json")
        backbone = run.lineage.get("backbone", config.model.backbone)
        log_params_once({**training_params(config, family=family_of(backbone), lineage=run.lineage),
                         "n_train": len(splits.train),
                         **ensure_budget(warn=None).with_loader_workers(config.num_workers).params()})
        dataset = prepared.dataset
        log_split_inputs(splits.tables, name=f"{dataset.source}-{dataset.task}", source=str(dataset.root),
                         digest=prepared.cache.digest)
    log_params_once(runtime_params(run))
    return resuming


def _tracked(run: RunContext, request: RunRequest) -> RunOutcome:
    """Rank 0: open (or resume) the MLflow run while the other ranks wait for it, train with every epoch
    logged, then finish the run alone (:func:`_finish`)."""
    with ExitStack() as stack:
        tracked, resuming = from_main(lambda: _open(run, request, stack), run.dist)
        metric_log = MetricLog(tracked.run_id, tracking_uri())
        logged = metric_log.logged_steps() if resuming else set()

        checkpointed: list[int] = []

        def on_epoch(record: EpochRecord) -> None:
            checkpointed.append(record.epoch)  # called after the epoch's checkpoint is written
            metric_log.log(record.epoch, epoch_metrics(record))  # an outage queues it; training goes on
            if request.on_epoch is not None:
                request.on_epoch(record)

        trainer = _make_trainer(run, tracked.run_id, on_epoch=on_epoch, progress=request.progress)
        try:
            result = trainer.fit(resume=resuming)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated): open_run marks the run KILLED
            sys.stderr.write("\n" + interrupted_message(
                signal_name="SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C", run_id=tracked.run_id,
                checkpoint=trainer.checkpoint_path, last_epoch=checkpointed[-1] if checkpointed else None,
                command=resume_command(run.config.kind, tracked.run_id)) + "\n")
            sys.stderr.flush()
            raise
        predictions = _best_predictions(run, trainer, result)
        resumed_from = -1 if result.resumed_from is None else result.resumed_from

        def finish() -> RunOutcome:
            for record in result.history:  # epochs checkpointed before a kill or an outage but never logged
                if record.epoch not in logged and record.epoch <= resumed_from:
                    on_epoch(record)
            return _finish(run, tracked, trainer, result, predictions, metric_log)

        # alone from here, however long the tracking server takes: the others wait on the long-timeout group
        return cast(RunOutcome, solo(finish, run.dist, here=True))


def _finish(run: RunContext, tracked: TrackedRun, trainer: Trainer, result: FitResult,
            predictions: dict[str, np.ndarray], metric_log: MetricLog) -> RunOutcome:
    """Rank 0 after the last epoch: wait for a stopped tracking server, then evaluate, upload and
    register; an outage becomes a :class:`TrackingUnavailable` that says how to finish the same run."""
    config, uri = run.config, metric_log.uri

    def outage(reason: str | None, final_phase_started: bool, waited_s: float | None = None) -> str:
        return outage_message(
            uri=uri, reason=reason, run_id=tracked.run_id, experiment=config.experiment,
            checkpoint=trainer.checkpoint_path, last_epoch=result.history[-1].epoch if result.history else None,
            unlogged_steps=sorted(metric_log.pending), final_phase_started=final_phase_started,
            command=resume_command(config.kind, tracked.run_id), waited_s=waited_s)

    try:
        metric_log.finish()
    except TrackingUnavailable:
        raise TrackingUnavailable(outage(metric_log.failure, False, tracking_wait_s())) from None
    try:
        return finish_run(run, tracked, result, predictions)
    except Exception as exc:
        reason = tracking_unreachable(uri)
        if reason is None:
            raise
        raise TrackingUnavailable(outage(reason, True)) from exc
