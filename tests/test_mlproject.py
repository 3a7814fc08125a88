"""Every MLproject entry point renders (with its defaults) to an ``ecgml`` command that click accepts."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import click
import pytest

from ecgml.cli import main

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"download": {"name": "ptbxl"}}


def _entry_points() -> list[str]:
    import yaml

    return sorted(yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"])


@pytest.mark.parametrize("name", _entry_points())
def test_entry_point_parses_as_an_ecgml_command(name: str, tmp_path: Path) -> None:
    from mlflow.projects import _project_spec

    entry = _project_spec.load_project(str(ROOT)).get_entry_point(name)
    command = entry.compute_command(REQUIRED.get(name, {}), str(tmp_path))
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "ecgml.cli"], command  # this checkout's code, in any environment
    argv = ["ecgml", *argv[3:]]
    # MLflow shell-quotes string values itself: quoting them again in MLproject passes the quotes on.
    assert not [a for a in argv if a and (a[0] in "'\"" or a[-1] in "'\"")], command
    ctx = main.make_context("ecgml", argv[1:], resilient_parsing=False)
    group: click.Group = main
    args = [*ctx._protected_args, *ctx.args]
    while True:  # descend groups (ecgml data synth ...) and parse the leaf command's options
        cmd_name, cmd, rest = group.resolve_command(ctx, args)
        assert cmd is not None, f"{name}: no command {cmd_name!r}"
        ctx = cmd.make_context(cmd_name, rest, parent=ctx)
        if not isinstance(cmd, click.Group):
            break
        group, args = cmd, [*ctx._protected_args, *ctx.args]
    assert ctx.params, name


#: Where an MLproject default differs in text from the CLI's and why it is still the same default (a None the CLI
#: resolves at run time). Anything else that differs fails the test below.
SAME_AS_RESOLVED = {
    ("synth", "--out"): "the CLI's None is $ECGML_DATA/synthetic, data/synthetic when unset",
    ("prepare", "--task"): "the CLI's None is shared18 for a source that has it (ptbxl, g12ec)",
    ("stats", "--task"): "the CLI's None is shared18 for a source that has it (ptbxl, g12ec)",
    ("tune", "--n-trials"): "the CLI's None is 20 for a new study",
    ("experiment", "--report-dir"): "mlflow run writes the sweep's report by default; the CLI on request",
}


_UNSET = getattr(click.core, "UNSET", object())


def _cli_default(command: click.Command, option: str) -> object:
    param = next((p for p in command.params if option in p.opts), None)
    assert param is not None, f"{command.name}: no option {option}"
    return param.default


def _same(mlproject: object, cli: object) -> bool:
    if cli is None or (isinstance(cli, Path | str) and not isinstance(mlproject, int | float)):
        return str(mlproject or "") == str(cli or "")
    if isinstance(cli, bool) or not isinstance(cli, int | float):
        return str(mlproject) == str(cli)
    return float(mlproject) == float(cli)  # type: ignore[arg-type]


def test_every_mlproject_default_equals_the_cli_default() -> None:
    """`mlflow run . -e X` and `ecgml X` behave the same unless told otherwise: each parameter's default is the
    default of the option it fills."""
    import yaml

    entries = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    differ, checked = [], 0
    for name, entry in entries.items():
        argv = shlex.split(entry["command"])[3:]
        command: click.Command = main
        while isinstance(command, click.Group):
            command, argv = command.commands[argv[0]], argv[1:]
        for option, value in itertools.pairwise(argv):
            if not (option.startswith("--") and value.startswith("{")):
                continue
            spec = entry.get("parameters", {}).get(value.strip("{}"), {})
            if "default" not in spec or (name, option) in SAME_AS_RESOLVED:
                continue
            cli = _cli_default(command, option)
            if cli is _UNSET:
                continue  # an option without a default (tune --tag, --space: multiple)
            checked += 1
            if not _same(spec["default"], cli):
                differ.append(f"{name} {option}: MLproject {spec['default']!r}, CLI {cli!r}")
    assert differ == [] and checked > 80


def test_conda_env_installs_the_package() -> None:
    import yaml

    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(p.startswith("torch") for p in pip) and any("ecgml" in p or p.startswith("-e") for p in pip)
