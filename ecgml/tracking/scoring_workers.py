"""A scoring-server worker's share of the cores, and whether it combines concurrent requests.

``mlflow models serve --workers N`` starts N uvicorn worker processes. Each loads the model and would start
one torch thread per core, N times too many threads for the machine. At model load
(:func:`apply_worker_share`, called by the pyfunc's ``load_context`` before torch loads) a worker takes its
share of the cores from the thread budget (:mod:`ecgml.runtime.threads`), split among the N workers. N
comes from ``$ECGML_SERVE_WORKERS`` when set, else from uvicorn's ``--workers`` (a uvicorn worker is a
spawned process that carries its server's command line), else from ``$WEB_CONCURRENCY`` (uvicorn's own
default), else 1. A thread count the user set (``ECGML_THREADS``, ``OMP_NUM_THREADS``) is kept per worker.

``ECGML_SERVE_BATCHING=off`` makes every request run its own forwards, as before requests were combined
(the switch ``benchmarks/serving.py`` compares against).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace

from ecgml.runtime.threads import ThreadBudget, apply_budget, child_budgets, parse_threads, process_budget

ENV_WORKERS = "ECGML_SERVE_WORKERS"
ENV_BATCHING = "ECGML_SERVE_BATCHING"


def scoring_workers(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """How many worker processes the scoring server runs (see the module doc for the order)."""
    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    if env.get(ENV_WORKERS, "").strip():
        return parse_threads(env[ENV_WORKERS], ENV_WORKERS)
    for i, arg in enumerate(argv):
        if arg == "--workers" and i + 1 < len(argv):
            return parse_threads(argv[i + 1], "uvicorn --workers")
        if arg.startswith("--workers="):
            return parse_threads(arg.split("=", 1)[1], "uvicorn --workers")
    if env.get("WEB_CONCURRENCY", "").strip():
        return parse_threads(env["WEB_CONCURRENCY"], "WEB_CONCURRENCY")
    return 1


def worker_budget(base: ThreadBudget, workers: int) -> ThreadBudget:
    """One of ``workers`` workers' budget out of ``base`` (this process's budget as planned alone): the
    smallest share of the split, so the workers never add up to more than the cores."""
    if workers <= 1 or not base.enabled or base.user_set:
        return base
    share = child_budgets(base, workers, "scoring-server workers")[-1]
    return replace(share, source=f"one of {workers} scoring-server workers sharing {base.threads} core(s)")


def apply_worker_share() -> ThreadBudget:
    """Apply this worker's budget (exported before torch loads, so OpenMP reads it too); returns it."""
    return apply_budget(worker_budget(process_budget(), scoring_workers()), warn=None)


def batching_enabled(env: Mapping[str, str] | None = None) -> bool:
    """False under ``ECGML_SERVE_BATCHING=off`` (or 0, false, no)."""
    env = os.environ if env is None else env
    return env.get(ENV_BATCHING, "").strip().lower() not in ("off", "0", "false", "no")
