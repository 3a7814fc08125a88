"""The model registry: register the best pretraining run's backbone, promote versions, resolve them.

Stages are expressed as MLflow aliases (``staging``, ``production``; registry stages proper are
deprecated in MLflow 3); ``archived`` removes a version's aliases and marks it. Every promotion is
appended to the version's ``ecgml.promotion_history`` tag (who, what, when), and a version an alias moves
away from gets a ``demoted`` entry naming the version that took it, so both sides of a move are on record.
Any other alias (``champion``) can be set the same way.

Promotion to ``production`` is guarded: a version whose test macro AUC is lower than the current
production version's on the same test set (same :data:`TEST_SET_TAG` fingerprint) is refused unless
forced; on a different or unknown test set the two figures are only compared with a warning. Every
check happens before the first write, so a refusal leaves the registry as it was. Promotions of one model
never race: each holds the model's lock on the tracking store (:mod:`ecgml.tracking.promotion_lock`) from
reading the current holder to writing the histories.
"""

from __future__ import annotations

import difflib
import getpass
import hashlib
import json
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ecgml.defaults import DEFAULT_BACKBONE_MODEL, FINETUNE_KIND, PRETRAIN_KIND, REGISTRY_STAGES, STANDALONE_KIND

STAGES = REGISTRY_STAGES
MODEL_URI_TAG = "ecgml.model_uri"
HISTORY_TAG = "ecgml.promotion_history"
#: Fingerprint of the test records a version was scored on (hash of the sorted record ids and the classes).
TEST_SET_TAG = "ecgml.test_set"
#: The figure promotion compares.
GUARD_METRIC = "test_macro_auc"


class RegistryError(ValueError):
    """A registry request that cannot be met (no such run, model, version or alias)."""


#: An alias ecgml sets: lower case (so ``Production`` can never sit beside ``production``), letters, digits,
#: '-' and '_', starting with a letter or digit, at most :data:`MAX_ALIAS` characters.
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
MAX_ALIAS = 64
#: Names MLflow or ecgml give a meaning already (``latest`` and ``vN`` name versions, ``archived`` is a stage
#: that removes aliases).
_RESERVED_ALIASES = ("latest", "archived")


def check_alias(alias: str) -> None:
    """Refuse an alias MLflow would refuse with a traceback, or that would shadow another: see :data:`_ALIAS`."""
    shown = alias if len(alias) <= 40 else f"{alias[:40]}... ({len(alias)} characters)"
    rule = (f"an alias is lower case letters, digits, '-' and '_' (at most {MAX_ALIAS} characters), "
            "not 'latest', 'archived' or 'v<number>'")
    if alias.lower() != alias and _ALIAS.match(alias.lower()) and len(alias) <= MAX_ALIAS:
        raise RegistryError(f"alias {shown!r}: aliases are lower case, so that {alias.lower()!r} is never two "
                            f"aliases; use {alias.lower()!r}")
    if (not _ALIAS.match(alias) or len(alias) > MAX_ALIAS or alias in _RESERVED_ALIASES
            or re.fullmatch(r"v\d+", alias) or alias.isdigit()):
        raise RegistryError(f"alias {shown!r}: {rule}")


def model_name_problem(name: str) -> str | None:
    """Why MLflow would refuse ``name`` as a registered model's name (empty, '/' or ':'), or None; checked
    before anything is logged, so a bad name leaves no orphan logged model."""
    if not name.strip():
        return "a registered model's name cannot be empty"
    if any(c in name for c in "/:"):
        return f"registered model name {name!r}: names cannot contain '/' or ':'"
    from ecgml.tracking.promotion_lock import is_lock_name

    if is_lock_name(name):
        return f"registered model name {name!r}: names ending in its suffix are ecgml's promotion locks"
    return None


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    tags: dict[str, str]
    description: str = ""

    @property
    def archived(self) -> bool:
        return self.tags.get("ecgml.archived") == "true"


def _client() -> Any:
    import mlflow

    from ecgml.tracking.store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.MlflowClient()


def best_run(experiment: str, metric: str = "best_val_macro_auc", kind: str = PRETRAIN_KIND) -> Any:
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
                  kind: str = PRETRAIN_KIND) -> VersionInfo:
    """Register the best run's model as a new version, with its weight metadata and metrics as tags."""
    return register_run(best_run(experiment, metric, kind).info.run_id, name, selected_by=metric)


def _say_warning(text: str) -> None:
    sys.stderr.write(f"warning: {text}\n")
    sys.stderr.flush()


def model_names() -> list[str]:
    """Every registered model's name, sorted."""
    from ecgml.tracking.promotion_lock import is_lock_name

    return sorted(m.name for m in _client().search_registered_models(max_results=1000) if not is_lock_name(m.name))


def _unknown_model(name: str) -> RegistryError:
    """``no registered model named 'ecgml-g12ec-clasifier'; did you mean ecgml-g12ec-classifier?``"""
    names = model_names()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = (f"; did you mean {' or '.join(close)}?" if close
            else f"; registered models: {', '.join(names)}" if names else "; the registry is empty")
    return RegistryError(f"no registered model named {name!r}{hint}")


def _require_model(name: str) -> None:
    import mlflow

    try:
        _client().get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        raise _unknown_model(name) from None


def test_set_fingerprint(run_id: str) -> str | None:
    """Hash of the test records (sorted ids) and classes a run was scored on, from its
    ``eval/predictions_test.csv`` (a calibration run: its source run's); None when the run logged none."""
    import mlflow

    client = _client()
    run = client.get_run(run_id)
    source = run.data.tags.get("ecgml.calibrated_run_id", run_id)
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=source, artifact_path="eval/predictions_test.csv",
                                                       dst_path=folder)
        except Exception:  # no such artifact (a pretraining run of an older ecgml, a hand-made run)
            return None
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines:
        return None
    header = lines[0].split(",")
    classes = sorted(c.removeprefix("true_") for c in header if c.startswith("true_"))
    ids = sorted(line.split(",", 1)[0] for line in lines[1:] if line)
    digest = hashlib.sha256(json.dumps({"ids": ids, "classes": classes}).encode()).hexdigest()
    return digest[:16]


def version_description(name: str, run: Any, tags: dict[str, str]) -> str:
    """A short Markdown description of a version: what it is, its data, its metrics, where it came from."""
    kind = tags.get("ecgml.kind") or run.data.tags.get("ecgml.kind", "model")
    what = {PRETRAIN_KIND: "Backbone pretrained", FINETUNE_KIND: "Classifier fine-tuned", STANDALONE_KIND:
            "Classifier trained from scratch", "calibrate": "Temperature-calibrated classifier"}.get(kind, "Model")
    dataset = tags.get("dataset") or run.data.tags.get("dataset", "?")
    lines = [f"**{run.info.run_name or name}**", "",
             f"{what} on {dataset} ({tags.get('task', '?')}, label map {tags.get('label_map', '?')}, "
             f"backbone {tags.get('backbone', '?')})."]
    metrics = [f"{k.removeprefix('metric.')} {float(v):.3f}" for k, v in sorted(tags.items())
               if k.startswith("metric.")]
    if metrics:
        lines.append("Metrics: " + ", ".join(metrics) + ".")
    lineage = [f"run `{run.info.run_id}`"]
    for key, label in (("ecgml.backbone_version", "backbone"), ("ecgml.calibrated_from", "calibrated from")):
        if key in tags:
            lineage.append(f"{label} `{tags[key]}`")
    if TEST_SET_TAG in tags:
        lineage.append(f"test set `{tags[TEST_SET_TAG]}`")
    lines.append("Lineage: " + ", ".join(lineage) + ".")
    return "\n".join(lines)


def logged_model_id(source: str) -> str | None:
    """The logged model's ID in a ``models:/m-...`` source; None for any other source (a run's path, a
    registered version)."""
    body = source.removeprefix("models:/") if source.startswith("models:/") else ""
    return body if body.startswith("m-") and "/" not in body and "@" not in body else None


def create_version(client: Any, name: str, source: str, *, run_id: str | None = None,
                   tags: dict[str, str] | None = None, description: str | None = None) -> Any:
    """``client.create_model_version`` with the logged model's ID passed along: a tracking server (MLflow
    3.17) refuses a ``models:/m-...`` source unless ``model_id`` names the logged model that holds it."""
    return client.create_model_version(name, source, run_id=run_id, tags=tags, description=description,
                                       model_id=logged_model_id(source))


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
    fingerprint = test_set_fingerprint(run.info.run_id)
    if fingerprint:
        tags[TEST_SET_TAG] = fingerprint
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="ecgml backbones pretrained on PTB-XL")
    version = create_version(client, name, run.data.tags[MODEL_URI_TAG], run_id=run.info.run_id, tags=tags,
                             description=version_description(name, run, tags))
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
    tags = {"ecgml.source_run_id": run_id, **tags}
    fingerprint = tags.get(TEST_SET_TAG) or test_set_fingerprint(run_id)
    if fingerprint:
        tags[TEST_SET_TAG] = fingerprint
    run = client.get_run(run_id)
    version = create_version(client, name, model_uri, run_id=run_id, tags=tags,
                             description=version_description(name, run, tags))
    return str(version.version)


def guard_metric(info: VersionInfo) -> float | None:
    """The test macro AUC of a version; a calibrated version's is its source's (temperature scaling keeps
    each class's ranking, so the AUC is the same)."""
    text = info.tags.get(f"metric.{GUARD_METRIC}")
    if text is None and "ecgml.calibrated_from" in info.tags:
        try:
            return guard_metric(resolve(info.tags["ecgml.calibrated_from"]))
        except RegistryError:
            return None
    return float(text) if text is not None else None


@dataclass(frozen=True)
class ProductionCheck:
    """How a candidate compares with the current production version: ``lower`` on the same test set
    refuses the promotion (unless forced); ``warning`` is said when the figures cannot be compared."""

    lower: bool
    figures: str
    warning: str | None


def production_check(name: str, version: str, current: VersionInfo | None) -> ProductionCheck:
    """Compare ``version`` of ``name`` with ``current`` production by test macro AUC and test-set fingerprint."""
    if current is None or current.version == version:
        return ProductionCheck(False, "", None)
    new = show(name, version)
    new_auc, old_auc = guard_metric(new), guard_metric(current)
    figures = (f"v{version} test macro AUC {'?' if new_auc is None else f'{new_auc:.3f}'}, production "
               f"v{current.version} {'?' if old_auc is None else f'{old_auc:.3f}'}")
    if new_auc is None or old_auc is None:
        return ProductionCheck(False, figures, f"cannot compare {figures}: a version has no recorded {GUARD_METRIC}")
    new_set, old_set = new.tags.get(TEST_SET_TAG), current.tags.get(TEST_SET_TAG)
    if new_set is None or old_set is None or new_set != old_set:
        return ProductionCheck(False, figures, (
            f"{figures}, but on different test sets ({new_set or 'unknown'} vs {old_set or 'unknown'}): the "
            "figures are not comparable, so the promotion is not guarded"))
    return ProductionCheck(new_auc < old_auc, f"{figures} on the same test set ({new_set})", None)


def promote(name: str, version: str, stage: str | None = None, alias: str | None = None,
            user: str | None = None, *, force: bool = False,
            warn: Callable[[str], None] = _say_warning) -> VersionInfo:
    """Move ``version`` to a stage (as an alias) or set any alias, recording who did it and when.

    Every check runs before the first write: a refused request leaves the registry unchanged.
    Promotions of one model are serialised by a lock on the tracking store
    (:mod:`ecgml.tracking.promotion_lock`): the holder is read, the production guard applied and the alias
    and both histories written while no other promotion of the model runs, so of two concurrent promotions
    the second sees (and is guarded against, and records that it demoted) the first, and the histories
    always agree with the aliases. After the writes the alias is read back: a version it does not name
    (moved by something outside ecgml meanwhile) is an error, not a success.
    """
    from ecgml.tracking.promotion_lock import PromotionBusy, promotion_lock

    if (stage is None) == (alias is None):
        raise RegistryError("give exactly one of a stage (staging, production, archived) or an alias")
    if stage is not None and stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if alias is not None:
        check_alias(alias)
        if alias in STAGES:  # --alias production is the stage, guard included
            stage, alias = alias, None
    client = _client()
    _require_model(name)
    show(name, version)  # no such version: refused before the lock is taken
    try:
        with promotion_lock(client, name, warn=warn):
            _promote_locked(client, name, version, stage, alias, user, force=force, warn=warn)
    except PromotionBusy as exc:
        raise RegistryError(str(exc)) from None
    return show(name, version)


def _promote_locked(client: Any, name: str, version: str, stage: str | None, alias: str | None,
                    user: str | None, *, force: bool, warn: Callable[[str], None]) -> None:
    """:func:`promote`'s reads, checks and writes, with the model's promotion lock held."""
    current = show(name, version)
    target = stage or alias
    holder = _alias_holder(name, str(target)) if stage != "archived" else None
    check = production_check(name, version, holder) if stage == "production" else ProductionCheck(False, "", None)
    if check.lower and not force:
        raise RegistryError(f"refusing to promote {name} v{version} to production: it scores lower than the "
                            f"current production version ({check.figures}). Pass --force to promote it anyway")
    if check.lower:
        warn(f"--force: promoting {name} v{version} to production although it scores lower ({check.figures})")
    if check.warning:
        warn(check.warning)
    by, at = user or getpass.getuser(), datetime.now(UTC).isoformat(timespec="seconds")
    entry: dict[str, Any] = {"to": stage or f"alias:{alias}", "by": by, "at": at}
    if stage == "archived":
        for held in current.aliases:
            client.delete_registered_model_alias(name, held)
        client.set_model_version_tag(name, version, "ecgml.archived", "true")
        entry["removed_aliases"] = list(current.aliases)
    else:
        client.set_registered_model_alias(name, str(target), version)
        client.set_model_version_tag(name, version, "ecgml.archived", "false")
        if holder is not None and holder.version != version:
            entry["replaced"] = holder.version
            _append_history(holder, {"to": f"demoted from {target}", "by": by, "at": at,
                                     "replaced_by": version})
    if check.lower:
        entry["forced"] = True
    _append_history(current, entry)
    if stage != "archived":
        now = client.get_model_version_by_alias(name, str(target)).version
        if str(now) != str(version):
            raise RegistryError(f"{name}@{target} names v{now}, not v{version}: it was moved outside ecgml while "
                                "this promotion ran; check `ecgml registry list` and promote again")


def _alias_holder(name: str, alias: str) -> VersionInfo | None:
    import mlflow

    try:
        return show(name, _client().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def _append_history(info: VersionInfo, entry: dict[str, Any]) -> None:
    history = json.loads(info.tags.get(HISTORY_TAG, "[]"))
    history.append(entry)
    _client().set_model_version_tag(info.name, info.version, HISTORY_TAG, json.dumps(history))


def show(name: str, version: str) -> VersionInfo:
    import mlflow

    client = _client()
    try:
        mv = client.get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException:
        _require_model(name)
        held = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        raise RegistryError(f"registered model {name!r} has no version {version} "
                            f"(it has {', '.join(map(str, held)) or 'none'})") from None
    return VersionInfo(name, str(mv.version), tuple(mv.aliases or ()), mv.run_id, dict(mv.tags or {}),
                       mv.description or "")


def list_versions(name: str) -> list[VersionInfo]:
    _require_model(name)
    versions = _client().search_model_versions(f"name = '{name}'")
    if not versions:
        raise RegistryError(f"registered model {name!r} has no versions")
    return sorted((show(name, v.version) for v in versions), key=lambda v: int(v.version))


def list_models() -> dict[str, list[VersionInfo]]:
    """Every registered model with its versions (oldest first); an empty registry gives an empty dict."""
    return {name: sorted((show(name, v.version) for v in _client().search_model_versions(f"name = '{name}'")),
                         key=lambda v: int(v.version))
            for name in model_names()}


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
            _require_model(name)
            # MLflow 3's version search carries no aliases: the registered model holds them
            held = sorted(getattr(_client().get_registered_model(name), "aliases", None) or {})
            raise RegistryError(f"registered model {name!r} has no alias {alias!r} "
                                f"(its aliases: {', '.join(held) or 'none'})") from None
        return show(name, mv.version)
    name, _, version = body.partition("/")
    if not version.isdigit():
        raise RegistryError(f"{uri!r}: the version must be a number")
    return show(name, version)


def resolve_with_fallback(uri: str) -> tuple[VersionInfo, str | None]:
    """Like :func:`resolve`, but ``@production`` falls back to the newest version that is not archived, with
    a warning text naming the archived versions it skipped; when every version is archived it refuses (an
    archived version was withdrawn: using it by default would undo the withdrawal)."""
    try:
        return resolve(uri), None
    except RegistryError:
        body = uri.removeprefix("models:/")
        if "@" not in body or not body.endswith("@production"):
            raise
        name = body.split("@", 1)[0]
        versions = list_versions(name)
        live = [v for v in versions if not v.archived]
        archived = ", ".join(f"v{v.version}" for v in reversed(versions) if v.archived)
        promote_hint = f"promote one with `ecgml registry promote {name} VERSION --stage production`"
        if not live:
            raise RegistryError(f"{name} has no 'production' alias and every version is archived ({archived}); "
                                f"{promote_hint}, or name a version (models:/{name}/VERSION)") from None
        latest = live[-1]
        skipped = f" that is not archived (skipped archived {archived})" if latest is not versions[-1] else ""
        return latest, (f"{name} has no 'production' alias; using its latest version {latest.version}{skipped} "
                        f"({promote_hint})")


def download_weights(info: VersionInfo) -> Path:
    """The weights folder (``metadata.json`` + ``state_dict.pt``) of a registered version, downloaded."""
    import mlflow

    from ecgml.io import process_scratch_dir

    _client()
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{info.name}/{info.version}",
                                                     dst_path=str(process_scratch_dir("ecgml-weights-"))))
    for metadata in sorted(local.rglob("metadata.json")):
        if (metadata.parent / "state_dict.pt").is_file():
            return metadata.parent
    raise RegistryError(f"models:/{info.name}/{info.version} holds no ecgml weights folder")
