"""Servers the tests start themselves on 127.0.0.1: a throw-away PostgreSQL cluster, ``mlflow models serve``.

``.ci/run`` installs Debian's ``postgresql`` package; a missing binary is an error here (not a skip), so a CI
without it fails loudly instead of quietly testing less. PostgreSQL refuses to run as root: under root the
cluster belongs to the unprivileged ``postgres`` user (its folder outside pytest's root-only tmp tree).

    with postgres_server() as pg:
        url = pg.create_database("optuna")     # postgresql+psycopg2://postgres@127.0.0.1:PORT/optuna
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"


class ServerError(RuntimeError):
    """A test server could not be found or started; the message says what to install or read."""


def postgres_bin() -> Path:
    """The folder of ``initdb``/``pg_ctl`` (Debian's newest /usr/lib/postgresql/N/bin, else the PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ServerError("PostgreSQL server binaries (initdb, pg_ctl) are not installed; install Debian's 'postgresql' "
                      "package (apt-get install postgresql), as .ci/run does")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post_invocations(port: int, payload: object) -> tuple[int, dict]:
    """POST to a served model's /invocations on 127.0.0.1 (a JSON-able object, or raw bytes sent as they
    are); the HTTP status and the decoded answer, errors included."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@contextlib.contextmanager
def model_server(uri: str, cwd: Path, env: dict[str, str], *, timeout_s: float = 180,
                 workers: int = 1) -> Iterator[int]:
    """``mlflow models serve -m uri`` (local env, ``workers`` workers) on 127.0.0.1; yields its port once /ping answers,
    stops it at the end. A server that exits early fails with its stderr; one that never answers, after
    ``timeout_s``."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1",
         "-p", str(port), "-w", str(workers)], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.time() + timeout_s
        while True:
            if server.poll() is not None:
                raise ServerError(f"mlflow models serve -m {uri} exited: "
                                  f"{server.stderr.read()[-3000:] if server.stderr else ''}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.time() > deadline:
                    raise ServerError(f"the scoring server of {uri} did not come up within {timeout_s:g} s") from None
                time.sleep(0.5)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


@dataclass
class PostgresServer:
    """A running cluster: its port and how to make databases in it."""

    port: int
    folder: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    if owner is None:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", owner, "--", *argv]
    return ["su", owner, "-s", "/bin/sh", "-c", " ".join(argv)]


def _run(argv: list[str], owner: str | None, what: str, log: Path | None = None) -> None:
    done = subprocess.run(_as_owner(argv, owner), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
        raise ServerError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}{done.stdout[-500:]}\n{tail}")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb into a fresh folder, start on 127.0.0.1 and a free port (socket in the folder), stop at the end."""
    bin_dir = postgres_bin()
    owner = None
    folder = Path(tempfile.mkdtemp(prefix="ecgml-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(SUPERUSER)
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise ServerError("running as root, PostgreSQL needs an unprivileged 'postgres' user "
                              "(Debian's postgresql package creates it)") from None
        owner = SUPERUSER
        os.chown(folder, user.pw_uid, user.pw_gid)
    data, log = folder / "data", folder / "server.log"
    port = free_port()
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync",
              "--no-instructions"], owner, "initdb")
        options = f"-h 127.0.0.1 -p {port} -k {folder} -F -c max_connections=200"
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"],
             owner, "pg_ctl start", log)
        started = True
        yield PostgresServer(port, folder)
    finally:
        if started:
            with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], owner, "pg_ctl stop")
        shutil.rmtree(folder, ignore_errors=True)
