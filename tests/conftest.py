"""Shared fixtures: the real sample folder (skipped with a reason when absent) and tiny trees; the share of
the cores each pytest-xdist worker runs with."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

REAL_SAMPLE = Path(os.environ.get("ECGML_REAL_SAMPLE", Path(__file__).resolve().parents[1].parent
                                  / "shared" / "real-sample"))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: absent under -p no:xdist
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (the suite's default, pyproject.toml): one worker per core this process may use, the same
    count ecgml's thread budget splits (CPU affinity capped by a cgroup quota), not the machine's cores."""
    from ecgml.runtime.threads import available_cores

    return available_cores()


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker, before any test module loads torch: this worker's share of the cores, exported the
    way an ecgml launcher gives one to its children, so the workers' in-process trainings, and the processes
    their tests start, split the cores instead of each taking them all. A count the user set
    (``ECGML_THREADS``, ``OMP_NUM_THREADS``) is kept per worker, as for any launcher."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count:
        return
    from ecgml.runtime.threads import child_budgets, export_budget, process_budget

    share = child_budgets(process_budget(), int(count), "pytest-xdist workers")[int(worker.removeprefix("gw"))]
    export_budget(share)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In xdist workers: the files with the most ``slow`` tests first, each file's tests in their order.

    ``--dist loadfile`` hands a worker one file at a time in this order (``--no-loadscope-reorder`` keeps it),
    so the long end-to-end files start at once and the many quick ones fill in behind them, instead of one
    long file starting last and running alone at the end. Every worker sorts the same collection the same
    way, as xdist requires; a run without xdist keeps pytest's own order.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    first = {}
    for index, item in enumerate(items):
        first.setdefault(item.path, index)
    items.sort(key=lambda item: (-slow[item.path], first[item.path]))


@pytest.fixture(scope="session", autouse=True)
def _fresh_sqlite_stores_from_one_migration() -> Iterator[None]:
    """A fresh SQLite tracking store in a test process gets the tables of one store MLflow migrated in this
    process (``tests/mlflow_store.py``), instead of running every Alembic migration again.

    Why: MLflow migrates each new SQLite file from its first schema, 1.0-3.2 s each; the suite opened 85 fresh
    stores in its own processes (87 s of worker time). Processes a test starts (``ecgml``, ``mlflow server``)
    get the same copy where the test seeds their store first (``seeded_sqlite_uri``); a store nobody seeded
    (``mlflow run``'s) is migrated by MLflow as users' are.
    """
    import mlflow.store.db.utils as db_utils
    import mlflow.store.model_registry.sqlalchemy_store as registry_store
    import sqlalchemy

    from tests.mlflow_store import copy_migrated_store, remember_migration

    migrate = db_utils._initialize_tables
    remember_migration(migrate)

    def initialize(engine: sqlalchemy.engine.Engine) -> None:
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            migrate(engine)
            return
        copy_migrated_store(database)

    mp = pytest.MonkeyPatch()
    mp.setattr(db_utils, "_initialize_tables", initialize)
    mp.setattr(registry_store, "_initialize_tables", initialize)  # imported by name there
    yield
    mp.undo()


#: Which run and experiment MLflow uses when none is named: as the suite found them, for every test.
_RUN_IDENTITY = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
_SUITE_ENV = {k: os.environ[k] for k in _RUN_IDENTITY if k in os.environ}


@pytest.fixture(autouse=True)
def _restore_mlflow_state() -> Iterator[None]:
    """Tests run ecgml in-process, and MLflow writes to the process: ``mlflow.set_experiment`` exports
    ``MLFLOW_EXPERIMENT_ID`` and keeps an active experiment, a training run sets HTTP retry defaults.

    Before each test the run identity is put back as the suite found it (a module-scoped fixture may have
    set it before this fixture could look); after each test every other variable a test added goes away.
    """
    _reset_run_identity()
    before = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "ECGML_"))}
    yield
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "ECGML_"))]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)
    _reset_run_identity()


def _reset_run_identity() -> None:
    import sys

    for key in _RUN_IDENTITY:
        if key in _SUITE_ENV:
            os.environ[key] = _SUITE_ENV[key]
        else:
            os.environ.pop(key, None)
    fluent = sys.modules.get("mlflow.tracking.fluent")  # only if a test imported MLflow at all
    if fluent is not None and hasattr(fluent, "_active_experiment_id"):
        fluent._active_experiment_id = None
    service = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if service is not None and hasattr(service, "_tracking_uri"):  # else an earlier test's URI beats the env
        service._tracking_uri = None


def _real(sub: str) -> Path:
    path = REAL_SAMPLE / sub
    if not path.exists():
        pytest.skip(f"real sample {path} is absent (set ECGML_REAL_SAMPLE to the shared/real-sample folder)")
    return path


@pytest.fixture(scope="session")
def real_ptbxl() -> Path:
    return _real("ptbxl")


@pytest.fixture(scope="session")
def real_ptbxl_metadata() -> Path:
    return _real("ptbxl-metadata")


@pytest.fixture(scope="session")
def real_g12ec() -> Path:
    return _real("g12ec")


@pytest.fixture(scope="session")
def real_challenge() -> Path:
    return _real("challenge-2021")


@pytest.fixture(scope="session")
def real_challenge_2020() -> Path:
    return _real("challenge-2020")


@pytest.fixture(params=["sqlite", "http"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A tracking URI for a test that talks to MLflow, run twice: a SQLite file, and a real ``mlflow server``
    over HTTP started on 127.0.0.1 (what teams use; a registration bug once hid behind SQLite-only tests).
    A module that needs another kind of store defines its own ``store``, which takes precedence."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mlflow.db'}"
        return
    from tests.faults.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path / "server").start()
    try:
        yield server.uri
    finally:
        server.stop()
