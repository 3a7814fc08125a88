"""A real ``mlflow server`` for fault tests: 127.0.0.1 only, a free port, SQLite backend (seeded from the suite's
migrated store, ``tests/mlflow_store.py``) and local artifacts in a temporary folder, one worker; stopped (the
whole process group) by :meth:`MlflowServer.stop`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.mlflow_store import seeded_sqlite_uri
from tests.servers import free_port


class MlflowServer:
    """One ``mlflow server`` process group; ``start`` again after ``stop`` reuses the same store and port."""

    def __init__(self, folder: Path, *, port: int | None = None, app_name: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.app_name = app_name
        # the GenAI job runner is a second process importing MLflow: not needed here, and it slows each start
        self.env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> MlflowServer:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", "1", "--backend-store-uri", seeded_sqlite_uri(self.folder / "mlflow.db"),
                   "--artifacts-destination", str(self.folder / "artifacts")]
        if self.app_name:
            command += ["--app-name", self.app_name]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.healthy():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server and its workers (their process group), by default as abruptly as a crash."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        deadline = time.monotonic() + 10
        while self.healthy() and time.monotonic() < deadline:  # workers die with the group
            time.sleep(0.1)
        self.proc = None


#: The basic-auth app's administrator (its password is made per server).
AUTH_ADMIN = "admin"


def start_server(folder: Path, *, app_name: str | None = None, env: dict[str, str] | None = None,
                 attempts: int = 3) -> MlflowServer:
    """A started server in ``folder`` on a free port; a port another test process took between the pick and
    the bind (pytest-xdist) gets a fresh one, up to ``attempts`` times."""
    for attempt in range(attempts):
        server = MlflowServer(folder, app_name=app_name, env=env)
        try:
            return server.start()
        except RuntimeError:
            server.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def start_auth_server(folder: Path) -> tuple[MlflowServer, str]:
    """A started server behind MLflow's basic-auth app (everyone may read, only :data:`AUTH_ADMIN` may write);
    returns it with the administrator's password, made here (MLflow 3 ships none)."""
    import secrets

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
                      f"admin_username = {AUTH_ADMIN}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      "auth_cache_ttl_seconds = 300\n")  # as docs/several-machines.md advises
    password = secrets.token_urlsafe(18)
    server = start_server(folder, app_name="basic-auth", env={
        "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
    return server, password
