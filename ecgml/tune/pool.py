"""The worker processes of ``ecgml tune --workers N`` on one machine.

Why this shape: a new worker needs seconds before its first trial (starting Python, importing torch,
MLflow and Optuna, opening the stores), and the launcher's own set-up (imports, the data cache, the parent
run) takes seconds too. So the two overlap, and the second worker begins its first trial about a second
after the first (``benchmarks/README.md``, concurrency: ``tune --workers 2`` against 1):

* the launching process is worker 0 itself (its share of the cores applied in place), so only N-1 new
  processes start, and its tracking store, storage and imports are already warm;
* those N-1 start first, before the launcher's own set-up: they import what a trial needs while it works,
  then block on their stdin until it writes the study's name (EOF: the set-up failed, exit quietly).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from ecgml.runtime.threads import ThreadBudget
    from ecgml.tune.settings import RunSettings

Echo = Callable[[str], None]
#: ``python -m`` entry of a launched worker (this module's :func:`child_main`).
ENTRY = "ecgml.tune.pool"


def worker_command(index: int, settings: RunSettings) -> list[str]:
    """A launched worker: the study's name comes on its stdin; the storage in ``ECGML_OPTUNA_STORAGE``
    (not on the command line, where ``ps`` shows passwords)."""
    return [sys.executable, "-m", ENTRY, "--worker-index", str(index),
            "--heartbeat-interval", str(settings.heartbeat_interval),
            "--grace-period", str(settings.grace_period or 2 * settings.heartbeat_interval),
            "--max-retry", str(-1 if settings.max_retry is None else settings.max_retry)]


def _cuda_started() -> bool:
    """Whether this process has initialised CUDA (then CUDA_VISIBLE_DEVICES can no longer change here)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


@dataclass
class WorkerPool:
    """Worker 0 (this process) and the processes of workers 1..N-1, started before the study is ready."""

    settings: RunSettings
    shares: list[ThreadBudget]
    procs: dict[int, subprocess.Popen[str]] = field(default_factory=dict)
    #: With --gpus in a process that already initialised CUDA, every worker is a new process.
    here: bool = True

    @classmethod
    def start(cls, settings: RunSettings, echo: Echo) -> WorkerPool:
        """Start the new worker processes; they wait on their stdin for :meth:`release`."""
        from ecgml.runtime.threads import child_budgets, child_env, process_budget
        from ecgml.tracking.store import tracking_uri

        shares = child_budgets(process_budget(), settings.workers, "tune workers")  # the workers split the cores
        pool = cls(settings, shares, here=not (settings.gpus and _cuda_started()))
        if shares[0].note:
            echo(f"warning: {shares[0].note}")
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
        env["ECGML_OPTUNA_STORAGE"] = settings.storage
        env["MLFLOW_TRACKING_URI"] = tracking_uri()
        for index in range(1 if pool.here else 0, settings.workers):
            worker_env = child_env(env, shares[index])
            if settings.gpus:
                worker_env["CUDA_VISIBLE_DEVICES"] = pool.gpu(index)
            try:
                proc = subprocess.Popen(worker_command(index, settings), env=worker_env, stdin=subprocess.PIPE,
                                        text=True)
            except BaseException:
                pool.cancel()
                raise
            pool.procs[index] = proc
            echo(f"worker {index} started (pid {proc.pid}, {shares[index].threads} thread(s)"
                 + (f", CUDA_VISIBLE_DEVICES={worker_env['CUDA_VISIBLE_DEVICES']}" if settings.gpus else "") + ")")
        return pool

    def gpu(self, index: int) -> str:
        return self.settings.gpus[index % len(self.settings.gpus)]

    def release(self, study_name: str) -> None:
        """Tell every started worker the study is ready (a worker that already died is reported by :meth:`wait`)."""
        for proc in self.procs.values():
            _tell(proc.stdin, study_name + "\n")

    def cancel(self) -> None:
        """The set-up failed or was interrupted: the workers get EOF and stop (at once if still importing)."""
        for proc in self.procs.values():
            _tell(proc.stdin, "")
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait()

    def work_here(self, study_name: str, echo: Echo) -> None:
        """Run worker 0 in this process with its share of the cores, then restore this process's budget."""
        from ecgml.runtime.threads import apply_budget, process_budget
        from ecgml.tune.worker import run_worker

        if not self.here:
            return
        own = process_budget()
        if self.settings.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.gpu(0)
        share = apply_budget(self.shares[0], warn=None)  # said by start() already
        echo(f"worker 0 started (pid {os.getpid()}, {share.threads} thread(s), the launching process"
             + (f", CUDA_VISIBLE_DEVICES={self.gpu(0)}" if self.settings.gpus else "") + ")")
        try:
            run_worker(self.settings.storage, study_name, worker_index=0,
                       heartbeat_interval=self.settings.heartbeat_interval, grace_period=self.settings.grace_period,
                       max_retry=self.settings.max_retry, echo=echo)
        finally:
            apply_budget(own, warn=None)

    def wait(self) -> dict[int, int]:
        """Exit codes of the started workers by index; Ctrl-C stops them (each fails and retries its trial)."""
        try:
            return {index: proc.wait() for index, proc in self.procs.items()}
        except KeyboardInterrupt:
            self.cancel()
            raise


def _tell(stream: IO[str] | None, text: str) -> None:
    """Write ``text`` and close: a worker that died already has closed its end (nothing to tell it)."""
    if stream is None or stream.closed:
        return
    try:
        if text:
            stream.write(text)
        stream.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _preload() -> None:
    """What every trial needs, imported while the launcher still sets the study up."""
    import mlflow  # noqa: F401
    import optuna  # noqa: F401
    import torch  # noqa: F401

    import ecgml.train.runner  # noqa: F401


def child_main(argv: Sequence[str] | None = None) -> int:
    """A launched worker: set up like the ``ecgml`` command, preload, wait for the study's name, work."""
    parser = argparse.ArgumentParser(prog=f"python -m {ENTRY}", description="One worker of `ecgml tune --workers N`.")
    parser.add_argument("--worker-index", type=int, required=True)
    parser.add_argument("--heartbeat-interval", type=int, default=30)
    parser.add_argument("--grace-period", type=int, default=None)
    parser.add_argument("--max-retry", type=int, default=3)
    args = parser.parse_args(argv)
    from ecgml.runtime.console import configure_console
    from ecgml.runtime.threads import ensure_budget

    configure_console(None)  # first: before MLflow and torch load and read the environment
    ensure_budget()  # the share the launcher wrote into the environment, before torch loads OpenMP
    storage = os.environ.get("ECGML_OPTUNA_STORAGE")
    if not storage:
        print(f"error: {ENTRY} needs ECGML_OPTUNA_STORAGE (it is started by `ecgml tune --workers N`)",
              file=sys.stderr)
        return 2
    try:
        _preload()
        study_name = sys.stdin.readline().strip()
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the launcher reports it
        return 130
    if not study_name:  # the launcher's set-up failed or was interrupted: it says why
        return 0
    return _work(storage, study_name, args)


def _work(storage: str, study_name: str, args: argparse.Namespace) -> int:
    import warnings

    from ecgml.tracking.store import TrackingError
    from ecgml.tune.spec import StudyError
    from ecgml.tune.storage import StorageError
    from ecgml.tune.worker import run_worker

    def echo(line: str) -> None:
        print(line, flush=True)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            run_worker(storage, study_name, worker_index=args.worker_index,
                       heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
                       max_retry=None if args.max_retry == -1 else args.max_retry, echo=echo)
    except (StudyError, StorageError, TrackingError, OSError) as exc:
        print(f"error: worker {args.worker_index}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
