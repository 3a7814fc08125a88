"""A study from start to end: check everything, create (or resume) it with its parent run and exactly
``n_trials`` slots, run the workers (this process, which with ``--workers N`` is worker 0 beside N-1 processes
it started: :mod:`ecgml.tune.pool`), then record the best trial on the parent run and register its model.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ecgml.tracking.store import tracking_client
from ecgml.tune import logger
from ecgml.tune.pool import WorkerPool
from ecgml.tune.settings import RunSettings
from ecgml.tune.space import SpaceError
from ecgml.tune.spec import StudyError, TuneSpec
from ecgml.tune.storage import StudyStorage, open_storage, redact
from ecgml.tune.worker import StaleTrialRetry, run_worker

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

Echo = Callable[[str], None]


@dataclass
class TuneResult:
    study_name: str
    parent_run_id: str
    n_trials: int
    counts: dict[str, int]
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_id: str | None = None
    registered: str | None = None
    unfinished: int = 0


def default_study_name(stage: str) -> str:
    return f"ecgml-{stage}-{datetime.now():%Y%m%d-%H%M%S}"


def check_spec(spec: TuneSpec) -> None:
    """The whole space against the base config, before any storage or trial is touched."""
    spec.space.validate()
    try:
        for _ in spec.space.corner_configs(spec.base):  # dataclasses.replace runs each config's own checks
            pass
    except ValueError as exc:
        raise SpaceError(f"the search space does not fit the training config: {exc}") from None


def prepare_data(spec: TuneSpec) -> Any:
    """Build (or reuse) the data cache once, before any worker starts: workers then only read it, and a missing
    dataset fails here instead of in every trial."""
    from ecgml.data.prepare import prepare
    from ecgml.train.pipeline import cache_workers

    try:
        return prepare(cache_workers(spec.base.data), progress=False)
    except (OSError, ValueError, KeyError) as exc:
        raise StudyError(f"cannot prepare the data of the study: {exc}") from None


def log_study_inputs(prepared: Any, spec: TuneSpec, parent_run_id: str) -> None:
    """The study's data splits as dataset inputs of the parent run, logged before any trial.

    Why first: MLflow's SQL store creates a dataset by check-then-insert, so two workers logging the same new
    dataset at once collide on its primary key (experiment, name, digest) and one trial fails. Once the parent
    holds them, trial runs only reference them. Names and digests are those ``log_split_inputs`` gives.
    """
    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from ecgml.train.pipeline import build_splits

    splits = build_splits(prepared, spec.base.fraction, spec.base.seed)
    dataset, digest = prepared.dataset, prepared.cache.digest
    inputs = []
    for split, table in splits.tables.items():
        index = table[[c for c in ("record_id", "patient_id", "fold") if c in table.columns]].reset_index(drop=True)
        name = f"{dataset.source}-{dataset.task}-{split}"
        entity = mlflow.data.from_pandas(index, source=str(dataset.root), name=name,
                                         digest=f"{digest[:8]}-{split}")._to_mlflow_entity()
        inputs.append(DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, split)]))
    tracking_client().log_inputs(parent_run_id, datasets=inputs)


def check_backbone(spec: TuneSpec) -> None:
    """Fine-tuning: the registered backbone exists and fits the crop, checked once instead of failing every trial."""
    if not spec.base.init_uri:
        return
    from ecgml.tracking.registry import download_weights, resolve_with_fallback
    from ecgml.tracking.weights import read_metadata

    info, _ = resolve_with_fallback(spec.base.init_uri)
    meta = read_metadata(download_weights(info))
    if meta.input_samples != spec.base.crop_samples or meta.fs != spec.base.data.data.fs:
        raise StudyError(f"{spec.base.init_uri} takes {meta.input_samples / meta.fs:g} s at {meta.fs} Hz; the study "
                         f"crops {spec.base.crop_s:g} s at {spec.base.data.data.fs} Hz (pass --crop-s "
                         f"{meta.input_samples / meta.fs:g} --fs {meta.fs})")


def _backend(settings: RunSettings) -> Any:
    return open_storage(settings.storage, heartbeat_interval=settings.heartbeat_interval,
                        grace_period=settings.grace_period, stale_callback=StaleTrialRetry(settings.max_retry))


def _load(backend: Any, name: str) -> optuna.Study | None:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        return None


def _replaced(trials: Sequence[FrozenTrial]) -> set[int]:
    return {t.system_attrs["retry_history"][-1] for t in trials if t.system_attrs.get("retry_history")}


def slots_used(trials: Sequence[FrozenTrial]) -> int:
    """Trials that hold one of the study's slots: all, less those failed and replaced by a retry."""
    replaced = _replaced(trials)
    return sum(t.number not in replaced for t in trials)


def slots_finished(trials: Sequence[FrozenTrial]) -> int:
    """Slots whose trial has finished (complete, pruned, or failed and not retried)."""
    replaced = _replaced(trials)
    return sum(t.number not in replaced and t.state.is_finished() for t in trials)


def _enqueue_missing(study: optuna.Study, n_trials: int) -> int:
    """Add empty WAITING trials (the sampler fills their parameters when claimed) up to ``n_trials`` slots."""
    missing = n_trials - slots_used(study.get_trials(deepcopy=False))
    for _ in range(max(0, missing)):
        study.enqueue_trial({})
    return max(0, missing)


def _adopted_run() -> str | None:
    """The run ``mlflow run`` started: the study's parent. Removed from the environment, or every child run
    (fluent ``start_run`` reads MLFLOW_RUN_ID) and every worker process would log into it."""
    return os.environ.pop("MLFLOW_RUN_ID", None)


def create(spec: TuneSpec, study_name: str, settings: RunSettings) -> tuple[optuna.Study, TuneSpec]:
    """A new study with its parent run and ``n_trials`` waiting slots; StudyError if the name is taken."""
    import optuna

    from ecgml.tracking.store import check_tracking_uri

    check_spec(spec)
    check_tracking_uri()
    check_backbone(spec)
    backend = _backend(settings)
    if _load(backend, study_name) is not None:
        raise StudyError(f"study {study_name!r} already exists in {redact(settings.storage)}; pass --resume to "
                         "continue it, or choose another --study-name")
    prepared = prepare_data(spec)
    adopted = _adopted_run()
    if adopted:
        spec = spec.with_(base=replace(spec.base, experiment=logger.experiment_of(adopted)))
    study = optuna.create_study(storage=backend, study_name=study_name, direction="maximize")
    params = {"stage": spec.stage, "n_trials": spec.n_trials, "pruner": spec.pruner, "sampler": spec.sampler,
              "seed": spec.seed, "epochs": spec.base.optim.epochs, "storage": redact(settings.storage),
              "searched": ",".join(spec.space.searched)}
    docs = {"search_space.json": spec.space.to_json(), "base_config.json": spec.base.to_json()}
    if adopted:
        client = tracking_client()
        for key, value in {"ecgml.kind": "tune", logger.STUDY_TAG: study_name, **spec.tags}.items():
            client.set_tag(adopted, key, value)
        logger.annotate_parent(adopted, params, docs)
        parent = adopted
    else:
        parent = logger.start_parent_run(spec.experiment, study_name, spec.tags, params, docs)
    log_study_inputs(prepared, spec, parent)
    spec = spec.with_(parent_run_id=parent)
    spec.save(study)
    for key, value in spec.tags.items():  # shown by optuna-dashboard
        study.set_user_attr(f"tag.{key}", value)
    study.set_user_attr("mlflow_parent_run_id", parent)
    _enqueue_missing(study, spec.n_trials)
    return study, spec


def latest_study_name(settings: RunSettings) -> str:
    studies = _backend(settings).get_all_studies()
    if not studies:
        raise StudyError(f"nothing to resume: {redact(settings.storage)} holds no study")
    return max(studies, key=StudyStorage.creation_order).study_name


def resume(study_name: str, n_trials: int | None, settings: RunSettings,
           register_as: str | None = None) -> tuple[optuna.Study, TuneSpec]:
    """An existing study, its parent run reopened, topped up to ``n_trials`` slots (default: its own);
    ``register_as`` replaces the stored registered-model name ("" = do not register)."""
    from ecgml.tracking.store import check_tracking_uri

    check_tracking_uri()
    study = _load(_backend(settings), study_name)
    if study is None:
        raise StudyError(f"nothing to resume: no study named {study_name!r} in {redact(settings.storage)}")
    spec = TuneSpec.from_study(study)
    used = slots_used(study.get_trials(deepcopy=False))
    if n_trials is not None:
        if n_trials < used:
            raise StudyError(f"study {study_name!r} already has {used} trials; --n-trials {n_trials} cannot shrink it")
        spec = spec.with_(n_trials=n_trials)
    if register_as is not None:
        spec = spec.with_(register_as=register_as)
    spec.save(study)
    if spec.parent_run_id is None:
        raise StudyError(f"study {study_name!r} has no parent run; it was not created by `ecgml tune`")
    logger.check_parent_run(spec.parent_run_id)
    prepare_data(spec)
    adopted = _adopted_run()
    if adopted:
        tracking_client().set_tag(adopted, "ecgml.tune_parent_run_id", spec.parent_run_id)
    logger.reopen_parent_run(spec.parent_run_id)
    _enqueue_missing(study, spec.n_trials)
    return study, spec


def join(study_name: str, settings: RunSettings) -> tuple[optuna.Study, TuneSpec]:
    """An existing study, unchanged: this process only works on it (another machine, a launched worker)."""
    from ecgml.tracking.store import check_tracking_uri

    check_tracking_uri()
    study = _load(_backend(settings), study_name)
    if study is None:
        raise StudyError(f"cannot join: no study named {study_name!r} in {redact(settings.storage)}")
    spec = TuneSpec.from_study(study)
    if settings.workers > 1:  # a launched worker (workers == 1) finds the cache its launcher built
        prepare_data(spec)
    return study, spec


def work(study: optuna.Study, spec: TuneSpec, settings: RunSettings, worker_index: int, echo: Echo,
         pool: WorkerPool | None = None) -> None:
    """Run the study's trials: here (one worker), or here as worker 0 and in ``settings.workers - 1`` new
    processes (``pool``: already started while the study was set up; else started now)."""
    if settings.workers == 1:
        run_worker(settings.storage, study.study_name, worker_index=worker_index,
                   heartbeat_interval=settings.heartbeat_interval, grace_period=settings.grace_period,
                   max_retry=settings.max_retry, echo=echo)
        return
    pool = pool or WorkerPool.start(settings, echo)
    pool.release(study.study_name)
    try:
        pool.work_here(study.study_name, echo)
    except BaseException:
        pool.cancel()
        raise
    for index, code in pool.wait().items():
        if code != 0:
            echo(f"worker {index} exited with status {code}; its unfinished trial, if any, was given back to the "
                 "study by heartbeat")


def finish(study: optuna.Study, spec: TuneSpec, settings: RunSettings, echo: Echo) -> TuneResult:
    """Record the outcome on the parent run, register the best model, and end the parent run."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    unfinished = sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials)
    assert spec.parent_run_id is not None
    result = TuneResult(study.study_name, spec.parent_run_id, spec.n_trials, counts, unfinished=unfinished)
    best = logger.record_best(spec.parent_run_id, study)
    if best is not None:
        result.best_number, result.best_value = best.number, best.value
        result.best_params = dict(best.params)
        result.best_run_id = best.user_attrs.get(logger.RUN_ID_ATTR)
    if unfinished:
        logger.end_parent_run(spec.parent_run_id, "KILLED")
        return result
    if settings.register and spec.register_as and result.best_run_id:
        from ecgml.tune.register import register_trial_run

        info = register_trial_run(spec.register_as, result.best_run_id, study.study_name, spec.experiment,
                                  best_number=result.best_number)
        result.registered = f"models:/{info.name}/{info.version}"
        tracking_client().set_tag(spec.parent_run_id, "ecgml.registered_as", result.registered)
    elif settings.register and spec.register_as:
        echo("no trial completed: nothing to register")
    logger.end_parent_run(spec.parent_run_id, "FINISHED")
    return result


def run_study(spec: TuneSpec | None, study_name: str | None, settings: RunSettings, *, resume_study: bool = False,
              n_trials: int | None = None, register_as: str | None = None, echo: Echo = print) -> TuneResult:
    """``ecgml tune``: create or resume the study, run its workers, finish it.

    With several workers the new worker processes start first and import while the study is set up here.
    """
    pool = WorkerPool.start(settings, echo) if settings.workers > 1 else None
    try:
        study, spec = _set_up(spec, study_name, settings, resume_study, n_trials, register_as, echo)
    except BaseException:
        if pool is not None:
            pool.cancel()
        raise
    assert spec.parent_run_id is not None
    try:
        work(study, spec, settings, 0, echo, pool)
    except BaseException:
        logger.end_parent_run(spec.parent_run_id, "KILLED")
        raise
    return finish(study, spec, settings, echo)


def _set_up(spec: TuneSpec | None, study_name: str | None, settings: RunSettings, resume_study: bool,
            n_trials: int | None, register_as: str | None, echo: Echo) -> tuple[optuna.Study, TuneSpec]:
    """The study created, or resumed, with its parent run and its slots."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        if resume_study:
            name = study_name or latest_study_name(settings)
            study, spec = resume(name, n_trials, settings, register_as)
            echo(f"resuming study {name!r}: {slots_finished(study.get_trials(deepcopy=False))} of {spec.n_trials} "
                 f"trials finished, parent run {spec.parent_run_id}")
        else:
            assert spec is not None
            name = study_name or default_study_name(spec.stage)
            study, spec = create(spec, name, settings)
            echo(f"study {name!r} in {redact(settings.storage)}: {spec.n_trials} trials over "
                 f"{', '.join(spec.space.searched)}; parent run {spec.parent_run_id}")
    return study, spec
