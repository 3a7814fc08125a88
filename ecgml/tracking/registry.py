"""The model registry: register the best pretraining run's backbone, promote versions, resolve them.

Stages are expressed as MLflow aliases (``staging``, ``production``; registry stages proper are
deprecated in MLflow 3); ``archived`` removes a version's aliases and marks it. Every promotion is
appended to the version's ``ecgml.promotion_history`` tag (who, what, when), so the history survives
alias moves. Any other alias (``champion``) can be set the same way.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_BACKBONE_MODEL = "ecgml-ptbxl-backbone"
DEFAULT_CLASSIFIER_MODEL = "ecgml-g12ec-classifier"
STAGES = ("staging", "production", "archived")
MODEL_URI_TAG = "ecgml.model_uri"
HISTORY_TAG = "ecgml.promotion_history"


class RegistryError(ValueError):
    """A registry request that cannot be met (no such run, model, version or alias)."""


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    tags: dict[str, str]


def _client() -> Any:
    import mlflow

    from ecgml.tracking.runs import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.MlflowClient()


def best_run(experiment: str, metric: str = "best_val_macro_auc", kind: str = "pretrain") -> Any:
    """The finished run of ``kind`` with the highest ``metric`` in ``experiment``."""
    client = _client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise RegistryError(f"no experiment named {experiment!r} in the tracking store")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`ecgml.kind` = '{kind}' and attributes.status = 'FINISHED'",
        order_by=[f"metrics.`{metric}` DESC"], max_results=50)
    runs = [r for r in runs if metric in r.data.metrics and MODEL_URI_TAG in r.data.tags]
    if not runs:
        raise RegistryError(f"experiment {experiment!r} has no finished {kind} run with metric {metric!r} "
                            "and a logged model")
    return runs[0]


def register_best(experiment: str, name: str = DEFAULT_BACKBONE_MODEL, metric: str = "best_val_macro_auc",
                  kind: str = "pretrain") -> VersionInfo:
    """Register the best run's model as a new version, with its weight metadata and metrics as tags."""
    return register_run(best_run(experiment, metric, kind).info.run_id, name, selected_by=metric)


def register_run(run_id: str, name: str = DEFAULT_BACKBONE_MODEL, *, selected_by: str = "explicit run",
                 extra_tags: dict[str, str] | None = None) -> VersionInfo:
    """Register one finished run's logged model as a new version of ``name`` (created if needed)."""
    import mlflow

    client = _client()
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise RegistryError(f"no run {run_id} in the tracking store") from None
    if MODEL_URI_TAG not in run.data.tags:
        raise RegistryError(f"run {run_id} logged no ecgml model (tag {MODEL_URI_TAG} missing)")
    experiment = client.get_experiment(run.info.experiment_id).name
    tags = {
        "ecgml.source_run_id": run.info.run_id,
        "ecgml.source_experiment": experiment,
        "ecgml.selected_by": selected_by,
        **{f"metric.{k}": f"{v:.6f}" for k, v in run.data.metrics.items()
           if k in ("best_val_macro_auc", "test_macro_auc", "test_macro_auprc", "test_fmax")},
        **{k: v for k, v in run.data.tags.items()
           if k in ("dataset", "dataset_version", "cache_digest", "task", "label_map", "backbone",
                    "git_commit", "ecgml.config_digest")},
        **(extra_tags or {}),
    }
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="ecgml backbones pretrained on PTB-XL")
    version = client.create_model_version(name, run.data.tags[MODEL_URI_TAG], run_id=run.info.run_id, tags=tags)
    return show(name, version.version)


def version_of_run(name: str, run_id: str) -> str | None:
    """The newest version of ``name`` registered from ``run_id`` (None if the run registered none)."""
    versions = _client().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(max(int(v.version) for v in versions)) if versions else None


def register_run_model(name: str, run_id: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register ``model_uri`` (logged by ``run_id``) as a new version of ``name``; returns the version."""
    import mlflow

    client = _client()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    version = client.create_model_version(name, model_uri, run_id=run_id,
                                          tags={"ecgml.source_run_id": run_id, **tags})
    return str(version.version)


def promote(name: str, version: str, stage: str | None = None, alias: str | None = None,
            user: str | None = None) -> VersionInfo:
    """Move ``version`` to a stage (as an alias) or set any alias, recording who did it and when."""
    if (stage is None) == (alias is None):
        raise RegistryError("give exactly one of a stage (staging, production, archived) or an alias")
    if stage is not None and stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    client = _client()
    current = show(name, version)
    if stage == "archived":
        for held in current.aliases:
            client.delete_registered_model_alias(name, held)
        client.set_model_version_tag(name, version, "ecgml.archived", "true")
    else:
        client.set_registered_model_alias(name, stage or alias, version)
        client.set_model_version_tag(name, version, "ecgml.archived", "false")
    history = json.loads(current.tags.get(HISTORY_TAG, "[]"))
    history.append({"to": stage or f"alias:{alias}", "by": user or getpass.getuser(),
                    "at": datetime.now(UTC).isoformat(timespec="seconds")})
    client.set_model_version_tag(name, version, HISTORY_TAG, json.dumps(history))
    return show(name, version)


def show(name: str, version: str) -> VersionInfo:
    import mlflow

    client = _client()
    try:
        mv = client.get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException:
        raise RegistryError(f"registered model {name!r} has no version {version}") from None
    return VersionInfo(name, str(mv.version), tuple(mv.aliases or ()), mv.run_id, dict(mv.tags or {}))


def list_versions(name: str) -> list[VersionInfo]:
    client = _client()
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise RegistryError(f"no registered model named {name!r} (or it has no versions)")
    return sorted((show(name, v.version) for v in versions), key=lambda v: int(v.version))


def resolve(uri: str) -> VersionInfo:
    """``models:/NAME/3`` or ``models:/NAME@alias`` -> the version it names (a clear error otherwise)."""
    if not uri.startswith("models:/"):
        raise RegistryError(f"{uri!r} is not a registry URI (models:/NAME/VERSION or models:/NAME@ALIAS)")
    body = uri.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        import mlflow

        try:
            mv = _client().get_model_version_by_alias(name, alias)
        except mlflow.exceptions.MlflowException:
            raise RegistryError(f"registered model {name!r} has no alias {alias!r}") from None
        return show(name, mv.version)
    name, _, version = body.partition("/")
    if not version.isdigit():
        raise RegistryError(f"{uri!r}: the version must be a number")
    return show(name, version)


def resolve_with_fallback(uri: str) -> tuple[VersionInfo, str | None]:
    """Like :func:`resolve`, but ``@production`` falls back to the newest version, with a warning text."""
    try:
        return resolve(uri), None
    except RegistryError:
        body = uri.removeprefix("models:/")
        if "@" not in body or not body.endswith("@production"):
            raise
        name = body.split("@", 1)[0]
        latest = list_versions(name)[-1]
        return latest, (f"{name} has no 'production' alias; using its latest version {latest.version} "
                        f"(promote one with `ecgml registry promote {name} VERSION --stage production`)")


def download_weights(info: VersionInfo) -> Path:
    """The weights folder (``metadata.json`` + ``state_dict.pt``) of a registered version, downloaded."""
    import mlflow

    _client()
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{info.name}/{info.version}"))
    for metadata in sorted(local.rglob("metadata.json")):
        if (metadata.parent / "state_dict.pt").is_file():
            return metadata.parent
    raise RegistryError(f"models:/{info.name}/{info.version} holds no ecgml weights folder")
