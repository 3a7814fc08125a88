"""``ecgml models``, ``register`` and ``registry promote/list/show``: backbones and registered versions."""

from __future__ import annotations

import json
from typing import Any

import click

from ecgml.cli.options import fail
from ecgml.defaults import DEFAULT_BACKBONE_MODEL, PRETRAIN_EXPERIMENT, REGISTRY_STAGES


@click.command("models")
def models_command() -> None:
    """List the registered backbones."""
    from ecgml.models import list_backbones

    for name in list_backbones():
        click.echo(name)


@click.command("register")
@click.option("--experiment", default=PRETRAIN_EXPERIMENT, show_default=True,
              help="Where to look for pretraining runs.")
@click.option("--name", default=DEFAULT_BACKBONE_MODEL, show_default=True, help="Registered model name.")
@click.option("--metric", default="best_val_macro_auc", show_default=True, help="Higher is better.")
def register_command(experiment: str, name: str, metric: str) -> None:
    """Register the best finished pretraining run's model as a new version."""
    from ecgml.tracking.registry import RegistryError, register_best

    try:
        info = register_best(experiment, name, metric)
    except RegistryError as exc:
        fail(exc)
    click.echo(f"registered {info.name} version {info.version} from run {info.run_id} "
               f"({metric} {info.tags.get('metric.' + metric, '?')})")
    from ecgml.tracking.runs import produced_text

    click.echo(produced_text(info.run_id, f"models:/{info.name}/{info.version}"))


@click.group("registry")
def registry_group() -> None:
    """Promote registered versions through stages (as aliases) and inspect them."""


def _figures(info: Any) -> str:
    """Test macro AUC first (every version, a calibrated one's from its source), then the other metrics."""
    from ecgml.tracking.registry import TEST_SET_TAG, guard_metric

    auc = guard_metric(info)
    if auc is not None:
        head = f"test macro AUC {auc:.3f}"
    elif info.tags.get("ecgml.source") == "shipped-card":
        head = "no test macro AUC (shipped with ecgml: its card's validation figures)"
    else:
        head = "no test macro AUC recorded"
    parts = [head + (f" (test set {info.tags[TEST_SET_TAG]})" if TEST_SET_TAG in info.tags else "")]
    labels = {"best_val_macro_auc": "best val AUC", "test_macro_auprc": "AUPRC", "test_fmax": "Fmax",
              "test_macro_ece_after": "ECE", "test_macro_brier_after": "Brier"}
    for key, label in labels.items():
        if f"metric.{key}" in info.tags:
            parts.append(f"{label} {float(info.tags[f'metric.{key}']):.3f}")
    if auc is None:  # a shipped backbone: its card's figures (selected on fold 9, never tested here)
        parts += [f"{key.removeprefix('metric.')} {float(value):.3f}" for key, value in sorted(info.tags.items())
                  if key.startswith("metric.") and key.removeprefix("metric.") not in labels]
    return ", ".join(parts)


def _stage(info: Any) -> str:
    if info.archived:
        return "ARCHIVED (no aliases; promote it again to use it)"
    return f"aliases: {', '.join(sorted(info.aliases))}" if info.aliases else "no alias"


def _origin(info: Any) -> str:
    """Where a version came from: its run, or the card of a backbone shipped with ecgml (no run trained it here)."""
    if info.run_id:
        return f"run {info.run_id}"
    if info.tags.get("ecgml.source") == "shipped-card":
        return f"shipped with ecgml ({info.tags.get('ecgml.card', 'its card')})"
    return "no run"


def describe(info: Any, *, history: bool = False) -> str:
    """A registered version in a few lines: stage, key metrics, what it is, lineage, its promotions."""
    tags = info.tags
    title = info.description.splitlines()[0].strip("*") if info.description else ""
    lineage = [f"{tags.get('dataset', '?')} {tags.get('task', '')}".strip(), f"backbone {tags.get('backbone', '?')}"]
    for key, label in (("ecgml.backbone_version", "from"), ("ecgml.calibrated_from", "calibrated from")):
        if key in tags:
            lineage.append(f"{label} {tags[key]}")
    lines = [f"{info.name} v{info.version}  {_stage(info)}" + (f"  {title}" if title else ""),
             f"  {_figures(info)}",
             f"  {', '.join(lineage)}; {_origin(info)}"]
    events = json.loads(tags.get("ecgml.promotion_history", "[]"))
    shown = events if history else events[-1:]
    for event in shown:
        extra = (f" (replaced v{event['replaced']})" if "replaced" in event else "") + \
                (f" by v{event['replaced_by']}" if "replaced_by" in event else "") + \
                (" FORCED" if event.get("forced") else "")
        lines.append(f"  {'' if history else 'last: '}{event['to']}{extra}, {event['by']}, {event['at']}")
    return "\n".join(lines)


def _warn(text: str) -> None:
    click.echo(f"warning: {text}", err=True)


@registry_group.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--stage", type=click.Choice(REGISTRY_STAGES), default=None)
@click.option("--alias", default=None, help="Any other alias, e.g. champion.")
@click.option("--force", is_flag=True, help="Promote to production even if it scores lower than the current "
                                            "production version on the same test set (recorded as forced).")
def promote_command(name: str, version: str, stage: str | None, alias: str | None, force: bool) -> None:
    """Move VERSION of NAME to a stage, or give it an alias; both sides of an alias move are recorded.

    Promotion to production is refused when VERSION's test macro AUC is lower than the current production
    version's on the same test set (unless --force); on another test set it is only warned about.
    """
    from ecgml.tracking.registry import RegistryError, promote

    if force and stage != "production":
        fail(ValueError("--force only applies to --stage production (nothing else is guarded)"))
    try:
        click.echo(describe(promote(name, version, stage=stage, alias=alias, force=force, warn=_warn)))
    except RegistryError as exc:
        fail(exc)


@registry_group.command("list")
@click.argument("name", required=False)
def list_command(name: str | None) -> None:
    """Every version of NAME (without NAME: of every registered model) with stage, metrics and lineage."""
    from ecgml.tracking.registry import RegistryError, list_models, list_versions

    try:
        models = {name: list_versions(name)} if name else list_models()
    except RegistryError as exc:
        fail(exc)
    if not models:
        click.echo("no registered models yet (ecgml register, or ecgml finetune --register-as NAME)")
    for model, versions in models.items():
        aliases = {a: v.version for v in versions for a in v.aliases}
        click.echo(f"{model}: {len(versions)} version(s); "
                   + (", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "no aliases"))
        for info in versions:
            click.echo(describe(info))
        click.echo("")


@registry_group.command("show")
@click.argument("uri")
@click.option("--tags", "all_tags", is_flag=True, help="Also print every tag of the version.")
def show_command(uri: str, all_tags: bool) -> None:
    """One version: models:/NAME/VERSION or models:/NAME@ALIAS, its description and whole history."""
    from ecgml.tracking.registry import RegistryError, resolve

    try:
        info = resolve(uri)
    except RegistryError as exc:
        fail(exc)
    click.echo(describe(info, history=True))
    if info.description:
        click.echo("\n" + info.description)
    if all_tags:
        click.echo(json.dumps(info.tags, indent=2, sort_keys=True))


COMMANDS: tuple[click.Command, ...] = (models_command, register_command, registry_group)
