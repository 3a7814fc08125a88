"""A sweep's independent runs side by side: ``--jobs N`` worker processes, each with a share of the cores.

Why: a sweep's training runs (24 in ``ecgml main``) are independent once their backbone is registered,
and two processes of one thread each do 1.5-1.7x the work of one process of two on 2 cores
(``benchmarks/concurrency.py``). The sweep's process plans the jobs, names them and opens the sweep run as
before; N worker processes (spawned, so nothing of the parent's torch or MLflow state is shared) run
:func:`ecgml.experiments.study.run_job` on one job at a time: the same get-or-run, the same child of the
sweep run (``parent_run_id``), the same tags and run names, calibrations nested under their run. A
fine-tuning job starts once the pretraining job it starts from has finished; the backbone is registered
by the sweep's process alone (one writer for the registry's version numbers). Results are reported in the
plan's order, so ``children.json`` and the report are those of ``--jobs 1``.

Each worker gets its share of the thread budget (:func:`ecgml.runtime.threads.child_budgets`) in its
environment before torch loads, so OpenMP reads it too.

The tracking store: every worker logs its own runs. MLflow's SQLAlchemy store opens each SQLite session
with ``PRAGMA busy_timeout = 20000`` (a writer waits up to 20 s for another's lock), and retries a model
version's number on a conflict; :func:`prepare_store_for_writers` also puts a SQLite store in WAL mode
(persistent, in the file), where readers never block the writer, so the window in which a transaction that
read can fail to become a writer ("database is locked" at once, without waiting) is small. A server store
(``http://``, PostgreSQL) needs nothing.

Beside other work (:class:`Beside`, ``ecgml main``): the sweep's runs that need nothing from that work (the
standalone ones) start while it runs in the sweep's own process, on the cores it leaves free; the fine-tuning
runs wait for the backbone it registers. ``ecgml main`` pretrains and fine-tunes its own models that way
while the sweep's 18 standalone runs go on beside them, instead of leaving them for after.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ecgml.experiments.schema import FINETUNE, PRETRAIN
from ecgml.runtime.threads import ThreadBudget, child_budgets, process_budget

if TYPE_CHECKING:
    from ecgml.experiments.study import Job, JobDone, JobResult, StudyConfig


#: How often a sweep waiting on work beside it looks again (the backbone registered, the cores freed).
BESIDE_POLL_S = 0.25


@dataclass
class Beside:
    """Work this process does while a sweep runs: it holds ``held`` of the sweep's workers' cores until it is
    done, and registers the backbone the sweep's fine-tuning jobs start from (``backbone``: its URI once
    registered, or the error that stopped the work before it was)."""

    held: int
    budgets: list[ThreadBudget]
    backbone: Future[str] = field(default_factory=Future)
    done: threading.Event = field(default_factory=threading.Event)
    #: How the work failed, if it did: the sweep starts no new job after that.
    error: BaseException | None = None

    def free_workers(self, workers: int) -> int:
        """Workers the sweep may keep busy now."""
        return workers if self.done.is_set() else max(1, workers - self.held)

    def failure(self) -> BaseException | None:
        """The error that stopped the work, if any."""
        if self.error is not None:
            return self.error
        return self.backbone.exception() if self.backbone.done() else None

    def finish(self, error: BaseException | None = None) -> None:
        """The work ended (``error``: how it failed): its cores go to the sweep; a failure stops the sweep from
        starting more jobs."""
        self.error = error
        if not self.backbone.done():
            self.backbone.set_exception(error or RuntimeError("the work beside the sweep ended without registering "
                                                              "its backbone"))
        self.done.set()


def plan_beside(requested: int | None, n_jobs: int) -> Beside | None:
    """Shares of the cores for a sweep of ``n_jobs`` jobs beside work in this process: this process's share
    (``budgets[0]``, applied by the caller while it works) and the sweep's workers' (all of ``budgets``);
    None when the sweep runs in one process (``--jobs 1``, one core), where nothing can go side by side."""
    workers = job_count(requested, n_jobs)
    if workers < 2:
        return None
    return Beside(held=1, budgets=child_budgets(process_budget(), workers, "sweep jobs"))


def job_count(requested: int | None, n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` jobs: ``requested`` (``--jobs``), or as many as the thread budget
    allows (one per thread of this process's share; with a per-process count the user set, as many
    processes of that count as fit the cores), never more than the jobs."""
    if requested is None:
        budget = process_budget()
        if not budget.enabled:
            requested = 1
        elif budget.user_set:
            requested = max(1, budget.cores // budget.threads)
        else:
            requested = budget.threads
    return max(1, min(requested, n_jobs))


def prepare_store_for_writers(uri: str) -> None:
    """Put a local SQLite tracking store in WAL mode before several processes write to it (see the module doc)."""
    if not uri.startswith("sqlite:///"):
        return
    import sqlite3

    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not os.path.exists(path):
        return  # MLflow creates it on first use; the sweep's run is open by now, so it exists in practice
    with sqlite3.connect(path, timeout=20) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _start_worker(env: dict[str, str]) -> None:
    """A worker's first step, before anything imports torch or MLflow: its budget, the tracking URI and the
    console the ``ecgml`` command set up (library noise off unless ``ECGML_VERBOSE``), since the worker writes
    to the same terminal or log."""
    os.environ.update(env)
    from ecgml.runtime.console import configure_console
    from ecgml.runtime.threads import ensure_budget

    configure_console()
    ensure_budget(warn=None)


def _run_in_worker(job: Job, run_name: str, init_uri: str | None, study: StudyConfig, sweep_id: str, commit: str,
                   data: dict[str, str]) -> JobDone:
    from ecgml.experiments.study import run_job

    return run_job(job, run_name, init_uri, study, sweep_id, commit, data)


def _worker_envs(budgets: Sequence[ThreadBudget], uri: str) -> list[dict[str, str]]:
    envs = []
    for budget in budgets:
        env = {**budget.env(), "MLFLOW_TRACKING_URI": uri}
        if budget.enabled and budget.wait_policy and "OMP_WAIT_POLICY" not in os.environ:
            env["OMP_WAIT_POLICY"] = budget.wait_policy
        envs.append(env)
    return envs


def run_jobs_side_by_side(jobs: Sequence[Job], names: Sequence[str], study: StudyConfig, sweep_id: str, commit: str,
                          data: dict[str, str], say: Callable[[str], None], workers: int,
                          beside: Beside | None = None) -> list[JobResult]:
    """Run ``jobs`` (named ``names``) in ``workers`` processes; their results in the plan's order.

    ``beside``: work in this process holds some of the cores until it is done, and the fine-tuning jobs
    without a pretraining job of their own start from the backbone it registers; the sweep returns only once
    that work is done too.

    A job that fails stops new jobs from starting; the running ones finish (their runs end cleanly), then
    the first failure is raised. So does the work beside failing before it registered the backbone.
    """
    from ecgml.experiments.study import JobResult, done_line, finished_job, job_label, registered_backbone
    from ecgml.tracking.store import tracking_uri

    uri = tracking_uri()
    prepare_store_for_writers(uri)
    budgets = beside.budgets if beside is not None else child_budgets(process_budget(), workers, "sweep jobs")
    context = multiprocessing.get_context("spawn")
    pools = [ProcessPoolExecutor(1, mp_context=context, initializer=_start_worker, initargs=(env,))
             for env in _worker_envs(budgets[:workers], uri)]
    say(f"{len(jobs)} runs in {workers} worker processes side by side"
        + (f" ({workers - beside.free_workers(workers)} of them once the work beside the sweep is done)"
           if beside is not None and not beside.done.is_set() else ""))
    idle = list(pools)
    waiting = list(range(len(jobs)))
    running: dict[Future[JobDone], tuple[int, ProcessPoolExecutor]] = {}
    backbones: dict[str, str] = {}
    results: list[JobResult | None] = [None] * len(jobs)
    failure: BaseException | None = None
    looked_up: set[int] = set()  # jobs already looked for among the finished runs
    try:
        while (waiting and failure is None) or running:
            if beside is not None and failure is None:
                failure = beside.failure()
            for index in list(waiting) if failure is None else []:
                job = jobs[index]
                if job.arm == FINETUNE and job.pretrain_key and job.pretrain_key not in backbones:
                    continue  # its backbone is still training
                if job.arm == FINETUNE and not job.pretrain_key and beside is not None and not beside.backbone.done():
                    continue  # the backbone is still training beside the sweep
                init_uri = ((backbones[job.pretrain_key] if job.pretrain_key else
                             beside.backbone.result() if beside is not None else study.backbone_uri)
                            if job.arm == FINETUNE else None)
                if index not in looked_up:
                    looked_up.add(index)
                    reused = finished_job(job, init_uri, study, commit, data)
                    if reused is not None:  # found here: no worker started for it
                        waiting.remove(index)
                        if job.arm == PRETRAIN:
                            backbones[job.key] = registered_backbone(reused.run_id, job)
                        say(done_line(job_label(index + 1, len(jobs), job), reused))
                        results[index] = JobResult(job, reused.run_id, reused.test_macro_auc, True, reused.seconds)
                        continue
                if not idle or (beside is not None and len(running) >= beside.free_workers(workers)):
                    continue  # no worker free: the jobs after it may still be found finished
                pool = idle.pop()
                running[pool.submit(_run_in_worker, job, names[index], init_uri, study, sweep_id, commit,
                                    data)] = (index, pool)
                waiting.remove(index)
            pending = beside is not None and not beside.done.is_set()
            if not running:
                if pending and waiting and failure is None:
                    beside.done.wait(BESIDE_POLL_S)  # the jobs left wait for the backbone
                    continue
                if not waiting or failure is not None:
                    break
                raise RuntimeError("no sweep job can start: a fine-tuning job waits for a pretraining job that is "
                                   "not in the plan")
            finished, _ = wait(list(running), timeout=BESIDE_POLL_S if pending else None,
                               return_when=FIRST_COMPLETED)
            for future in finished:
                index, pool = running.pop(future)
                idle.append(pool)
                try:
                    done = future.result()
                except BaseException as exc:
                    failure = failure or exc
                    continue
                job = jobs[index]
                if job.arm == PRETRAIN:
                    backbones[job.key] = registered_backbone(done.run_id, job)
                say(done_line(job_label(index + 1, len(jobs), job), done))
                results[index] = JobResult(job, done.run_id, done.test_macro_auc, done.reused, done.seconds)
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    if beside is not None:
        beside.done.wait()  # what the sweep logs next (its figures) comes after the work beside it
    if failure is not None:
        raise failure
    return [r for r in results if r is not None]
