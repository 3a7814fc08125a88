"""How sweep runs are tagged in MLflow: the one contract between the sweeps that write runs and the
report that reads them back.

A sweep is one parent run (``ecgml.kind = sweep``) in the study experiment; each setting x arm x seed is a
child training run (``mlflow.parentRunId`` = the sweep's run) carrying the tags below, the usual training
metrics (``test_macro_auc`` with ``test_macro_auc_low/high``, ``best_val_macro_auc``), ``metrics.json``
(with ``test_per_class_auc``) and ``eval/predictions_test.csv``. Calibration runs (``ecgml.kind = calibrate``)
are nested children of the training run they calibrated, which they also name with :data:`CALIBRATED_RUN`.
"""

from __future__ import annotations

import json
from typing import Any

from ecgml.defaults import FINETUNE_KIND, PRETRAIN_KIND, STANDALONE_KIND, STUDY_EXPERIMENT

DEFAULT_STUDY_EXPERIMENT = STUDY_EXPERIMENT

KIND = "ecgml.kind"  # pretrain | standalone | finetune | calibrate | sweep | report | main
SWEEP = "ecgml.sweep"  # fraction | pretrain-fraction | sampling-rate | calibration | input-domain | leads | strategy
PROTOCOL = "ecgml.protocol"  # standard | seed
ARM = "ecgml.arm"  # finetune | standalone | pretrain
FAMILY = "ecgml.family"  # xresnet | resnet | inception
SETTING = "ecgml.setting"  # JSON object of the swept values, e.g. {"target_fraction": 0.1}
SEED = "ecgml.seed"
CALIBRATED_RUN = "ecgml.calibrated_run_id"

SWEEPS = ("fraction", "pretrain-fraction", "sampling-rate", "calibration", "input-domain", "leads", "strategy")
#: The arms a sweep compares: the training kinds of :mod:`ecgml.defaults`, named once there.
FINETUNE, STANDALONE, PRETRAIN = FINETUNE_KIND, STANDALONE_KIND, PRETRAIN_KIND
ARMS = (FINETUNE, STANDALONE, PRETRAIN)
#: The tag naming the dataset a training run read (a registry name: ``g12ec``, ``cinc``; written by the trainer).
DATASET = "dataset"
PROTOCOLS = ("standard", "seed")


def setting_tag(setting: dict[str, Any]) -> str:
    """A canonical JSON text, so equal settings compare equal as tags."""
    return json.dumps(setting, sort_keys=True)


def sweep_tags(sweep: str, protocol: str, arm: str, backbone: str, setting: dict[str, Any],
               seed: int) -> dict[str, str]:
    """The tags of one child run of a sweep (the family as the backbone registry names it)."""
    from ecgml.models.registry import family_of

    return {SWEEP: sweep, PROTOCOL: protocol, ARM: arm, FAMILY: family_of(backbone), SETTING: setting_tag(setting),
            SEED: str(seed)}
