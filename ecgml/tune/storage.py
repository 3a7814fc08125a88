"""Where a study lives: a journal file (several processes on one machine; the default) or any SQLAlchemy URL
(PostgreSQL for several machines), opened with heartbeats so a crashed worker's trial is failed and retried.

Optuna's journal storage has no heartbeat of its own; :class:`JournalHeartbeatStorage` adds one the same way
``RDBStorage`` has it (a timestamp per running trial, here a system attribute in the journal), so the worker
loop treats both storages alike.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    StaleCallback = Callable[[optuna.Study, FrozenTrial], None]

#: The default storage: a journal file in the working directory, next to the default ``mlflow.db``.
DEFAULT_STORAGE = "optuna-journal.log"
HEARTBEAT_ATTR = "ecgml:heartbeat"


class StorageError(RuntimeError):
    """The study storage cannot be opened; the message names it (password hidden) and why."""


def is_url(storage: str) -> bool:
    """A SQLAlchemy URL (``postgresql://``, ``sqlite:///``, ``mysql+pymysql://``) rather than a journal path."""
    return "://" in storage


def redact(storage: str) -> str:
    """The storage as it can be shown and logged: a URL's password replaced by ``***``."""
    if not is_url(storage):
        return storage
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show the scheme only
        return storage.split("://", 1)[0] + "://***"


def _journal_class() -> type:
    """Built on first use so importing this module does not import Optuna."""
    global _JOURNAL_CLASS
    if _JOURNAL_CLASS is not None:
        return _JOURNAL_CLASS
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
        """A journal storage whose running trials send heartbeats (a timestamp attribute every interval)."""

        def __init__(self, backend: Any, heartbeat_interval: int, grace_period: int,
                     stale_callback: StaleCallback | None) -> None:
            super().__init__(backend)
            self._heartbeat_interval = heartbeat_interval
            self._grace_period = grace_period
            self._stale_callback = stale_callback

        def record_heartbeat(self, trial_id: int) -> None:
            with contextlib.suppress(UpdateFinishedTrialError, KeyError):  # the trial ended or was failed
                self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            """Running trials whose last heartbeat, or start if later, is older than the grace period (a retry
            inherits its dead predecessor's heartbeat attribute, so the start counts too)."""
            now = time.time()
            stale = []
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                marks = [float(trial.system_attrs.get(HEARTBEAT_ATTR, 0.0))]
                if trial.datetime_start is not None:
                    marks.append(trial.datetime_start.timestamp())
                if now - max(marks) > self._grace_period:
                    stale.append(trial._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self._heartbeat_interval

        def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
            return self._stale_callback

    _JOURNAL_CLASS = JournalHeartbeatStorage
    return _JOURNAL_CLASS


_JOURNAL_CLASS: type | None = None


def with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg 3, while the
    ``postgres`` extra installs psycopg2; an explicit ``+driver`` is kept as given."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2{sep}{rest}"
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    """Fail within seconds, not minutes, when a database host does not answer; drop dead pooled connections."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "postgres", "mysql")):
        kwargs["connect_args"] = {"connect_timeout": 10}
    return kwargs


def open_storage(storage: str, *, heartbeat_interval: int = 30, grace_period: int | None = None,
                 stale_callback: StaleCallback | None = None) -> BaseStorage:
    """Open (creating if needed) the storage, checking it answers; StorageError with the reason otherwise."""
    if heartbeat_interval < 1:
        raise StorageError(f"the heartbeat interval must be at least 1 s, not {heartbeat_interval}")
    grace = grace_period if grace_period is not None else 2 * heartbeat_interval
    if grace <= heartbeat_interval:
        raise StorageError(f"the grace period ({grace} s) must be longer than the heartbeat interval "
                           f"({heartbeat_interval} s), or live trials are taken for dead ones")
    if is_url(storage):
        return _open_rdb(storage, heartbeat_interval, grace, stale_callback)
    return _open_journal(Path(storage), heartbeat_interval, grace, stale_callback)


def _open_rdb(url: str, interval: int, grace: int, callback: StaleCallback | None) -> BaseStorage:
    import warnings

    from optuna.storages import RDBStorage

    shown = redact(url)
    url = with_driver(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the heartbeat options are marked experimental
            return RDBStorage(url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=interval, grace_period=grace,
                              heartbeat_stale_trial_callback=callback)
    except ImportError as exc:
        raise StorageError(f"storage {shown} needs a database driver that is not installed ({exc}); for PostgreSQL "
                           "install psycopg2-binary (pip install 'ecgml[postgres]')") from None
    except Exception as exc:  # SQLAlchemy's OperationalError, ArgumentError, ...: one line saying why
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StorageError(f"storage {shown} cannot be used: {reason[0] if reason else type(exc).__name__}") from None


def _open_journal(path: Path, interval: int, grace: int, callback: StaleCallback | None) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    folder = path.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise StorageError(f"journal storage {path}: folder {folder} does not exist or is not writable")
    if path.exists() and (path.is_dir() or not os.access(path, os.R_OK | os.W_OK)):
        raise StorageError(f"journal storage {path} is not a readable and writable file")
    try:
        backend = JournalFileBackend(str(path))
        return _journal_class()(backend, interval, grace, callback)
    except Exception as exc:  # a corrupt journal
        raise StorageError(f"journal storage {path} cannot be read: {exc}") from None


class StudyStorage:
    """The storage calls a worker makes that ``optuna.Study`` offers no public method for.

    Claiming a WAITING trial (a conditional state change, atomic in every storage), failing another worker's
    RUNNING trial, reading one trial by id and recording its heartbeat are storage calls, and Optuna keeps the
    study's storage, its id and a trial's id private (``Study._storage``, ``Study._study_id``,
    ``FrozenTrial._trial_id``). This adapter is the one place that reaches in (written against Optuna 4), so
    an Optuna release that renames them breaks here and nowhere else. It uses the study's own storage object
    (for an RDB, Optuna's caching wrapper), so the study's caches stay coherent with what the worker writes.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._storage: Any = study._storage

    @staticmethod
    def creation_order(summary: optuna.study.StudySummary) -> int:
        """A study's storage id, which grows with creation: the newest study has the largest."""
        return int(summary._study_id)

    @staticmethod
    def trial_id(trial: FrozenTrial) -> int:
        """The storage's id of a trial (not its number within the study)."""
        return int(trial._trial_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._storage.get_trial(trial_id)

    def waiting_trials(self) -> list[FrozenTrial]:
        from optuna.trial import TrialState

        return self._storage.get_all_trials(self._study._study_id, deepcopy=False, states=(TrialState.WAITING,))

    def set_state(self, trial_id: int, state: Any) -> bool:
        """Move a trial to ``state`` if no other worker changed it first; False (or Optuna's
        ``UpdateFinishedTrialError``) when one did."""
        return bool(self._storage.set_trial_state_values(trial_id, state=state))

    def record_heartbeat(self, trial_id: int) -> None:
        self._storage.record_heartbeat(trial_id)

    def forget_cached_trials(self) -> None:
        """What ``Study.ask`` does after taking a trial: the samplers see the trials as they are now."""
        local = getattr(self._study, "_thread_local", None)
        if local is not None:
            local.cached_all_trials = None
