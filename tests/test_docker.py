"""The Docker files, read as text and YAML (no Docker engine runs on CI): the image can write its working
folder, pins the torch CI tests, installs dependencies before the code, has the postgres and gpu extras,
and compose keeps the database password off every command line."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
STEPS = [line.split(None, 1) for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
         if line.strip() and not line.lstrip().startswith("#")]


def _index(instruction: str, needle: str = "") -> int:
    return next(i for i, (op, rest) in enumerate(STEPS) if op == instruction and needle in rest)


def test_the_image_runs_as_ecgml_and_owns_its_working_folder() -> None:
    assert STEPS[-1 - next(i for i, (op, _) in enumerate(reversed(STEPS)) if op == "USER")][1].strip() == "ecgml"
    chown = _index("RUN", "chown")
    assert re.search(r"chown -R ecgml(:ecgml)? /work\b", STEPS[chown][1])
    assert STEPS[_index("WORKDIR", "/work")][1].strip() == "/work" and _index("WORKDIR", "/work") > chown


def test_torch_is_the_version_ci_tests() -> None:
    ci = re.search(r"torch==([\d.]+)", (REPO / ".ci" / "run").read_text())
    image = re.search(r"ARG TORCH_VERSION=([\d.]+)", DOCKERFILE)
    assert ci and image and ci.group(1) == image.group(1)
    assert re.search(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cu\d+", DOCKERFILE)


def test_dependencies_install_before_the_code_is_copied() -> None:
    deps = _index("RUN", "requirements")
    assert _index("COPY", "pyproject.toml") < deps < _index("COPY", "ecgml")
    assert "--no-deps" in STEPS[_index("RUN", "--no-deps")][1]


def test_the_extras_the_image_installs_exist() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any("psycopg2" in d for d in extras["postgres"])
    assert any("nvidia-ml-py" in d for d in extras["gpu"])
    for name in ("postgres", "gpu"):
        assert f"['{name}']" in DOCKERFILE
    assert ".[postgres,gpu]" in DOCKERFILE


def test_the_run_example_gives_shared_memory() -> None:
    assert "--ipc=host" in DOCKERFILE or "--shm-size" in DOCKERFILE


def test_compose_keeps_the_password_off_command_lines_and_installs_psycopg2_once() -> None:
    text = (REPO / "docker" / "compose.yaml").read_text()
    services = yaml.safe_load(text)["services"]
    for service in services.values():
        argv = " ".join(map(str, service.get("command", []) if isinstance(service.get("command"), list)
                            else [service.get("command", "")]))
        assert "PASSWORD" not in argv and "pip install" not in argv
        assert service.get("env_file") == "db.env"
    assert "POSTGRES_PASSWORD" not in services["postgres"].get("environment", {})
    build = services["mlflow"]["build"]["dockerfile_inline"]
    assert re.search(r"pip install .*psycopg2-binary==\d+\.\d+\.\d+", build)
    assert "postgresql://ecgml@postgres" in " ".join(services["mlflow"]["command"])  # no password in the URI
