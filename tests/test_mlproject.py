"""Every MLproject entry point renders (with its defaults) to an ``ecgml`` command that click accepts."""

from __future__ import annotations

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


def test_conda_env_installs_the_package() -> None:
    import yaml

    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(p.startswith("torch") for p in pip) and any("ecgml" in p or p.startswith("-e") for p in pip)
