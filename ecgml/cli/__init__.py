"""The ``ecgml`` command line: a thin click layer that parses options into a config and calls the library.

One module per command group (:mod:`~ecgml.cli.data`, :mod:`~ecgml.cli.train`, :mod:`~ecgml.cli.jobs`,
:mod:`~ecgml.cli.registry`, :mod:`~ecgml.cli.experiments`, :mod:`~ecgml.cli.tune`), each listing its
commands in ``COMMANDS``; shared options live in :mod:`~ecgml.cli.options`. MLproject entry points call
these same commands. Importing this package imports neither torch nor mlflow: each command imports the
library it calls when it runs.
"""

from __future__ import annotations

import click

from ecgml.cli import data, experiments, jobs, registry, train, tune


@click.group()
@click.version_option(package_name="ecgml")
def main() -> None:
    """ecgml: transfer learning on 12-lead ECGs (PTB-XL -> G12EC), tracked in MLflow."""
    quiet_known_library_noise()


def quiet_known_library_noise() -> None:
    """MLflow warnings that say nothing about the user's job (checked for each: benign here)."""
    import logging
    import warnings

    for message in ("The specified dataset source can be interpreted in multiple ways",  # our CSV index inputs
                    "Hint: Inferred schema contains integer column",  # dataset inputs, not model schemas
                    ".*Add type hints to the `predict` method",  # the pyfunc validates its own input
                    ".*Type hint used in the model's predict function"):
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


#: The order of ``ecgml --help`` is click's (alphabetical); this order only says where each command lives.
for _module in (data, train, jobs, registry, experiments, tune):
    for _command in _module.COMMANDS:
        main.add_command(_command)
del _module, _command

__all__ = ["main", "quiet_known_library_noise"]
