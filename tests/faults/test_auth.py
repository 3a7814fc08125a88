"""A shared tracking server behind MLflow's basic-auth app: unauthenticated requests are refused (401),
authenticated ones work, and ecgml says clearly, before any work, when credentials are missing or wrong."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecgml.defaults import PRETRAINED_EXPERIMENT
from ecgml.tracking.runs import open_run
from ecgml.tracking.store import TrackingError, check_tracking_uri
from tests.commands import run_ecgml
from tests.faults.mlflow_server import AUTH_ADMIN as ADMIN
from tests.faults.mlflow_server import MlflowServer, start_auth_server

# MLflow's basic-auth app needs the `auth` extra (Flask-WTF); the dev extra installs it.
pytest.importorskip("flask_wtf", reason="mlflow[auth] (Flask-WTF) is not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowServer, str]]:
    server, password = start_auth_server(tmp_path_factory.mktemp("auth"))
    yield server, password
    server.stop()


def _get(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_unauthenticated_requests_are_refused(auth_server: tuple[MlflowServer, str]) -> None:
    server, password = auth_server
    search = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(f"{server.uri}/health") == 200  # the health probe stays open, by design
    assert _get(search) == 401
    assert _get(search, ADMIN, "wrong-password-123") == 401
    assert _get(search, ADMIN, password) == 200


def test_ecgml_says_what_is_missing(auth_server: tuple[MlflowServer, str], no_credentials: pytest.MonkeyPatch,
                                    tmp_path: Path) -> None:
    server, password = auth_server
    with pytest.raises(TrackingError, match=r"authentication required \(HTTP 401\), and no credentials were given"):
        check_tracking_uri(server.uri)
    no_credentials.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    no_credentials.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-123")
    with pytest.raises(TrackingError, match=r"MLFLOW_TRACKING_PASSWORD.*were refused"):
        check_tracking_uri(server.uri)
    no_credentials.setenv("MLFLOW_TRACKING_PASSWORD", password)
    assert check_tracking_uri(server.uri) == server.uri

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_EXPERIMENT_"))
           and k != "MLFLOW_RUN_ID"}
    env.update(MLFLOW_TRACKING_URI=server.uri, ECGML_DATA=str(tmp_path), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = run_ecgml(["pretrain", "--epochs", "1"], cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"tracking server {server.uri} refused the request: authentication required" in done.stderr
    assert "Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cache").exists()  # refused before any work


def test_authenticated_runs_are_logged(auth_server: tuple[MlflowServer, str], no_credentials: pytest.MonkeyPatch
                                       ) -> None:
    import mlflow

    server, password = auth_server
    no_credentials.setenv("MLFLOW_TRACKING_URI", server.uri)
    no_credentials.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    no_credentials.setenv("MLFLOW_TRACKING_PASSWORD", password)
    with open_run("auth-check", system_metrics=False) as run:
        mlflow.log_metric("x", 1.5, step=0)
    assert mlflow.MlflowClient(server.uri).get_run(run.info.run_id).data.metrics == {"x": 1.5}


def _non_loopback_address() -> str | None:
    """An address of this machine other than 127.0.0.0/8, if it has one."""
    import socket

    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    addresses = {info[4][0] for info in infos}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the default route's address (no packet sent)
        try:
            probe.connect(("10.255.255.255", 1))
            addresses.add(probe.getsockname()[0])
        except OSError:
            pass
    return next((a for a in sorted(addresses) if not a.startswith("127.") and a != "0.0.0.0"), None)


def test_the_server_listens_on_loopback_only(auth_server: tuple[MlflowServer, str]) -> None:
    import socket

    server, _ = auth_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to probe from")
    with pytest.raises(OSError), socket.create_connection((address, server.port), timeout=5):
        pass


def test_compose_publishes_ports_on_loopback_only() -> None:
    compose = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
    # every entry under `ports:` is "HOST_IP:HOST_PORT:CONTAINER_PORT"; without a host IP Docker binds 0.0.0.0
    published = re.findall(r'^\s*-\s*"?([0-9.:]+:\d+)"?\s*$', compose.read_text(), flags=re.MULTILINE)
    assert len(published) >= 2 and all(p.startswith("127.0.0.1:") for p in published), published


def _cli(server: MlflowServer, cwd: Path, *args: str, credentials: tuple[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_EXPERIMENT_"))
           and k != "MLFLOW_RUN_ID"}
    env.update(MLFLOW_TRACKING_URI=server.uri, ECGML_DATA=str(cwd), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if credentials:
        env.update(MLFLOW_TRACKING_USERNAME=credentials[0], MLFLOW_TRACKING_PASSWORD=credentials[1])
    return run_ecgml(args, cwd=cwd, env=env, timeout=120)


def _create_user(server: MlflowServer, password: str, user: str, user_password: str) -> None:
    """A second account (MLflow's auth API, as the administrator): it may read everything, write nothing."""
    import json

    request = urllib.request.Request(f"{server.uri}/api/2.0/mlflow/users/create", method="POST",
                                     data=json.dumps({"username": user, "password": user_password}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": "Basic " +
                                              base64.b64encode(f"{ADMIN}:{password}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.mark.slow
def test_every_store_refusal_is_one_line(auth_server: tuple[MlflowServer, str], tmp_path: Path) -> None:
    """401 and 403 from the registry commands and `pretrained register`: one line each, never a traceback,
    and `pretrained register` without credentials refuses before it logs anything."""
    server, password = auth_server
    admin = (ADMIN, password)
    assert _cli(server, tmp_path, "pretrained", "register", "ptbxl-superdiagnostic", credentials=admin
                ).returncode == 0
    unauthenticated = "refused the request: authentication required (HTTP 401), and no credentials were given"
    for args in (["registry", "list"], ["registry", "show", "models:/ecgml-ptbxl-backbone/1"],
                 ["registry", "promote", "ecgml-ptbxl-backbone", "1", "--stage", "production"],
                 ["pretrained", "register", "ptbxl-superdiagnostic"]):
        done = _cli(server, tmp_path, *args)
        assert done.returncode == 1 and unauthenticated in done.stderr, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]

    import mlflow

    client = mlflow.MlflowClient(server.uri)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
        env.setenv("MLFLOW_TRACKING_PASSWORD", password)
        assert [v.version for v in client.search_model_versions("name = 'ecgml-ptbxl-backbone'")] == ["1"]
        experiment = client.get_experiment_by_name(PRETRAINED_EXPERIMENT)
        logged = client.search_logged_models([experiment.experiment_id])
        assert len(logged) == 1  # the refused registration logged no second model
    _create_user(server, password, "reader", "reader-password-123")
    reader = ("reader", "reader-password-123")
    assert "ecgml-ptbxl-backbone v1" in _cli(server, tmp_path, "registry", "list", credentials=reader).stdout
    for args in (["registry", "promote", "ecgml-ptbxl-backbone", "1", "--stage", "production"],
                 ["pretrained", "register", "ptbxl-superdiagnostic"]):
        done = _cli(server, tmp_path, *args, credentials=reader)
        assert done.returncode == 1, (args, done.stderr[-2000:])
        assert "lacks permission (HTTP 403)" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
