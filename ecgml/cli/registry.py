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


@click.group("registry")
def registry_group() -> None:
    """Promote registered versions through stages (as aliases) and inspect them."""


def describe(info: Any) -> str:
    """A registered version in a few lines: aliases, metrics, lineage and its last promotion."""
    metrics = ", ".join(f"{k.removeprefix('metric.')}={v}" for k, v in sorted(info.tags.items())
                        if k.startswith("metric."))
    history = json.loads(info.tags.get("ecgml.promotion_history", "[]"))
    last = history[-1] if history else None
    lines = [f"{info.name} v{info.version}  aliases: {', '.join(info.aliases) or '-'}  run: {info.run_id}",
             f"  metrics: {metrics or '-'}",
             f"  lineage: {info.tags.get('dataset', '?')} {info.tags.get('task', '')} "
             f"cache {info.tags.get('cache_digest', '?')[:12]} backbone {info.tags.get('backbone', '?')}"
             + (f" from {info.tags['ecgml.backbone_version']}" if "ecgml.backbone_version" in info.tags else "")]
    if last:
        lines.append(f"  last promotion: {last['to']} by {last['by']} at {last['at']} ({len(history)} in all)")
    return "\n".join(lines)


@registry_group.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--stage", type=click.Choice(REGISTRY_STAGES), default=None)
@click.option("--alias", default=None, help="Any other alias, e.g. champion.")
def promote_command(name: str, version: str, stage: str | None, alias: str | None) -> None:
    """Move VERSION of NAME to a stage, or give it an alias; the history is kept as a tag."""
    from ecgml.tracking.registry import RegistryError, promote

    try:
        click.echo(describe(promote(name, version, stage=stage, alias=alias)))
    except RegistryError as exc:
        fail(exc)


@registry_group.command("list")
@click.argument("name")
def list_command(name: str) -> None:
    """Every version of NAME with aliases, metrics and lineage."""
    from ecgml.tracking.registry import RegistryError, list_versions

    try:
        for info in list_versions(name):
            click.echo(describe(info))
    except RegistryError as exc:
        fail(exc)


@registry_group.command("show")
@click.argument("uri")
def show_command(uri: str) -> None:
    """One version: models:/NAME/VERSION or models:/NAME@ALIAS."""
    from ecgml.tracking.registry import RegistryError, resolve

    try:
        info = resolve(uri)
    except RegistryError as exc:
        fail(exc)
    click.echo(describe(info))
    click.echo(json.dumps(info.tags, indent=2, sort_keys=True))


COMMANDS: tuple[click.Command, ...] = (models_command, register_command, registry_group)
