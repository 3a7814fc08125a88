"""The ``ecgml`` command line: a thin click layer that parses options into a config and calls the library.

One module per command group (:mod:`~ecgml.cli.data`, :mod:`~ecgml.cli.train`, :mod:`~ecgml.cli.jobs`,
:mod:`~ecgml.cli.registry`, :mod:`~ecgml.cli.experiments`, :mod:`~ecgml.cli.tune`), each listing its
commands in ``COMMANDS``; shared options live in :mod:`~ecgml.cli.options`. MLproject entry points call
these same commands. Importing this package imports neither torch nor mlflow: each command imports the
library it calls when it runs.
"""

from __future__ import annotations

import click

from ecgml.cli import data, experiments, jobs, predict, pretrained, registry, train, tune


class _Main(click.Group):
    """The ``ecgml`` group, with the one handler at the edge that turns every refusal of the tracking store
    (401, 403, any ``MlflowException``) into one line instead of a traceback (``--verbose`` keeps it)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:
            from ecgml.tracking.store import store_refusal

            message = store_refusal(exc)
            if message is None or ctx.params.get("verbose"):
                raise
            raise click.ClickException(message) from exc


@click.group(cls=_Main)
@click.version_option(package_name="ecgml")
@click.option("--threads", type=int, default=None, metavar="N",
              help="Intra-op threads of this process, and of each process it starts [default: its share of the "
                   "cores: all of them alone, split among tuning workers or local DDP ranks; ECGML_THREADS or "
                   "OMP_NUM_THREADS also set it].")
@click.option("--verbose", is_flag=True,
              help="Show what ecgml hides by default: MLflow's progress bars, INFO logs and known warnings.")
def main(threads: int | None, verbose: bool) -> None:
    """ecgml: transfer learning on 12-lead ECGs (PTB-XL -> G12EC), tracked in MLflow."""
    from ecgml.runtime.console import configure_console
    from ecgml.runtime.threads import ThreadBudgetError, apply_budget, available_cores, plan_budget

    configure_console(True if verbose else None)  # first: before MLflow and torch load and read the environment
    try:
        apply_budget(plan_budget(cores=available_cores(), explicit=threads))
    except ThreadBudgetError as exc:
        raise click.UsageError(str(exc)) from None


def quiet_known_library_noise() -> None:
    """What the ``ecgml`` command hides by default (for scripts that call the library the same way)."""
    from ecgml.runtime.console import configure_console

    configure_console(verbose=False)


#: The order of ``ecgml --help`` is click's (alphabetical); this order only says where each command lives.
for _module in (data, train, jobs, registry, pretrained, predict, experiments, tune):
    for _command in _module.COMMANDS:
        main.add_command(_command)
del _module, _command

__all__ = ["main", "quiet_known_library_noise"]
