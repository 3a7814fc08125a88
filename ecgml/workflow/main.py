"""The main job (``ecgml main``, ``mlflow run .``): a compact version of the whole study on synthetic data.

One parent run (``ecgml.kind = main``) with a child run per step (the calibration a child of the fine-tuning run
it calibrates, the sweep's runs children of the sweep run):

1. data      synthetic PTB-XL- and target-shaped trees (kept if present), their caches and statistics
2. pretrain  the backbone on PTB-XL (the source)
3. register  it as a new version of ``ecgml-ptbxl-backbone``, promoted to ``production``
4. finetune  ``models:/ecgml-ptbxl-backbone/<that version>`` on the target -> ``ecgml-<target>-classifier``
5. calibrate temperature scaling of that classifier -> a new version, promoted to ``production``
6. evaluate  ``models:/ecgml-<target>-classifier@production`` as served, on the target's test fold
7. sweep     fine-tuned vs standalone (every family) at two or more target fractions, several seeds,
             each run calibrated; it starts beside steps 2-6 (its standalone runs at once, its fine-tuned
             runs once step 3 registered the backbone) wherever two or more runs fit side by side
8. report    the Markdown report with plots, written to a folder and logged

The target is a role (``--target``, default G12EC): any registered dataset source with a synthetic tree of its
shape (:data:`SYNTHETIC_SHAPES`).

A step whose key (entry point and parameters) already finished at the same clean git commit is reused
instead of run again (:mod:`ecgml.tracking.reuse`); every key holds the fingerprints of both data trees, so
changed data retrains what depends on it. The parent records which run served each step.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.sources import get_dataset_source
from ecgml.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_BACKBONE_MODEL,
    DEFAULT_SOURCE,
    DEFAULT_TARGET,
    STANDALONE_BACKBONES,
    classifier_model_name,
)
from ecgml.experiments import schema
from ecgml.runtime.console import StepCounter
from ecgml.tracking.reuse import STEP_KEY, Step, data_fingerprint, get_or_run, step_key

if TYPE_CHECKING:
    from ecgml.experiments.parallel import Beside

#: Dataset -> the shape of the synthetic tree main writes for it (:mod:`ecgml.data.synth`). A Challenge collection
#: (``cinc``) reads the synthetic Georgia tree, which is written in the Challenge's format with SNOMED CT codes.
SYNTHETIC_SHAPES: dict[str, str] = {"ptbxl": "ptbxl", "g12ec": "g12ec", "cinc": "cpsc"}
#: The targets ``ecgml main --target`` takes: every dataset with a synthetic shape but the source.
MAIN_TARGETS: tuple[str, ...] = tuple(name for name in SYNTHETIC_SHAPES if name != DEFAULT_SOURCE)


@dataclass(frozen=True)
class MainConfig:
    """The compact study; defaults sized to finish in minutes on 2 CPU cores.

    4,000 target records at fractions 0.25 and 0.025 train on 800 and 80 records, as 1,000 records at 1.0
    and 0.1 would, but test on four times as many (about 270 labelled), so paired intervals are narrow
    enough to tell a gap from noise.
    """

    data_dir: Path
    ptbxl_records: int = 2000
    #: The dataset fine-tuned and compared on (a role: any source with a synthetic shape) and its tree's size.
    target: str = DEFAULT_TARGET
    target_records: int = 4000
    data_seed: int = 0
    workers: int = 0
    fractions: tuple[float, ...] = (0.25, 0.025)
    seeds: tuple[int, ...] = (0, 1, 2)
    backbone: str = DEFAULT_BACKBONE
    standalone_backbones: tuple[str, ...] = STANDALONE_BACKBONES
    pretrain_epochs: int = 15
    epochs: int = 15
    batch_size: int = 64
    experiment: str = schema.DEFAULT_STUDY_EXPERIMENT
    report_dir: Path = field(default_factory=lambda: Path("report"))
    device: str = "auto"
    #: The sweep's runs side by side (``--jobs``; None: as many as the thread budget allows).
    jobs: int | None = None

    def __post_init__(self) -> None:
        if self.target not in MAIN_TARGETS:
            raise ValueError(f"main runs on synthetic data: --target {self.target!r} has no synthetic tree; "
                             f"choose one of {', '.join(MAIN_TARGETS)}")
        if len(self.fractions) < 2 or not all(0 < f <= 1 for f in self.fractions):
            raise ValueError(f"give two or more {self.target_title} fractions in (0, 1], not {list(self.fractions)}")
        if not self.seeds:
            raise ValueError("give at least one seed")

    @property
    def target_title(self) -> str:
        """How sentences name the target (its source entry's title: ``G12EC``)."""
        return get_dataset_source(self.target).title

    @property
    def classifier_model(self) -> str:
        """The registered name of the fine-tuned classifier: ``ecgml-<target>-classifier``."""
        return classifier_model_name(self.target)


@dataclass
class MainOutcome:
    run_id: str
    steps: dict[str, str]
    report: Path
    reused: list[str]
    seconds: float


def _say(text: str) -> None:
    print(text, flush=True)


#: The steps in the order they run, as the console counts them (``[4/9] finetune``).
MAIN_STEPS = ("data", "pretrain", "register", "finetune", "calibrate", "promote", "evaluate", "sweep", "report")


class _Steps:
    """Runs (or reuses) each step as a child run of the main run (the calibration under the fine-tuning run it
    calibrates) and remembers which run served it."""

    def __init__(self, experiment: str, parent: str, commit: str, say: Callable[[str], None]) -> None:
        self.experiment, self.parent, self.commit, self.say = experiment, parent, commit, say
        self.runs: dict[str, str] = {}
        self.reused: list[str] = []
        #: :func:`ecgml.tracking.reuse.data_fingerprint` of each tree, part of every step's key (set by the data step)
        self.data: dict[str, str] = {}
        self.counter = StepCounter(len(MAIN_STEPS), say)

    def begin(self, name: str, detail: str = "") -> None:
        """The step's header line: its number, what it does, the job's elapsed time."""
        self.counter.begin(name, detail)

    def run(self, name: str, params: dict[str, Any], action: Callable[[str], str], reads: tuple[str, ...] = ()
            ) -> Step:
        """The run serving step ``name``: a finished one whose key (``params`` and the fingerprints of the trees it
        ``reads``) matches at this commit, else ``action(key)``, which runs the step, tags its run with the key and
        returns its id. What a step depends on through another run (a backbone version, a model) is in ``params``."""
        key = step_key(name, {**params, "data": {source: self.data[source] for source in reads}})
        step = get_or_run(self.experiment, key, self.commit, lambda: action(key))
        self.runs[name] = step.run_id
        if step.reused:
            self.say(f"{name}: reusing finished run {step.run_id}")
            self.reused.append(name)
        return step

    def light(self, name: str, key: str, tags: dict[str, str], params: dict[str, Any],
              documents: dict[str, Any] | None = None, folder: Path | None = None) -> str:
        """A child run for a step that trains nothing (data, register, promote, report): what it did."""
        import mlflow

        from ecgml.tracking.runs import log_json, open_run

        with open_run(self.experiment, run_name=name, system_metrics=False, parent_run_id=self.parent,
                      tags={schema.KIND: name, STEP_KEY: key, "git_commit": self.commit, **tags}) as run:
            mlflow.log_params(params)
            for artifact, doc in (documents or {}).items():
                log_json(doc, artifact)
            if folder is not None:
                mlflow.log_artifacts(str(folder), artifact_path=folder.name)
            self.runs[name] = run.info.run_id
            return run.info.run_id


def run_main(config: MainConfig, *, say: Callable[[str], None] = _say) -> MainOutcome:
    """Run the compact study; returns the main run's id, the run of each step and the report path."""
    import mlflow

    from ecgml.tracking.runs import git_commit, log_json, open_run, produced_text
    from ecgml.tracking.store import check_tracking_uri

    check_tracking_uri()
    start = time.perf_counter()
    commit = git_commit(Path(__file__).resolve().parent)
    with open_run(config.experiment, run_name="main", tags={schema.KIND: "main", "git_commit": commit}) as run:
        # Under `mlflow run` the main run is the one it started, in its experiment: the children follow it
        # there, since the UI nests runs within one experiment only.
        config = replace(config, experiment=mlflow.get_experiment(run.info.experiment_id).name)
        _describe(config, run.info.run_id)
        steps = _Steps(config.experiment, run.info.run_id, commit, say)
        mlflow.log_params({"ptbxl_records": config.ptbxl_records, "target": config.target,
                           "target_records": config.target_records,
                           "fractions": ",".join(map(str, config.fractions)), "seeds": ",".join(map(str, config.seeds)),
                           "backbone": config.backbone, "epochs": config.epochs,
                           "pretrain_epochs": config.pretrain_epochs})
        roots = _data_step(config, steps, say)
        beside = _plan_beside(config, roots)
        if beside is None:  # one process (--jobs 1, one core): each step after the other
            backbone_uri = _pretrain_and_register(config, roots, steps, say)
            classifier_uri = _finetune_calibrate_evaluate(config, roots, backbone_uri, steps, say)
            _sweep(config, roots, backbone_uri, steps, say)
        else:
            backbone_uri, classifier_uri = _chain_beside_sweep(config, roots, steps, say, beside)
        report = _report(config, steps, say)
        seconds = time.perf_counter() - start
        mlflow.set_tags({f"ecgml.step.{name}": run_id for name, run_id in steps.runs.items()})
        mlflow.set_tag("ecgml.classifier", classifier_uri)
        mlflow.log_metric("seconds", seconds)
        log_json({"steps": steps.runs, "reused": steps.reused, "backbone": backbone_uri,
                  "classifier": classifier_uri, "report": str(report)}, "main.json")
        say(f"\nreport: {report.resolve()}")
        say(produced_text(run.info.run_id, classifier_uri))
        say(f"main run {run.info.run_id} finished in {seconds / 60:.1f} min ({len(steps.reused)} steps reused)")
        return MainOutcome(run.info.run_id, steps.runs, report, steps.reused, seconds)


def _describe(config: MainConfig, run_id: str) -> None:
    """The main run's description in the MLflow UI: what its children are and how to compare them."""
    from ecgml.tracking.runs import set_description

    fractions, seeds = ", ".join(map(str, config.fractions)), ", ".join(map(str, config.seeds))
    set_description(
        f"The compact study (`ecgml main`) on synthetic data: one child run per step (data, pretrain, register, "
        f"finetune with its calibration nested under it, promote, evaluate, sweep, report). Tags `ecgml.step.<step>` "
        f"and `main.json` name the run that served each step; a reused step's run stays under the main run that "
        f"first ran it. The `sweep` child compares fine-tuned {config.backbone} with standalone "
        f"{', '.join(config.standalone_backbones)} at {config.target_title} fractions {fractions}, seeds {seeds}: each "
        "training run is its child, with its calibration nested under it; its `comparison/comparison.png` plots test "
        "macro AUC against fraction per model. In the runs table, `tags.`ecgml.sweep` = 'fraction' and "
        "tags.`ecgml.kind` != 'calibrate'` lists the sweep's training runs (compare them by `params.arm`, "
        "`params.family`, `params.fraction`, `params.seed`); the `report` child holds the Markdown report.",
        run_id=run_id)


def _data_step(config: MainConfig, steps: _Steps, say: Callable[[str], None]) -> dict[str, Path]:
    """Synthetic trees (written once), caches and statistics, logged by a ``data`` child run."""
    from ecgml.data.prepare import prepare
    from ecgml.data.stats import dataset_stats

    synthetic = config.data_dir / "synthetic"
    source, target = DEFAULT_SOURCE, config.target
    # keyed by dataset; each tree lies in the folder of its shape (a cinc target reads the synthetic Georgia tree)
    roots = {source: synthetic / SYNTHETIC_SHAPES[source], target: synthetic / SYNTHETIC_SHAPES[target]}
    workers = config.workers or os.cpu_count() or 1
    steps.begin("data", f"synthetic trees, caches and statistics under {config.data_dir}")
    _synthetic_tree(SYNTHETIC_SHAPES[source], roots[source], config.ptbxl_records, config.data_seed, workers, say)
    _synthetic_tree(SYNTHETIC_SHAPES[target], roots[target], config.target_records, config.data_seed + 1, workers,
                    say)
    steps.data = {name: data_fingerprint(root) for name, root in roots.items()}

    def build(key: str) -> str:
        stats = {}
        for name, root in roots.items():
            # the target as the study reads it (its default task: G12EC's shared classes, cinc's own codes)
            task = {"task": get_dataset_source(name).default_task} if name == target else {}
            prepared = prepare(PrepareConfig(DataConfig(source=name, root=root, fs=100, **task),
                                             cache_dir=config.data_dir / "cache", workers=workers))
            stats[name] = dataset_stats(prepared)
        return steps.light("data", key, {}, {f"{name}_root": root for name, root in roots.items()}
                           | {f"{k}_data": v for k, v in steps.data.items()},
                           {f"stats_{name}.json": doc for name, doc in stats.items()})

    steps.run("data", {"roots": {k: str(v.resolve()) for k, v in roots.items()},
                       "records": [config.ptbxl_records, config.target_records], "seed": config.data_seed}, build,
              reads=(source, target))
    return roots


class DataTreeError(RuntimeError):
    """A folder where main keeps a synthetic tree holds something else; the message says what and what to do."""


def _synthetic_tree(source: str, root: Path, records: int, seed: int, workers: int, say: Callable[[str], None]
                    ) -> None:
    """Write the synthetic tree ``source`` under ``root`` unless the one there was generated with this config.

    A tree whose ``SYNTH.json`` records other options (records, seed, rates, generator version) is deleted and
    written again, saying which options differ: the folder is main's own. A non-empty folder without
    ``SYNTH.json`` (an interrupted generation, or files put there by hand) is refused rather than deleted.
    """
    import json
    import shutil

    from ecgml.data.synth import generate_cpsc, generate_g12ec, generate_ptbxl
    from ecgml.data.synth.config import SynthConfig

    options: dict[str, Any] = {"ptbxl": {"sampling_rates": (100, 500)}, "cpsc": {"dx_dialect": "abbreviation"}}.get(
        source, {})
    wanted = json.loads(json.dumps(SynthConfig.for_source(source, records, seed, **options).to_dict(), default=str))
    marker = root / "SYNTH.json"
    if marker.is_file():
        found = json.loads(marker.read_text()).get("config", {})
        differ = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
        if not differ:
            return
        say(f"data: {root} was generated with other options ("
            + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(differ.items()))
            + "): deleting it and writing it again")
        shutil.rmtree(root)
    elif root.is_dir() and any(root.iterdir()):
        raise DataTreeError(f"{root} is not empty but has no SYNTH.json (an interrupted generation, or other files): "
                            f"delete it to let ecgml main write a {records}-record synthetic {source} tree there, "
                            "or give another --data-dir")
    say(f"data: writing {records} synthetic {source}-shaped records to {root}")
    generate = {"ptbxl": generate_ptbxl, "g12ec": generate_g12ec, "cpsc": generate_cpsc}[source]
    generate(root, records, seed, workers=workers, **options)


def _study(config: MainConfig, roots: dict[str, Path], **overrides: Any) -> Any:
    from ecgml.experiments.study import StudyConfig

    base = StudyConfig(seeds=config.seeds, target=config.target, source_root=roots[DEFAULT_SOURCE],
                       target_root=roots[config.target],
                       backbone=config.backbone, standalone_backbones=config.standalone_backbones,
                       pretrain_epochs=config.pretrain_epochs, epochs=config.epochs, batch_size=config.batch_size,
                       experiment=config.experiment, runs_dir=config.data_dir / "runs",
                       cache_dir=config.data_dir / "cache", device=config.device,
                       workers=config.workers or os.cpu_count() or 1, jobs=config.jobs)
    return replace(base, **overrides)


def _train_step(name: str, train_config: Any, steps: _Steps, say: Callable[[str], None]) -> str:
    from ecgml.train.runner import run_training

    steps.begin(name, f"{train_config.model.backbone} on {train_config.data.data.source}, "
                      f"{train_config.optim.epochs} epochs")
    def train(key: str) -> str:
        start = time.perf_counter()
        outcome = run_training(train_config, parent_run_id=steps.parent, extra_tags={STEP_KEY: key}, progress=True)
        say(f"{name}: run {outcome.run_id}, validation macro AUC {outcome.val_macro_auc:.3f}, test macro AUC "
            f"{outcome.test_macro_auc:.3f} ({time.perf_counter() - start:.0f} s)")
        return str(outcome.run_id)

    return steps.run(name, {"digest": train_config.digest(), "init": train_config.init_uri,
                            "register_as": train_config.register_as}, train,
                     reads=(train_config.data.data.source,)).run_id


def _register_and_promote(step: str, name: str, run_id: str, steps: _Steps, say: Callable[[str], None],
                          register: bool) -> str:
    """The version of ``name`` that ``run_id`` logged (registered if ``register`` and missing), promoted."""
    from ecgml.tracking.registry import promote, register_run, version_of_run

    steps.begin(step, f"{name} from run {run_id}")
    version = version_of_run(name, run_id)

    def register_and_promote(key: str) -> str:
        nonlocal version
        if version is None:
            if not register:
                raise RuntimeError(f"run {run_id} registered no version of {name}")
            version = register_run(run_id, name, selected_by="ecgml main").version
        info = promote(name, version, stage="production")
        say(f"{step}: models:/{name}/{version} is now production (aliases: {', '.join(info.aliases)})")
        return steps.light(step, key, {"ecgml.registered_as": f"models:/{name}/{version}"},
                           {"name": name, "version": version, "run": run_id})

    steps.run(step, {"name": name, "run": run_id}, register_and_promote)
    return f"models:/{name}/{version}"


def _pretrain_and_register(config: MainConfig, roots: dict[str, Path], steps: _Steps,
                           say: Callable[[str], None]) -> str:
    from ecgml.experiments.study import pretrain_config

    run_id = _train_step("pretrain", pretrain_config(_study(config, roots)), steps, say)  # what the sweep would train
    return _register_and_promote("register", DEFAULT_BACKBONE_MODEL, run_id, steps, say, register=True)


def _finetune_calibrate_evaluate(config: MainConfig, roots: dict[str, Path], backbone_uri: str, steps: _Steps,
                                 say: Callable[[str], None]) -> str:
    from ecgml.experiments.study import finetune_config
    from ecgml.posttrain.calibrate import calibrate_in_child
    from ecgml.posttrain.evaluate import run_evaluation
    from ecgml.tracking.registry import version_of_run

    study = _study(config, roots, backbone_uri=backbone_uri)
    name = config.classifier_model
    tuned = replace(finetune_config(study, fraction=1.0, seed=config.seeds[0], init_uri=backbone_uri),
                    register_as=name)
    run_id = _train_step("finetune", tuned, steps, say)
    classifier = version_of_run(name, run_id)
    if classifier is None:
        raise RuntimeError(f"fine-tuning run {run_id} registered no {name} version")
    source = f"models:/{name}/{classifier}"

    steps.begin("calibrate", source)
    def calibrate(key: str) -> str:
        # a nested child of the fine-tuning run it calibrates (as in the sweeps), not a sibling of it
        outcome = calibrate_in_child(source, runs_dir=config.data_dir / "runs", extra_tags={STEP_KEY: key})
        say(f"calibrate: {outcome.calibration.summary()}; registered {outcome.registered}")
        for note in outcome.calibration.diagnosis:
            say(f"calibrate: warning: {note}")
        return outcome.run_id

    calibrated_run = steps.run("calibrate", {"model": source}, calibrate).run_id
    production = _register_and_promote("promote", name, calibrated_run, steps, say, register=False)

    steps.begin("evaluate", f"{production} as served")
    def evaluate(key: str) -> str:
        data = replace(tuned.data, cache_dir=config.data_dir / "cache")  # the target as fine-tuning read it
        outcome = run_evaluation(f"models:/{name}@production", data,
                                 experiment=config.experiment, runs_dir=config.data_dir / "runs",
                                 parent_run_id=steps.parent, extra_tags={STEP_KEY: key}, progress=False)
        say(f"evaluate: {production} as served, {config.target_title} test macro AUC "
            f"{outcome.metrics['test_macro_auc']:.3f} "
            f"[{outcome.metrics['test_macro_auc_low']:.3f}, {outcome.metrics['test_macro_auc_high']:.3f}], "
            f"ECE {outcome.metrics['test_macro_ece']:.4f}")
        return outcome.run_id

    steps.run("evaluate", {"model": production}, evaluate, reads=(config.target,))
    return production


def _sweep_detail(config: MainConfig) -> str:
    return f"fractions {', '.join(map(str, config.fractions))}, seeds {', '.join(map(str, config.seeds))}"


def _sweep(config: MainConfig, roots: dict[str, Path], backbone_uri: str, steps: _Steps,
           say: Callable[[str], None]) -> None:
    from ecgml.experiments.study import run_sweep

    study = _study(config, roots, backbone_uri=backbone_uri, calibrate_all=True)
    steps.begin("sweep", _sweep_detail(config))
    sweep_id, _ = run_sweep("fraction", study, config.fractions, parent_run_id=steps.parent, say=say)
    steps.runs["sweep"] = sweep_id


def _plan_beside(config: MainConfig, roots: dict[str, Path]) -> Beside | None:
    """The cores' shares for the sweep beside the chain of pretraining to evaluation, or None where the sweep
    runs in one process (``--jobs 1``, one core) and so after the chain."""
    from ecgml.experiments.parallel import plan_beside
    from ecgml.experiments.study import plan_sweep

    planned = plan_sweep("fraction", _study(config, roots, calibrate_all=True), config.fractions,
                         backbone_pending=True)
    return plan_beside(config.jobs, len(planned))


def _chain_beside_sweep(config: MainConfig, roots: dict[str, Path], steps: _Steps, say: Callable[[str], None],
                        beside: Beside) -> tuple[str, str]:
    """Pretrain, register, fine-tune, calibrate, promote and evaluate in this process on its share of the
    cores, with the sweep's runs beside them; returns the backbone's and the production classifier's URIs.

    Why: the sweep's standalone runs need nothing from the chain, and two processes of one thread each do
    more than one process of two (``benchmarks/README.md``, concurrency), so they start at once, on the cores
    the chain leaves; its fine-tuning runs start once the backbone is registered. The sweep runs in a thread
    of this process (it only plans and waits: its runs train in its worker processes), so each run, name,
    tag, nesting and reuse is the one the sweep makes after the chain."""
    from ecgml.experiments.study import run_sweep
    from ecgml.runtime.threads import budget_for_a_while

    study = _study(config, roots, calibrate_all=True)
    outcome: dict[str, Any] = {}

    def sweep() -> None:
        try:
            outcome["sweep"] = run_sweep("fraction", study, config.fractions, parent_run_id=steps.parent,
                                         say=lambda text: say(f"sweep: {text}"), beside=beside)
        except BaseException as exc:  # raised in the main thread, after the chain
            outcome["error"] = exc

    say(f"sweep: {_sweep_detail(config)}; its standalone runs start now, beside pretraining and fine-tuning "
        f"({beside.budgets[0].threads} thread(s) each), its fine-tuned runs once the backbone is registered")
    thread = threading.Thread(target=sweep, name="ecgml-main-sweep", daemon=True)
    with budget_for_a_while(beside.budgets[0]):  # the workers' budgets were planned before this share
        thread.start()
        try:
            backbone_uri = _pretrain_and_register(config, roots, steps, say)
            beside.backbone.set_result(backbone_uri)
            classifier_uri = _finetune_calibrate_evaluate(config, roots, backbone_uri, steps, say)
        except BaseException as exc:
            beside.finish(exc)
            thread.join()
            raise
    beside.finish()
    steps.begin("sweep", _sweep_detail(config) + " (the runs left after the chain)")
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    steps.runs["sweep"] = outcome["sweep"][0]
    return backbone_uri, classifier_uri


def _report(config: MainConfig, steps: _Steps, say: Callable[[str], None]) -> Path:
    from ecgml.experiments.collect import collect
    from ecgml.experiments.report import write_report

    sweep_id = steps.runs["sweep"]
    steps.begin("report", str(config.report_dir))
    say("report: reading the sweep back from MLflow")
    collected = collect(config.experiment, sweeps=["fraction"])
    path = write_report(collected, config.report_dir, title="ecgml compact study (synthetic data)")
    steps.light("report", step_key("report", {"sweep": sweep_id}), {"ecgml.report_sweeps": "fraction"},
                {"sweeps": "fraction", "out": str(config.report_dir)}, folder=Path(config.report_dir))
    return path
