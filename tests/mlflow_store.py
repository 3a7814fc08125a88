"""Fresh MLflow SQLite stores for the tests, copied from one store MLflow migrated in this test process.

Why: MLflow migrates every new SQLite file from its first schema, 1.2 CPU-seconds and about 2 s each, and
the suite makes about a hundred fresh stores: in its own processes (``tests/conftest.py`` routes MLflow's
table creation here), for the ``mlflow server`` processes it starts, and for the ``ecgml`` commands whose
first call would create the store. The copy is made page by page with SQLite's backup API from a store
MLflow itself made at its latest revision, so what a server or a command opens is the store MLflow would
have made; opening it, MLflow checks the revision as it does for any existing store.
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

_lock = threading.Lock()
_template: list[Path] = []
#: MLflow's own table creation, kept before the suite's patch replaces it (see ``tests/conftest.py``).
_migrate: list[Callable[..., None]] = []


def remember_migration(migrate: Callable[..., None]) -> None:
    """Keep MLflow's ``_initialize_tables`` so the template is made by it even after it is patched."""
    if not _migrate:
        _migrate.append(migrate)


def _template_path() -> Path:
    with _lock:
        if not _template:
            import sqlalchemy

            if not _migrate:
                from mlflow.store.db.utils import _initialize_tables

                _migrate.append(_initialize_tables)
            folder = tempfile.mkdtemp(prefix="ecgml-mlflow-template-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            path = Path(folder) / "mlflow.db"
            engine = sqlalchemy.create_engine(f"sqlite:///{path}")
            try:
                _migrate[0](engine)
            finally:
                engine.dispose()
            _template.append(path)
        return _template[0]


def copy_migrated_store(database: str | Path) -> None:
    """Write the migrated template's tables into ``database`` (created if absent, replaced page by page)."""
    with closing(sqlite3.connect(_template_path())) as source, closing(sqlite3.connect(database)) as target:
        source.backup(target)  # sqlite3's own context manager commits but does not close


def seeded_sqlite_uri(database: Path) -> str:
    """``sqlite:///database``, its file seeded from the template when it does not exist yet (a store that
    exists is left as it is), for a process the test starts that would otherwise migrate it itself."""
    database = Path(database)
    if not database.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        copy_migrated_store(database)
    return f"sqlite:///{database}"
