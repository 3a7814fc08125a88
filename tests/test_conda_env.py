"""The environments `mlflow run` and conda users build stay valid and in step with pyproject.toml, and
never pull a CUDA build of torch on a CPU machine."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def _pyproject_deps() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _ci_torch_pin() -> str:
    found = re.search(r"pip install --quiet (torch==[\d.]+)", (ROOT / ".ci/run").read_text())
    assert found, ".ci/run no longer pins torch"
    return found.group(1)


def test_conda_yaml_is_valid_and_in_step_with_pyproject() -> None:
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    assert env["name"] == "ecgml" and "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip[:2] == [CPU_INDEX, _ci_torch_pin()], "torch first, from the CPU index"
    assert pip[2:-1] == _pyproject_deps()
    assert pip[-1] == "-e ."


def test_python_env_is_valid_and_in_step_with_pyproject() -> None:
    from mlflow.utils.environment import _PythonEnv

    env = _PythonEnv.from_yaml(str(ROOT / "python_env.yaml"))
    assert re.fullmatch(r"3\.11\.\d+", env.python), "an exact release: pyenv then installs nothing it has"
    assert env.build_dependencies[-2:] == [CPU_INDEX, _ci_torch_pin()]
    assert env.dependencies == _pyproject_deps()


def test_mlproject_builds_python_env_and_runs_this_checkout() -> None:
    from mlflow.projects import _project_spec

    project = _project_spec.load_project(str(ROOT))
    assert project.env_type == "python_env" and Path(project.env_config_path).name == "python_env.yaml"
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    for name, entry in spec["entry_points"].items():
        assert entry["command"].startswith("python -m ecgml.cli "), name
