"""The study's sweeps: each is one parent MLflow run with a child run per setting x arm x seed.

A sweep is planned first (a list of :class:`Job`), then run in order: pretraining jobs register their
backbone (``ecgml-study-backbone``) so the fine-tuning jobs pull it by version exactly as a user's
``ecgml finetune`` would. A job whose key (configuration digest and sweep tags) finished before at the
same clean git commit, on the same data (:func:`ecgml.tracking.reuse.data_fingerprint` of both trees), is
reused, not run again (:mod:`ecgml.tracking.reuse`).

Arms: ``finetune`` (the registered backbone pretrained on the source, new head, chosen strategy),
``standalone`` (trained on the target from scratch), ``pretrain`` (the backbone itself, on the source: PTB-XL).
The target is a role (``StudyConfig.target``, default G12EC), any registered dataset source. The fraction
sweep compares the
fine-tuned model with every standalone family; the other sweeps with the standalone model of the
fine-tuned model's own family, a like-for-like comparison.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecgml.config import (
    DEFAULT_FINETUNE_STRATEGY,
    STRATEGIES,
    DataConfig,
    PrepareConfig,
    default_data_dir,
    own_label_space_sources,
)
from ecgml.data.label_space import DEFAULT_MIN_POSITIVES
from ecgml.data.sources import get_dataset_source
from ecgml.data.windows import INPUT_DOMAINS
from ecgml.defaults import (
    CACHE_RATES,
    DEFAULT_BACKBONE,
    DEFAULT_FS,
    DEFAULT_SOURCE,
    DEFAULT_SPLITS,
    DEFAULT_TARGET,
    STANDALONE_BACKBONES,
    STUDY_BACKBONE_MODEL,
)
from ecgml.experiments import schema
from ecgml.experiments.schema import FINETUNE, PRETRAIN, STANDALONE
from ecgml.tracking.reuse import STEP_KEY, data_fingerprint, get_or_run, step_key
from ecgml.train.loop import OptimConfig
from ecgml.train.pipeline import ModelConfig, TrainConfig

if TYPE_CHECKING:
    from ecgml.experiments.parallel import Beside


@dataclass(frozen=True)
class Protocol:
    """Fold choice, crops, label map and fine-tuning schedule: what moves the numbers besides the models."""

    name: str
    source_splits: str
    target_splits: str
    center_crop: bool
    label_map: str
    #: The seed protocol fine-tunes by gradual unfreezing in four 10-epoch stages.
    finetune_strategy: str | None = None
    finetune_epochs: int | None = None


PROTOCOLS: dict[str, Protocol] = {
    # PTB-XL benchmark folds, random 2.5 s crops, separate G12EC validation and test folds.
    "standard": Protocol("standard", DEFAULT_SPLITS, DEFAULT_SPLITS, center_crop=False, label_map="challenge"),
    # The original's choices, none of its bugs: PTB-XL test fold 5, G12EC fold 10 as validation *and*
    # test, centre crops only, four 10-epoch unfreezing stages, its label map.
    "seed": Protocol("seed", "1-4,6-8,10/9/5", "1-9/10/10", center_crop=True, label_map="seed",
                     finetune_strategy="gradual", finetune_epochs=40),
}

#: Defaults of each sweep's swept values (the issue's lists).
DEFAULT_VALUES: dict[str, tuple[Any, ...]] = {
    "fraction": (1.0, 0.5, 0.25, 0.1, 0.05),
    "pretrain-fraction": (1.0, 0.5, 0.25, 0.1),
    "sampling-rate": CACHE_RATES,
    "calibration": (1.0, 0.1),
    "input-domain": INPUT_DOMAINS,
    "leads": ("12", "6", "3", "2", "1"),
    "strategy": ("linear", "full", "gradual"),
}


@dataclass(frozen=True)
class StudyConfig:
    """Everything the sweeps share; the sweep adds what it varies."""

    protocol: str = "standard"
    seeds: tuple[int, ...] = (0, 1, 2)
    #: The roles: the dataset the backbone is pretrained on and the one it is fine-tuned and compared on.
    source: str = DEFAULT_SOURCE
    target: str = DEFAULT_TARGET
    source_root: Path | None = None
    target_root: Path | None = None
    #: A target with its own label space (``cinc``): codes with this many positives, or these; its tranches.
    target_min_positives: int = DEFAULT_MIN_POSITIVES
    target_classes: tuple[str, ...] = ()
    target_tranches: tuple[str, ...] = ()
    fs: int = 100
    backbone: str = DEFAULT_BACKBONE
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    standalone_backbones: tuple[str, ...] = STANDALONE_BACKBONES
    pretrain_task: str = "all"
    pretrain_epochs: int = 20
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-2
    patience: int = 5
    strategy: str = DEFAULT_FINETUNE_STRATEGY
    #: Fine-tune from this registered backbone where the sweep does not vary pretraining.
    backbone_uri: str | None = None
    experiment: str = schema.DEFAULT_STUDY_EXPERIMENT
    runs_dir: Path = field(default_factory=lambda: default_data_dir() / "runs")
    cache_dir: Path = field(default_factory=lambda: default_data_dir() / "cache")
    device: str = "auto"
    workers: int = 1
    #: Training runs side by side (worker processes, each a share of the cores); None: as many as the thread
    #: budget allows (:func:`ecgml.experiments.parallel.job_count`), 1: one after another in this process.
    jobs: int | None = None
    #: Calibrate every fine-tuned and standalone run of any sweep (the calibration sweep always does).
    calibrate_all: bool = False
    #: K-fold cross-validation of every fine-tuned and standalone job on the target's stored K folds (0: off):
    #: each job is one cross-validation parent with a child per fold (:mod:`ecgml.experiments.crossval`).
    cv: int = 0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if not self.standalone_backbones:
            raise ValueError("give at least one standalone backbone")
        if self.source != DEFAULT_SOURCE:
            raise ValueError(f"backbones are pretrained on {DEFAULT_SOURCE!r} only, not {self.source!r}")
        if self.target == self.source:
            raise ValueError(f"the target must differ from the source {self.source!r}")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {self.jobs}")
        if self.cv < 0 or self.cv == 1:
            raise ValueError(f"--cv {self.cv}: cross-validation needs at least 2 folds (0: off)")
        if self.cv and not get_dataset_source(self.target).own_label_space:
            raise ValueError(f"--cv {self.cv}: {get_dataset_source(self.target).title} has fixed classes and folds; "
                             f"cross-validation is for targets with their own label space "
                             f"({', '.join(own_label_space_sources())})")

    @property
    def protocol_spec(self) -> Protocol:
        return PROTOCOLS[self.protocol]


#: Today's setting names -> the names the default target's runs were keyed by before the target was a role.
LEGACY_SETTING_KEYS: dict[str, str] = {"target_fraction": "g12ec_fraction"}


@dataclass(frozen=True)
class Job:
    """One child run of a sweep."""

    arm: str
    setting: dict[str, Any]
    seed: int
    config: TrainConfig
    #: Fine-tuning: the key of the pretraining job whose backbone it starts from (None: ``backbone_uri``).
    pretrain_key: str | None = None
    #: Also calibrate this run (the calibration sweep).
    calibrate: bool = False

    @property
    def tags(self) -> dict[str, str]:
        return schema.sweep_tags(self.sweep, self._protocol, self.arm, self.config.model.backbone,
                                 self.public_setting, self.seed)

    @property
    def sweep(self) -> str:
        return str(self.setting.get("_sweep", ""))

    @property
    def _protocol(self) -> str:
        return str(self.setting.get("_protocol", ""))

    @property
    def key(self) -> str:
        """The step key a finished run of this job carries. For the default target it is computed with the
        setting names older stores used (``g12ec_fraction``), so their finished runs are still reused."""
        setting = self.public_setting
        if self.config.data.data.source == DEFAULT_TARGET:
            setting = {LEGACY_SETTING_KEYS.get(k, k): v for k, v in setting.items()}
        return step_key(f"{self.arm}:{self.sweep}", {"digest": self.config.digest(), "tags": setting,
                                                     "pretrain": self.pretrain_key, "protocol": self._protocol})

    @property
    def public_setting(self) -> dict[str, Any]:
        return {k: v for k, v in self.setting.items() if not k.startswith("_")}


def _data(study: StudyConfig, role: str, *, fs: int | None = None, leads: str = "12", task: str | None = None
          ) -> PrepareConfig:
    """The data of one role (``source`` or ``target``) as the study's protocol reads it."""
    proto = study.protocol_spec
    is_source = role == "source"
    name = study.source if is_source else study.target
    entry = get_dataset_source(name)
    root = (study.source_root if is_source else study.target_root) or default_data_dir() / "synthetic" / name
    own = {} if is_source or not entry.own_label_space else {
        "min_positives": study.target_min_positives, "classes": study.target_classes,
        "tranches": study.target_tranches, "cv": study.cv, "cv_fold": 1 if study.cv else 0}
    return PrepareConfig(
        data=DataConfig(source=name, root=Path(root), fs=fs or study.fs, task=task or entry.default_task,
                        label_map=proto.label_map, splits=proto.source_splits if is_source else proto.target_splits,
                        **own),
        leads=leads, cache_dir=study.cache_dir, workers=study.workers)


def _train(study: StudyConfig, kind: str, data: PrepareConfig, *, backbone: str, seed: int, fraction: float = 1.0,
           strategy: str | None = None, input_domain: str = "time") -> TrainConfig:
    proto = study.protocol_spec
    epochs = study.pretrain_epochs if kind == PRETRAIN else study.epochs
    if kind == FINETUNE and proto.finetune_epochs:
        epochs = proto.finetune_epochs
    strategy = strategy or (proto.finetune_strategy if kind == FINETUNE else None) or study.strategy
    kwargs = study.backbone_kwargs if backbone == study.backbone else {}
    return TrainConfig(
        kind=kind, data=data, model=ModelConfig(backbone, dict(kwargs)),
        optim=OptimConfig(epochs=epochs, batch_size=study.batch_size, lr=study.lr, patience=study.patience,
                          strategy=strategy if kind == FINETUNE else "full"),
        fraction=fraction, seed=seed, device=study.device, center_crop=proto.center_crop,
        experiment=study.experiment, runs_dir=study.runs_dir, input_domain=input_domain,
    )


def pretrain_config(study: StudyConfig, *, fs: int | None = None, leads: str = "12", fraction: float = 1.0,
                    domain: str = "time") -> TrainConfig:
    """The study's PTB-XL pretraining of its backbone (seed 0) for these inputs, as a sweep's pretraining job has it."""
    data = _data(study, "source", fs=fs, leads=leads, task=study.pretrain_task)
    return _train(study, PRETRAIN, data, backbone=study.backbone, seed=0, fraction=fraction, input_domain=domain)


def finetune_config(study: StudyConfig, *, fraction: float, seed: int, init_uri: str | None = None,
                    fs: int | None = None, leads: str = "12", strategy: str | None = None,
                    domain: str = "time") -> TrainConfig:
    """The study's fine-tuning of its backbone on the target (from ``init_uri``): what a sweep's fine-tuning job
    trains."""
    data = _data(study, "target", fs=fs, leads=leads)
    return replace(_train(study, FINETUNE, data, backbone=study.backbone, seed=seed, fraction=fraction,
                          strategy=strategy, input_domain=domain), init_uri=init_uri)


def data_fingerprints(study: StudyConfig) -> dict[str, str]:
    """:func:`ecgml.tracking.reuse.data_fingerprint` of the study's source and target trees (keyed by dataset
    name), for every job's key."""
    return {_data(study, role).data.source: data_fingerprint(_data(study, role).data.root)
            for role in ("source", "target")}


def plan_sweep(name: str, study: StudyConfig, values: Sequence[Any] | None = None, *,
               backbone_pending: bool = False) -> list[Job]:
    """The child runs of sweep ``name``: pretraining jobs first, then fine-tuning and standalone jobs.

    ``backbone_pending``: the study's backbone is being trained beside the sweep (``ecgml main``) and will be
    given to the fine-tuning jobs, as ``backbone_uri`` is, so the sweep pretrains none of its own for it."""
    if name not in DEFAULT_VALUES:
        raise ValueError(f"unknown sweep {name!r}; choose one of {', '.join(DEFAULT_VALUES)}")
    if name == "calibration" and study.cv:
        raise ValueError(f"--cv {study.cv}: the calibration sweep calibrates each run's model on its validation "
                         "split, and a cross-validation has neither (one model per fold, each fold's validation "
                         "split its test fold): run it without --cv")
    values = tuple(values) if values else DEFAULT_VALUES[name]
    marks = {"_sweep": name, "_protocol": study.protocol}
    jobs: list[Job] = []
    pretrained: dict[str, Job] = {}

    def pretrain(setting: dict[str, Any], *, fs: int | None = None, leads: str = "12", fraction: float = 1.0,
                 domain: str = "time") -> str | None:
        """The pretraining job for these inputs (one per distinct input, seed 0), or None for backbone_uri."""
        given = study.backbone_uri or backbone_pending
        if given and fs is None and leads == "12" and fraction == 1.0 and domain == "time":
            return None
        job = Job(PRETRAIN, {**marks, **setting}, 0, pretrain_config(study, fs=fs, leads=leads, fraction=fraction,
                                                                        domain=domain))
        if job.key not in pretrained:
            pretrained[job.key] = job
            jobs.append(job)
        return job.key

    def compare(setting: dict[str, Any], *, fraction: float, families: Sequence[str], fs: int | None = None,
                leads: str = "12", pretrain_key: str | None, strategy: str | None = None, domain: str = "time",
                calibrate: bool = False, standalone_setting: dict[str, Any] | None = None) -> None:
        data = _data(study, "target", fs=fs, leads=leads)
        calibrate = calibrate or study.calibrate_all
        for seed in study.seeds:
            jobs.append(Job(FINETUNE, {**marks, **setting}, seed,
                            _train(study, FINETUNE, data, backbone=study.backbone, seed=seed, fraction=fraction,
                                   strategy=strategy, input_domain=domain),
                            pretrain_key=pretrain_key, calibrate=calibrate))
            for family in families:
                jobs.append(Job(STANDALONE, {**marks, **(standalone_setting or setting)}, seed,
                                _train(study, STANDALONE, data, backbone=family, seed=seed, fraction=fraction,
                                       input_domain=domain), calibrate=calibrate))

    own_family = (study.backbone,)
    if name == "fraction":
        key = pretrain({})
        for fraction in values:
            compare({"target_fraction": float(fraction)}, fraction=float(fraction), families=study.standalone_backbones,
                    pretrain_key=key)
    elif name == "calibration":
        key = pretrain({})
        for fraction in values:
            compare({"target_fraction": float(fraction)}, fraction=float(fraction), families=own_family,
                    pretrain_key=key, calibrate=True)
    elif name == "pretrain-fraction":
        for i, fraction in enumerate(values):
            key = pretrain({"ptbxl_fraction": float(fraction)}, fraction=float(fraction))
            setting = {"ptbxl_fraction": float(fraction), "target_fraction": 0.1}
            # the standalone baseline does not depend on the PTB-XL fraction: train it once
            compare(setting, fraction=0.1, families=own_family if i == 0 else (), pretrain_key=key,
                    standalone_setting={"target_fraction": 0.1})
    elif name == "sampling-rate":
        for fs in values:
            key = pretrain({"fs": int(fs)}, fs=int(fs))
            compare({"fs": int(fs)}, fraction=1.0, families=own_family, fs=int(fs), pretrain_key=key)
    elif name == "leads":
        for leads in values:
            key = pretrain({"leads": str(leads)}, leads=str(leads))
            compare({"leads": str(leads)}, fraction=1.0, families=own_family, leads=str(leads), pretrain_key=key)
    elif name == "input-domain":
        for domain in values:
            key = pretrain({"domain": str(domain)}, domain=str(domain))
            compare({"domain": str(domain)}, fraction=1.0, families=own_family, pretrain_key=key, domain=str(domain))
    elif name == "strategy":
        key = pretrain({})
        for fraction in (0.1, 1.0):
            for i, strategy in enumerate(values):
                compare({"strategy": str(strategy), "target_fraction": fraction}, fraction=fraction,
                        families=own_family if i == 0 else (), pretrain_key=key, strategy=str(strategy),
                        standalone_setting={"target_fraction": fraction})
    return jobs


@dataclass
class JobResult:
    job: Job
    run_id: str
    test_macro_auc: float
    reused: bool
    seconds: float


def _say(text: str) -> None:
    print(text, flush=True)


def run_sweep(name: str, study: StudyConfig, values: Sequence[Any] | None = None, *,
              parent_run_id: str | None = None, say: Callable[[str], None] = _say,
              beside: Beside | None = None) -> tuple[str, list[JobResult]]:
    """Plan and run a sweep under one parent run; returns the sweep run's id and every child's result.

    ``beside`` (:class:`ecgml.experiments.parallel.Beside`): the sweep runs beside work of this process, which
    registers the backbone its fine-tuning jobs start from (in place of ``study.backbone_uri``)."""
    import mlflow

    from ecgml.tracking.runs import git_commit, log_json, open_run
    from ecgml.tracking.store import check_tracking_uri

    check_tracking_uri()
    jobs = plan_sweep(name, study, values, backbone_pending=beside is not None)
    check_cross_validations(jobs)
    commit = git_commit(Path(__file__).resolve().parent)
    tags = {schema.KIND: "sweep", schema.SWEEP: name, schema.PROTOCOL: study.protocol, "git_commit": commit}
    say(f"sweep {name} ({study.protocol} protocol): {len(jobs)} runs, seeds {list(study.seeds)}")
    if study.cv:
        say(f"--cv {study.cv}: every fine-tuned and standalone run is a {study.cv}-fold cross-validation (a parent "
            "run with a child per fold; its test macro AUC is the pooled out-of-fold one)"
            + ("; not calibrated: a cross-validation has no single model, and each fold's validation split is its "
               "test fold" if any(j.calibrate for j in jobs) else ""))
    with open_run(study.experiment, run_name=f"sweep-{name}-{study.protocol}", tags=tags,
                  parent_run_id=parent_run_id) as run:
        sweep_id = run.info.run_id
        mlflow.log_params({"sweep": name, "protocol": study.protocol, "values": json.dumps(list(values or [])),
                           "seeds": json.dumps(list(study.seeds)), "backbone": study.backbone, "jobs": len(jobs)})
        results = _run_jobs(jobs, study, sweep_id, commit, say, beside)
        log_json([{"run_id": r.run_id, "arm": r.job.arm, "setting": r.job.public_setting, "seed": r.job.seed,
                   "backbone": r.job.config.model.backbone, "test_macro_auc": r.test_macro_auc, "reused": r.reused,
                   "seconds": r.seconds} for r in results], "children.json")
        mlflow.log_metrics({"runs": len(results), "reused": sum(r.reused for r in results),
                            "seconds": sum(r.seconds for r in results)})
        _log_comparison(name, study, results)
        if study.cv:
            _log_fold_comparisons(study, results, say)
    return sweep_id, results


def check_cross_validations(jobs: Sequence[Job]) -> None:
    """Refuse a ``--cv K`` the target cannot fill before anything trains (each distinct target data once)."""
    from ecgml.experiments.crossval import check_cross_validation

    checked: set[DataConfig] = set()
    for job in jobs:
        data = job.config.data.data
        if data.cv and replace(data, fs=DEFAULT_FS) not in checked:
            checked.add(replace(data, fs=DEFAULT_FS))  # the rate changes no label
            check_cross_validation(job.config)


def _log_fold_comparisons(study: StudyConfig, results: list[JobResult], say: Callable[[str], None]) -> None:
    """Say the fold-by-fold comparisons of the sweep's cross-validated arms, and log them to the sweep run as
    ``comparison/cv_folds.csv``."""
    import tempfile

    import mlflow

    from ecgml.experiments.analysis import Datasets
    from ecgml.experiments.cv_sweep import compare_sweep_runs

    rows = [{"run_id": r.run_id, "arm": r.job.arm, "model": r.job.config.model.backbone,
             "setting": r.job.public_setting, "seed": r.job.seed, "cv": r.job.config.data.data.cv} for r in results]
    table = compare_sweep_runs(rows, target=Datasets.of(study.source, study.target).target, say=say)
    if table.empty:
        return
    with tempfile.TemporaryDirectory() as folder:
        table.to_csv(Path(folder) / "cv_folds.csv", index=False)
        mlflow.log_artifacts(folder, artifact_path="comparison")


def _log_comparison(name: str, study: StudyConfig, results: list[JobResult]) -> None:
    """The sweep run's table and chart of test AUC per setting and model, and its description."""
    import tempfile

    import mlflow

    from ecgml.experiments.sweep_summary import comparison_table, plot_comparison
    from ecgml.tracking.runs import set_description

    table = comparison_table({"arm": r.job.arm, "backbone": r.job.config.model.backbone,
                              "setting": r.job.public_setting, "seed": r.job.seed,
                              "test_macro_auc": r.test_macro_auc} for r in results)
    with tempfile.TemporaryDirectory() as folder:
        table.to_csv(Path(folder) / "comparison.csv", index=False)
        if not table.empty:
            plot_comparison(table, Path(folder) / "comparison.png", f"sweep {name} ({study.protocol} protocol)")
        mlflow.log_artifacts(folder, artifact_path="comparison")
    set_description(
        f"Sweep **{name}** ({study.protocol} protocol), seeds {', '.join(map(str, study.seeds))}: one child run "
        "per setting, arm and seed, named after them. `comparison/comparison.png` and `.csv` hold test macro "
        "AUC per setting and model (mean and spread over seeds). Compare children in the runs table with e.g. "
        "`params.arm = 'finetune'` or `params.fraction = '0.1'`.", run_id=mlflow.active_run().info.run_id)
    set_description("The ecgml study: one parent run per sweep (`ecgml.kind = sweep`), its children one per "
                    "setting, arm and seed; calibrations are children of the run they calibrate. See the "
                    "README's filter strings for common comparisons.", experiment=study.experiment)


@dataclass(frozen=True)
class JobDone:
    """What running (or reusing) one job gave, wherever it ran."""

    run_id: str
    test_macro_auc: float
    reused: bool
    seconds: float


def job_label(i: int, n: int, job: Job) -> str:
    """``[i/n] arm backbone {setting} seed s``: how the sweep's log names a job (and its K when cross-validated)."""
    k = job.config.data.data.cv
    return (f"[{i}/{n}] {job.arm} {job.config.model.backbone} {json.dumps(job.public_setting)} seed {job.seed}"
            + (f" ({k}-fold cross-validation, pooled out-of-fold)" if k else ""))


def done_line(label: str, done: JobDone) -> str:
    return f"{label}: test macro AUC {done.test_macro_auc:.3f}" + (
        " (reused)" if done.reused else f" ({done.seconds:.0f} s)")


def run_job(job: Job, run_name: str, init_uri: str | None, study: StudyConfig, sweep_id: str, commit: str,
            data: dict[str, str]) -> JobDone:
    """Train (or reuse) one job as a child of the sweep run, and calibrate it in a child of its own if asked.
    A job of a cross-validated sweep (``--cv K``) is one cross-validation (:mod:`ecgml.experiments.crossval`): a
    parent child of the sweep run, tagged as the job, with a child per fold; it is never calibrated (no single
    model, no validation split apart from the test fold).

    The same in this process and in a worker process of :mod:`ecgml.experiments.parallel`.
    """
    from ecgml.experiments.crossval import run_cross_validation
    from ecgml.tracking.runs import log_params_once
    from ecgml.train.runner import run_training

    start = time.perf_counter()
    config = replace(job.config, run_name=run_name)
    if job.arm == FINETUNE:
        config = replace(config, init_uri=init_uri)
    key = _job_step_key(job, init_uri, data)
    # the sweep's commit, not one read again where the job runs: reuse finds the run by it
    tags = {**job.tags, STEP_KEY: key, "git_commit": commit}
    trained: dict[str, float] = {}

    cross_validated = bool(config.data.data.cv)

    def train() -> str:
        if cross_validated:
            cv = run_cross_validation(config, parent_run_id=sweep_id, extra_tags=tags, progress=False,
                                      say=lambda _: None)
            run_id, trained["auc"] = cv.run_id, float(cv.metrics["test_macro_auc"])
        else:
            outcome = run_training(config, parent_run_id=sweep_id, extra_tags=tags, progress=False)
            run_id, trained["auc"] = str(outcome.run_id), outcome.test_macro_auc
        log_params_once({"sweep": job.sweep, "protocol": job._protocol, **job.public_setting}, run_id=run_id)
        return run_id

    step = get_or_run(study.experiment, key, commit, train)
    auc = step.metric("test_macro_auc") if step.reused else trained["auc"]
    if job.calibrate and not cross_validated:
        _calibrate(step.run_id, run_name, study, commit, tags)
    return JobDone(step.run_id, auc, step.reused, time.perf_counter() - start)


def _job_step_key(job: Job, init_uri: str | None, data: dict[str, str]) -> str:
    """The step key of a job's run: the job's key, the tree it reads and the backbone version it starts from
    (changed data retrains the jobs that read it, and a retrained backbone, a new version, retrains the
    fine-tuning that starts from it)."""
    init = init_uri if job.arm == FINETUNE else job.config.init_uri
    return step_key(f"job:{job.key}", {"data": data[job.config.data.data.source], "init": init})


def finished_job(job: Job, init_uri: str | None, study: StudyConfig, commit: str, data: dict[str, str]
                 ) -> JobDone | None:
    """The job's finished run at this commit, with its calibration when it is to be calibrated, or None.

    Why: a sweep run again (a second ``ecgml main``) reuses every job; looking them up in the sweep's own process
    spares starting worker processes (seconds of imports each) only to find them."""
    from ecgml.tracking.reuse import Step, find_finished

    start = time.perf_counter()
    found = find_finished(study.experiment, _job_step_key(job, init_uri, data), commit)
    if found is None:
        return None
    run_id = str(found.info.run_id)
    if job.calibrate and not job.config.data.data.cv and find_finished(
            study.experiment, step_key("calibrate", {"run": run_id}), commit) is None:
        return None
    return JobDone(run_id, Step(run_id, True, found).metric("test_macro_auc"), True, time.perf_counter() - start)


def _run_jobs(jobs: list[Job], study: StudyConfig, sweep_id: str, commit: str,
              say: Callable[[str], None], beside: Beside | None = None) -> list[JobResult]:
    from ecgml.experiments.parallel import job_count, run_jobs_side_by_side
    from ecgml.tracking.run_names import unique_names

    data = data_fingerprints(study)
    names = unique_names(job_run_name(job) for job in jobs)
    workers = min(len(beside.budgets), len(jobs)) if beside is not None else job_count(study.jobs, len(jobs))
    if workers > 1 or beside is not None:
        return run_jobs_side_by_side(jobs, names, study, sweep_id, commit, data, say, max(workers, 1), beside)
    backbones: dict[str, str] = {}
    results: list[JobResult] = []
    for i, (job, run_name) in enumerate(zip(jobs, names, strict=True), 1):
        init_uri = (backbones[job.pretrain_key] if job.pretrain_key else study.backbone_uri) \
            if job.arm == FINETUNE else None
        done = run_job(job, run_name, init_uri, study, sweep_id, commit, data)
        if job.arm == PRETRAIN:
            backbones[job.key] = registered_backbone(done.run_id, job)
        say(done_line(job_label(i, len(jobs), job), done))
        results.append(JobResult(job, done.run_id, done.test_macro_auc, done.reused, done.seconds))
    return results


def job_run_name(job: Job) -> str:
    """The run name of a job: its training run's, with the sweep's extras; a cross-validation's with its K."""
    from ecgml.experiments.crossval import cv_run_name
    from ecgml.tracking.run_names import config_run_name, sweep_extras

    name = config_run_name(job.config, sweep_extras(job.public_setting))
    k = job.config.data.data.cv
    return cv_run_name(name, k) if k else name


def registered_backbone(run_id: str, job: Job) -> str:
    """The study-backbone version of a pretraining run (registered once, found again on reuse)."""
    from ecgml.tracking.registry import register_run, version_of_run

    version = version_of_run(STUDY_BACKBONE_MODEL, run_id)
    if version is None:
        version = register_run(run_id, STUDY_BACKBONE_MODEL, selected_by=f"sweep {job.sweep}",
                               extra_tags={k: v for k, v in job.tags.items() if k.startswith("ecgml.")}).version
    return f"models:/{STUDY_BACKBONE_MODEL}/{version}"


def _calibrate(run_id: str, run_name: str, study: StudyConfig, commit: str, tags: dict[str, str]) -> None:
    """Calibrate a training run in a nested child run of it: its results sit under the run they calibrate."""
    from ecgml.posttrain.calibrate import calibrate_in_child
    from ecgml.tracking.run_names import calibration_run_name

    key = step_key("calibrate", {"run": run_id})
    get_or_run(study.experiment, key, commit, lambda: calibrate_in_child(
        f"runs:/{run_id}", runs_dir=study.runs_dir, extra_tags={**tags, STEP_KEY: key},
        run_name=calibration_run_name(run_name)).run_id)


def parse_values(name: str, text: str | None) -> tuple[Any, ...] | None:
    """``--values 1,0.1`` as the sweep's value type."""
    if not text:
        return None
    items = [x.strip() for x in text.split(",") if x.strip()]
    caster: Callable[[str], Any] = {"fraction": float, "pretrain-fraction": float, "calibration": float,
                                    "sampling-rate": int}.get(name, str)
    try:
        return tuple(caster(x) for x in items)
    except ValueError:
        raise ValueError(f"--values {text!r} do not fit sweep {name!r}") from None


def check_values(name: str, values: Sequence[Any]) -> None:
    """Bad sweep values fail before any run starts."""
    if name in ("fraction", "pretrain-fraction", "calibration") and not all(0 < v <= 1 for v in values):
        raise ValueError(f"sweep {name}: fractions must be in (0, 1], got {list(values)}")
    if name == "sampling-rate" and not set(values) <= set(CACHE_RATES):
        raise ValueError(f"sweep sampling-rate: rates must be among {', '.join(map(str, CACHE_RATES))} Hz, "
                         f"got {list(values)}")
    if name == "strategy" and not set(values) <= set(STRATEGIES):
        raise ValueError(f"sweep strategy: strategies are {', '.join(STRATEGIES)}, got {list(values)}")
    if name == "input-domain" and not set(values) <= set(INPUT_DOMAINS):
        raise ValueError(f"sweep input-domain: domains are {', '.join(INPUT_DOMAINS)}")
