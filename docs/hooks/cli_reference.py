"""MkDocs hook: the CLI reference page (``reference/cli.md``) is written at build time from ecgml's click
commands, one section per command with the text its ``--help`` prints, so it cannot drift from the code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

PAGE = "reference/cli.md"
WIDTH = 80  #: characters per help line: what fits the page's code column


def _sections(command: click.Command, ctx: click.Context, depth: int = 2) -> list[str]:
    """This command's ``--help``, then each subcommand's, in the order ``--help`` lists them."""
    out = [f"{'#' * min(depth, 4)} `{ctx.command_path}`", "", "```text", command.get_help(ctx), "```", ""]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                settings = {"max_content_width": WIDTH, **sub.context_settings}  # show_default and the like
                out += _sections(sub, click.Context(sub, info_name=name, parent=ctx, **settings), depth + 1)
    return out


def cli_reference_markdown() -> str:
    """The whole reference page, built from ``ecgml.cli.main``."""
    from ecgml.cli import main

    ctx = click.Context(main, info_name="ecgml", terminal_width=WIDTH,
                        **{"max_content_width": WIDTH, **main.context_settings})
    head = ["# CLI reference", "",
            "Every `ecgml` command with the text its `--help` prints. This page is generated from the click "
            "commands each time the docs are built.", ""]
    return "\n".join(head + _sections(main, ctx))


def on_files(files: Any, config: Any) -> Any:
    """Add the generated page; the checkout's own ecgml is imported, not an installed copy."""
    from mkdocs.structure.files import File

    root = str(Path(config["config_file_path"]).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    files.append(File.generated(config, PAGE, content=cli_reference_markdown()))
    return files
