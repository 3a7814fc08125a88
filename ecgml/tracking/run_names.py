"""Run names and params a person can tell runs apart by, in MLflow's runs table, chart legends and compare view.

Why: a run opened without a name gets MLflow's random adjective-animal name, drawn from Python's
``random`` module, which training seeds just before the run opens, so every seed-0 run of a sweep would
get the same one. Every run gets a deterministic name built from what distinguishes it
(``finetune xresnet1d50_small f=0.025 s=0``), and every setting that differs between runs of a comparison
is an MLflow param, so the compare view shows it.

Only plain values in and out: this module imports neither torch nor MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ecgml.config import DEFAULT_FINETUNE_STRATEGY
from ecgml.defaults import (
    BENCHMARK_EXPERIMENT,
    CALIBRATE_EXPERIMENT,
    DATA_EXPERIMENT,
    DEFAULT_BACKBONE_MODEL,
    DEFAULT_CLASSIFIER_MODEL,
    DEFAULT_FS,
    EVALUATE_EXPERIMENT,
    FINETUNE_EXPERIMENT,
    FINETUNE_KIND,
    PRETRAIN_EXPERIMENT,
    PRETRAIN_KIND,
    PRETRAINED_EXPERIMENT,
    STANDALONE_EXPERIMENT,
    STUDY_EXPERIMENT,
    TUNE_EXPERIMENT,
)


def _num(value: float) -> str:
    return f"{float(value):g}"


def training_run_name(kind: str, backbone: str, *, fraction: float, seed: int, task: str = "", fs: int = DEFAULT_FS,
                      leads: str = "12", input_domain: str = "time", strategy: str | None = None,
                      default_strategy: str = DEFAULT_FINETUNE_STRATEGY, target: str = "",
                      extras: Mapping[str, Any] | None = None) -> str:
    """``finetune g12ec xresnet1d50_small f=0.025 s=0``, ``pretrain xresnet1d50_small all 100Hz``: the arm, the
    target (fine-tuning and standalone runs), the backbone, then each setting that is not the default, then the
    seed (pretraining: only when not 0).

    ``extras`` are settings the config does not show (a sweep's PTB-XL fraction, behind the backbone); a
    fine-tuning strategy is named only when it is not ``default_strategy``."""
    parts = [kind, *([target] if target and kind != PRETRAIN_KIND else []), backbone]
    if kind == PRETRAIN_KIND:
        parts += [p for p in (task, f"{fs}Hz") if p]
        if fraction != 1:
            parts.append(f"f={_num(fraction)}")
    else:
        parts.append(f"f={_num(fraction)}")
        if fs != DEFAULT_FS:
            parts.append(f"{fs}Hz")
    if str(leads) != "12":
        parts.append(f"leads={leads}")
    if input_domain != "time":
        parts.append(input_domain)
    if kind == FINETUNE_KIND and strategy and strategy != default_strategy:
        parts.append(strategy)
    for key, value in (extras or {}).items():
        parts.append(f"{key}={_num(value) if isinstance(value, float) else value}")
    if kind != PRETRAIN_KIND or seed != 0:
        parts.append(f"s={seed}")
    return " ".join(parts)


def config_run_name(config: Any, extras: Mapping[str, Any] | None = None, *, backbone: str | None = None) -> str:
    """:func:`training_run_name` of a :class:`~ecgml.train.pipeline.TrainConfig` (read by attribute, so
    this module needs no torch); ``backbone``: the architecture a fine-tuning really loaded, when known."""
    from ecgml.config import DEFAULT_FINETUNE_STRATEGY

    data = config.data.data
    return training_run_name(config.kind, backbone or config.model.backbone, fraction=config.fraction, seed=config.seed,
                             task=data.task, fs=data.fs, leads=str(config.data.leads),
                             input_domain=config.input_domain,
                             strategy=config.optim.strategy if config.kind == FINETUNE_KIND else None,
                             default_strategy=DEFAULT_FINETUNE_STRATEGY, target=data.source, extras=extras)


def sweep_extras(setting: Mapping[str, Any]) -> dict[str, Any]:
    """The swept settings of a sweep job that the config itself does not carry (the PTB-XL fraction a
    fine-tuned model's backbone was pretrained on)."""
    return {"ptbxl": setting["ptbxl_fraction"]} if "ptbxl_fraction" in setting else {}


def calibration_run_name(calibrated: str) -> str:
    """``calibrate finetune xresnet1d50_small f=0.025 s=0``: the calibrated run's name, prefixed."""
    return f"calibrate {calibrated}".strip()


def unique_names(names: Iterable[str]) -> list[str]:
    """The names in order, a repeat of an earlier one suffixed `` #2``, `` #3`` (siblings never share one)."""
    out: list[str] = []
    taken: set[str] = set()
    for name in names:
        candidate, count = name, 1
        while candidate in taken:
            count += 1
            candidate = f"{name} #{count}"
        taken.add(candidate)
        out.append(candidate)
    return out


def training_params(config: Any, *, family: str, lineage: Mapping[str, str] | None = None,
                    extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every setting that can differ between runs of a comparison, as MLflow params (the compare view shows
    params, not ``config.json``): arm, family, backbone, strategy, fractions, rate, leads, input domain,
    seed, optimiser, epochs, crop, label map, task and the backbone version fine-tuning started from."""
    data = config.data.data
    optim = config.optim
    lineage = lineage or {}
    params: dict[str, Any] = {
        "arm": config.kind, "family": family, "backbone": lineage.get("backbone", config.model.backbone),
        "strategy": optim.strategy, "fraction": config.fraction, "fs": data.fs, "leads": str(config.data.leads),
        "input_domain": config.input_domain, "seed": config.seed, "lr": optim.lr,
        "weight_decay": optim.weight_decay, "epochs": optim.epochs, "batch_size": optim.batch_size,
        "crop_s": config.crop_s, "center_crop": config.center_crop, "label_map": data.label_map, "task": data.task,
        "dataset": data.source,
    }
    params.update(protocol_params(config))
    if config.kind == PRETRAIN_KIND:
        params["ptbxl_fraction"] = config.fraction
    else:
        params["target"] = data.source
        params["target_fraction"] = config.fraction
    if "ecgml.backbone_version" in lineage:
        params["backbone_version"] = lineage["ecgml.backbone_version"]
    for key, value in (extras or {}).items():
        params["ptbxl_fraction" if key == "ptbxl" else key] = value
    return params



def protocol_params(config: Any) -> dict[str, Any]:
    """The test-time windows and the layer-wise rates of a training config, as params: ``aggregate``,
    ``window_stride`` (samples), ``windows`` (the protocol's name, ``custom`` if neither) and
    ``layer_lr_fractions`` (``none`` when every group trains at the run's rate)."""
    from ecgml.data.windows import protocol_of

    optim = config.optim
    fractions = getattr(optim, "layer_lr_fractions", ())
    return {"aggregate": optim.aggregate, "window_stride": config.stride_samples,
            "windows": protocol_of(optim.aggregate, config.stride_samples, config.crop_samples),
            "layer_lr_fractions": ",".join(f"{f:g}" for f in fractions) if fractions else "none"}


_TRAINING_PARAMS = ("`arm`, `family`, `backbone`, `strategy`, `fraction`, `fs`, `leads`, `input_domain`, `seed`, "
                    "`lr`, `weight_decay`, `epochs`, `crop_s`, `label_map`")

#: What each step experiment holds and how to compare its runs: MLflow shows it above the runs table.
EXPERIMENT_DESCRIPTIONS: dict[str, str] = {
    PRETRAIN_EXPERIMENT: (
        "PTB-XL pretraining runs (`ecgml pretrain`), one per backbone, task, rate, lead set and seed, named "
        "`pretrain <backbone> <task> <fs>Hz`. `ecgml register` registers the best finished run by "
        f"`best_val_macro_auc` as **{DEFAULT_BACKBONE_MODEL}**. The params that differ between runs are "
        f"{_TRAINING_PARAMS}, `ptbxl_fraction` and `task`. Compare one task's backbones with e.g. "
        "`params.task = 'superdiagnostic' and params.fs = '100'`, sorted by `metrics.best_val_macro_auc`."),
    PRETRAINED_EXPERIMENT: (
        "The PTB-XL backbones shipped with ecgml (`ecgml pretrained register`): logged models without a "
        f"training run, registered as versions of **{DEFAULT_BACKBONE_MODEL}**. See the *Models* tab; each "
        "version's description and tags say which benchmark run produced it and its validation AUC."),
    STANDALONE_EXPERIMENT: (
        "Classifiers trained from scratch on a target (`ecgml train-standalone --target NAME`, default G12EC): "
        "the baseline arm, one run per target, backbone, fraction and seed, named `standalone <target> <backbone> "
        f"f=<fraction> s=<seed>`. The params that differ are {_TRAINING_PARAMS}, `target` and `target_fraction`; a "
        "cross-validation (`--cv K`) is a parent run with one child per fold. Compare families at one fraction "
        "with e.g. "
        "`params.fraction = '0.25'` (columns `params.family`, `metrics.test_macro_auc`), and against "
        f"fine-tuning by the same fraction and seed in **{FINETUNE_EXPERIMENT}**."),
    FINETUNE_EXPERIMENT: (
        "Classifiers fine-tuned on a target from a registered PTB-XL backbone (`ecgml finetune --target NAME`, "
        "default G12EC; `mlflow run . -e finetune`), one run per target, fraction, strategy and seed, named "
        "`finetune <target> <backbone> f=<fraction> s=<seed>`; each registers a version of "
        f"`ecgml-<target>-classifier` (**{DEFAULT_CLASSIFIER_MODEL}** for the default target). The params that "
        f"differ are {_TRAINING_PARAMS}, `target`, `target_fraction` and `backbone_version` (the backbone it "
        "started from). Compare with "
        "e.g. `params.fraction = '0.1' and params.strategy = 'gradual'`, or one backbone's runs with "
        f"`params.backbone_version = 'models:/{DEFAULT_BACKBONE_MODEL}/1'`; sort by `metrics.test_macro_auc`."),
    CALIBRATE_EXPERIMENT: (
        "Calibrations of registered classifiers (`ecgml calibrate --model ...`), named `calibrate <the "
        "calibrated run's name>`: each fits one temperature, per-class temperatures and Platt scaling on "
        "validation, keeps one (`params.chosen`) and registers a calibrated version. Compare "
        "`metrics.test_macro_ece_before` with `metrics.test_macro_ece_after` (and Brier); calibrations "
        "with a warning: `` tags.`ecgml.calibration_warning` LIKE '%' ``. AUC is unchanged by design."),
    EVALUATE_EXPERIMENT: (
        "Evaluations of registered versions as served (`ecgml evaluate --model models:/...`), one run per "
        "version and split, calibration included: macro AUC with its bootstrap interval "
        "(`test_macro_auc_low`/`_high`), AUPRC, Fmax, ECE, Brier. The version is `params.model`; compare "
        f"versions with e.g. `params.model LIKE 'models:/{DEFAULT_CLASSIFIER_MODEL}/%'`, sorted by "
        "`metrics.test_macro_auc`."),
    TUNE_EXPERIMENT: (
        "Optuna hyper-parameter searches (`ecgml tune`): one parent run per study (`` tags.`ecgml.kind` = "
        "'tune' ``, its `trial_value` metric plotted per trial number) and one child training run per "
        "trial, whose params are the sampled values. Compare one study's trials with "
        "`` tags.`optuna.study_name` = '<study>' ``, sorted by `metrics.best_val_macro_auc`; pruned trials "
        "are KILLED, failed ones FAILED."),
    STUDY_EXPERIMENT: (
        "The ecgml study (`ecgml main`, `ecgml experiment ...`, `mlflow run .`): a `main` run, one parent "
        "run per sweep (`` tags.`ecgml.kind` = 'sweep' ``, with `comparison/comparison.png` of test macro AUC "
        "per setting and arm), its children one per setting, arm and seed, named after them; a calibration "
        "is a child of the run it calibrates. Compare e.g. `params.arm = 'finetune' and params.fraction = "
        "'0.025'`, or one sweep's training runs with `` tags.`ecgml.sweep` = 'fraction' and "
        "tags.`ecgml.kind` != 'calibrate' ``."),
    DATA_EXPERIMENT: (
        "Data steps run by `mlflow run . -e synth|download|prepare|stats`: each run holds the JSON summary "
        "of what it built or checked (records, problems, cache digest). Nothing here is a model."),
    BENCHMARK_EXPERIMENT: (
        "The PTB-XL benchmark on real records (`benchmarks/real_ptbxl.py`): one pretraining run per task, "
        "backbone and seed. Compare a task's models with `params.task = 'all'`, sorted by "
        "`metrics.best_val_macro_auc` (fold 9, the fold that selects the epoch)."),
}


def experiment_description(name: str) -> str | None:
    """The description of an experiment ecgml creates (None for a name it does not know: a user's own)."""
    return EXPERIMENT_DESCRIPTIONS.get(name)
