"""Defaults and names that several layers share, each typed here once.

Only plain constants: this module imports nothing (no torch, no mlflow), so the CLI, the configs, the jobs,
the sweeps and the tracking layer can all import it without cost. Facts that belong to one layer live in
that layer's module instead (label maps in :mod:`ecgml.data.labels`, backbones in
:mod:`ecgml.models.registry`, strategies in :mod:`ecgml.config`); ``ARCHITECTURE.md`` lists where each one is.
"""

from __future__ import annotations

#: The backbone pretrained and fine-tuned unless told otherwise: small enough to train on 2 CPU cores in
#: minutes; the published xresnet1d101 is one option away.
DEFAULT_BACKBONE = "xresnet1d50_small"
#: The standalone baselines trained on G12EC from scratch: one backbone of each family.
STANDALONE_BACKBONES: tuple[str, ...] = ("xresnet1d50_small", "resnet1d_wang_small", "inception1d_small")

#: Train/validation/test folds: the PTB-XL benchmark split (folds 1-8 train, 9 validation, 10 test).
DEFAULT_SPLITS = "1-8/9/10"
#: Sampling rates a cache can be built at (Hz), highest first; records are resampled from their native rate.
CACHE_RATES: tuple[int, ...] = (500, 250, 100, 50)
#: The cache rate unless told otherwise (Hz).
DEFAULT_FS = 100

#: The roles of the study's two datasets: the source a backbone is pretrained on, and the target it is
#: fine-tuned and compared on (``--target``; any registered dataset source, see ``ecgml.data.sources``).
DEFAULT_SOURCE = "ptbxl"
DEFAULT_TARGET = "g12ec"
#: The kinds of training run (``ecgml.kind``), which are also the arms a sweep compares.
PRETRAIN_KIND = "pretrain"
FINETUNE_KIND = "finetune"
STANDALONE_KIND = "standalone"
TRAINING_KINDS: tuple[str, ...] = (FINETUNE_KIND, STANDALONE_KIND, PRETRAIN_KIND)


def classifier_model_name(target: str) -> str:
    """The registered name of a classifier fine-tuned on ``target``: ``ecgml-<target>-classifier``."""
    return f"ecgml-{target}-classifier"


#: Registered model names: the pretrained PTB-XL backbone, the fine-tuned classifier of the default target,
#: and the backbone a sweep pretrains (kept apart so sweeps never move the user's ``production`` alias).
DEFAULT_BACKBONE_MODEL = "ecgml-ptbxl-backbone"
DEFAULT_CLASSIFIER_MODEL = classifier_model_name(DEFAULT_TARGET)
STUDY_BACKBONE_MODEL = "ecgml-study-backbone"
#: Stages a registered version moves through, as MLflow aliases (``archived`` removes its aliases).
REGISTRY_STAGES: tuple[str, ...] = ("staging", "production", "archived")
#: The alias jobs load from unless given a version; ``production`` falls back to the latest version.
PRODUCTION_ALIAS = "production"
DEFAULT_BACKBONE_URI = f"models:/{DEFAULT_BACKBONE_MODEL}@{PRODUCTION_ALIAS}"
DEFAULT_CLASSIFIER_URI = f"models:/{DEFAULT_CLASSIFIER_MODEL}@{PRODUCTION_ALIAS}"

#: Where training batches are cut (``ecgml.train.device_data``): ``auto`` (on a CUDA device when the
#: splits fit), ``on`` (always), ``off`` (the host loader).
DEVICE_DATA: tuple[str, ...] = ("auto", "on", "off")

#: MLflow experiment of each command unless told otherwise.
PRETRAIN_EXPERIMENT = "ecgml-pretrain"
#: Where `ecgml pretrained register` logs the shipped backbones it registers (a model, no run).
PRETRAINED_EXPERIMENT = "ecgml-pretrained"
STANDALONE_EXPERIMENT = "ecgml-standalone"
FINETUNE_EXPERIMENT = "ecgml-finetune"
CALIBRATE_EXPERIMENT = "ecgml-calibrate"
EVALUATE_EXPERIMENT = "ecgml-evaluate"
STUDY_EXPERIMENT = "ecgml-study"
TUNE_EXPERIMENT = "ecgml-tune"
#: The data commands' runs (synth, download, prepare, stats).
DATA_EXPERIMENT = "ecgml"
#: The real PTB-XL benchmark's runs (``benchmarks/real_ptbxl.py``).
BENCHMARK_EXPERIMENT = "ecgml-benchmark-ptbxl"

#: Calibration maps ``ecgml calibrate`` fits on validation (:mod:`ecgml.evaluate.recalibration`), fewest
#: parameters first; ``auto`` keeps the one with the lowest cross-validated validation NLL.
CALIBRATION_METHODS: tuple[str, ...] = ("single", "per-class", "platt")
DEFAULT_CALIBRATION_METHOD = "auto"
