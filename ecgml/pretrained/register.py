"""Register a shipped backbone as a version of the backbone model, ready to serve and to fine-tune.

The version is an MLflow logged model with no run: nothing here trained it, and its tags say so
(``ecgml.source = shipped-card``, the card's name, SHA-256, data release, command and commit). Every check
(known name, task, hashes, alias name) runs before anything is written, and a failure after the version
exists deletes it, so nothing is registered half-way.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ecgml.defaults import DEFAULT_BACKBONE_MODEL, PRETRAINED_EXPERIMENT
from ecgml.pretrained.card import CARD_FILE
from ecgml.pretrained.shipped import PretrainedError, find_shipped, materialise, verify
from ecgml.tracking.weights import STATE_FILE


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    alias: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def register_shipped(name: str, *, alias: str | None = None, task: str | None = None,
                     registered_name: str = DEFAULT_BACKBONE_MODEL, root: Path | None = None) -> Registered:
    """Log the shipped backbone ``name`` as a pyfunc model and register it as a new version of
    ``registered_name``, optionally moving ``alias`` to it. Returns the version and its URI."""
    import mlflow

    from ecgml.tracking.pyfunc import log_pyfunc
    from ecgml.tracking.registry import RegistryError, check_alias, create_version, model_name_problem, promote
    from ecgml.tracking.runs import describe_experiment
    from ecgml.tracking.store import check_tracking_uri, tracking_client, tracking_uri

    if alias is not None:
        try:
            check_alias(alias)
        except RegistryError as exc:
            raise PretrainedError(str(exc)) from None
    problem = model_name_problem(registered_name)
    if problem:
        raise PretrainedError(f"--registered-name: {problem}")
    shipped = find_shipped(name, root, task=task)
    verify(shipped)
    card = shipped.card
    check_tracking_uri()  # a server that refuses us says so now, before the model is logged
    mlflow.set_tracking_uri(tracking_uri())
    client = tracking_client()
    tags = {
        "ecgml.source": "shipped-card", "ecgml.shipped_name": card.name,
        "ecgml.card": f"ecgml/pretrained/models/{card.name}/{CARD_FILE}",
        "ecgml.card_weights_sha256": card.files[STATE_FILE], "ecgml.source_run_id": "none (shipped with ecgml)",
        "dataset": card.dataset.lower().replace("-", ""), "dataset_version": card.data_release, "task": card.task,
        "backbone": card.backbone, "git_commit": card.commit, "ecgml.training_command": card.command[:4000],
        **{f"metric.{k}": f"{v:.6f}" for k, v in card.metrics.items()},
    }
    with tempfile.TemporaryDirectory(prefix="ecgml-shipped-") as scratch:
        weights = materialise(shipped, Path(scratch) / "weights")
        describe_experiment(mlflow.set_experiment(PRETRAINED_EXPERIMENT).experiment_id)
        info = log_pyfunc(weights)
    try:
        client.get_registered_model(registered_name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(registered_name, description="ecgml backbones pretrained on PTB-XL")
    version = create_version(client, registered_name, info.model_uri, tags=tags)
    try:
        if alias is not None:
            promote(registered_name, str(version.version), stage=alias if alias in ("staging", "production") else None,
                    alias=None if alias in ("staging", "production") else alias)
    except BaseException:
        client.delete_model_version(registered_name, str(version.version))
        raise
    return Registered(registered_name, str(version.version), alias)
