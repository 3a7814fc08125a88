"""The tests' preloaded command launcher (``tests/commands.py``) answers as a fresh ``python -m ecgml.cli`` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.commands import run_ecgml

CASES = [
    ["data", "stats", "--source", "nope"],  # click's usage error: exit 2, the program name in the message
    ["data", "stats", "--source", "ptbxl"],  # ecgml's own error, from ECGML_DATA: exit 1, one line
    ["data", "stats", "--source", "ptbxl", "--root", "relative"],  # a relative path, from the working directory
    ["--version"],
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a))
def test_a_command_answers_as_a_fresh_interpreter_does(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "ECGML_DATA": str(tmp_path / "nowhere"), "OMP_NUM_THREADS": "1"}
    fresh = subprocess.run([sys.executable, "-m", "ecgml.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    launched = run_ecgml(args, cwd=tmp_path, env=env, timeout=120)
    assert (launched.returncode, launched.stdout, launched.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert launched.args == fresh.args


def test_each_command_gets_its_own_environment_and_directory(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    one = run_ecgml(["data", "stats", "--source", "ptbxl"], cwd=first, env={**os.environ, "ECGML_DATA": "x"})
    two = run_ecgml(["data", "stats", "--source", "ptbxl", "--root", "r"], cwd=second, env=dict(os.environ))
    assert one.returncode == two.returncode == 1
    assert "x/synthetic/ptbxl/ptbxl_database.csv: not found" in one.stderr  # ECGML_DATA given to this one only
    assert "r/ptbxl_database.csv: not found" in two.stderr and "x/synthetic" not in two.stderr
    assert "ECGML_DATA" not in os.environ or os.environ["ECGML_DATA"] != "x"  # nothing leaked into this process
