"""``ecgml pretrained list|register``: the backbones pretrained on real PTB-XL that ship with ecgml."""

from __future__ import annotations

import click

from ecgml.cli.options import fail
from ecgml.data.labels import PTBXL_TASKS
from ecgml.defaults import DEFAULT_BACKBONE_MODEL


@click.group("pretrained")
def pretrained_group() -> None:
    """Backbones pretrained on real PTB-XL shipped with ecgml, each with a model card."""


@pretrained_group.command("list")
def list_command() -> None:
    """Print each shipped backbone: task, classes, input, fold-9 figures (for an `all` model also its
    statement families, labelled as scored from it) and where its card is."""
    from ecgml.evaluate.families import family_metric, family_metrics
    from ecgml.pretrained.shipped import SHIPPED_DIR, PretrainedError, list_shipped

    try:
        models = list_shipped()
    except PretrainedError as exc:
        fail(exc)
    if not models:
        click.echo(f"this ecgml ships no pretrained backbone ({SHIPPED_DIR} holds none)")
        return
    for model in models:
        card = model.card
        families = family_metrics(card.metrics)
        own = {k: v for k, v in card.metrics.items() if k not in {family_metric(f) for f in families}}
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(own.items()))
        click.echo(f"{model.name}  task {card.task} ({len(card.classes)} classes)  {card.backbone}  "
                   f"{card.fs} Hz, {len(card.leads)} leads, {card.input_samples / card.fs:g} s windows")
        click.echo(f"  {card.dataset} {card.data_release}, folds {','.join(map(str, card.train_folds))} / "
                   f"selected on {','.join(map(str, card.selection_folds))}: {metrics or '-'}")
        if families:
            click.echo("  statement families scored from this model (fold 9 macro AUC): "
                       + ", ".join(f"{f} {v:.3f}" for f, v in families.items()))
        click.echo(f"  card: {model.folder / 'CARD.md'}")


@pretrained_group.command("register")
@click.argument("name")
@click.option("--alias", default=None, help="Alias to move to the new version (e.g. production, staging, champion).")
@click.option("--task", type=click.Choice(PTBXL_TASKS), default=None,
              help="Refuse unless the backbone was trained on this task.")
@click.option("--registered-name", default=DEFAULT_BACKBONE_MODEL, show_default=True)
def register_command(name: str, alias: str | None, task: str | None, registered_name: str) -> None:
    """Register shipped backbone NAME as a new version (lineage: the shipped card, no run) and print its URI."""
    from ecgml.pretrained.register import register_shipped
    from ecgml.pretrained.shipped import PretrainedError
    from ecgml.tracking.registry import RegistryError

    try:
        registered = register_shipped(name, alias=alias, task=task, registered_name=registered_name)
    except (PretrainedError, RegistryError) as exc:
        fail(exc)
    from ecgml.tracking.runs import version_link

    click.echo(f"registered {name} as {registered_name} version {registered.version}")
    click.echo(f"version:    {version_link(f'models:/{registered_name}/{registered.version}')}")
    click.echo(registered.uri)


COMMANDS: tuple[click.Command, ...] = (pretrained_group,)
