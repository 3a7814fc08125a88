"""Each process's share of the cores, so processes that run side by side share them instead of fighting.

Why: torch starts one intra-op (OpenMP) thread per core in every process. Two trainings side by side on
2 cores then run 4 threads that spin-wait on each other, and together get less done than one alone
(``benchmarks/README.md``, concurrency). A budget gives every process ecgml starts a share, and the shares add up to the
machine: a process alone takes all the cores it may use (``os.sched_getaffinity``, capped by a cgroup CPU
quota); N tuning workers (``ecgml tune --workers N``), N DDP ranks on one machine (``LOCAL_WORLD_SIZE``
under torchrun) or N children of any launcher split them (:func:`split_cores`, :func:`child_env`).

Where a process's threads come from, first match wins (the budget's ``source`` says which):

1. ``--threads N`` (the ``ecgml`` group's global option): N intra-op threads in this process, and in
   every process it starts (each tuning worker gets N too: the user asked for N per process).
2. ``ECGML_THREADS``: written by ecgml for its children together with ``ECGML_THREADS_SOURCE`` (a share
   to use, or under torchrun to split among the local ranks); set by a user without the source, it
   counts as the user's explicit choice, like ``--threads``.
3. ``OMP_NUM_THREADS`` set by the user (torchrun's own default of 1 for several local ranks is not
   a choice: the ranks split the cores instead).
4. ``LOCAL_WORLD_SIZE`` > 1: this local rank's share of the cores.
5. Otherwise all the cores.

``ECGML_THREAD_BUDGET=off`` leaves torch's defaults alone (one thread per core, OpenMP's own waiting),
the baseline the concurrency benchmark compares against.

The OpenMP wait policy is PASSIVE (unless the user set ``OMP_WAIT_POLICY``): OpenMP's default
spin-then-sleep waiting makes a training collapse whenever another busy process shares its cores, while
passive waiting costs a training alone on an idle machine part of its speed (both measured in
``benchmarks/README.md``, concurrency). A user who knows the machine is theirs exports
``OMP_WAIT_POLICY=ACTIVE`` (the variable wins). The policy only takes effect in a process that sets it
before torch loads libgomp, so the ``ecgml`` command sets it first thing and launchers pass it to their
children.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path

ENV_THREADS = "ECGML_THREADS"
ENV_SOURCE = "ECGML_THREADS_SOURCE"
ENV_SWITCH = "ECGML_THREAD_BUDGET"
#: Thread-count variables of the numeric libraries torch, NumPy and SciPy may load; children inherit them.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS")
#: See the module doc for the measurement behind it.
WAIT_POLICY = "PASSIVE"

Warn = Callable[[str], None]


def _stderr(text: str) -> None:
    sys.stderr.write(f"warning: {text}\n")


class ThreadBudgetError(ValueError):
    """A thread count that cannot be used (zero, negative, not a number)."""


@dataclass(frozen=True)
class ThreadBudget:
    """What one process uses: intra-op and inter-op threads, data-loader workers, and why."""

    threads: int
    interop: int
    cores: int
    source: str
    #: Chosen by the user (``--threads``, ``OMP_NUM_THREADS``): children get the same count, not a split.
    user_set: bool = False
    loader_workers: int = 0
    oversubscribed: bool = False
    #: What the budget could not do as asked, said once when it is applied (None: nothing to say).
    note: str | None = None
    wait_policy: str | None = WAIT_POLICY
    #: False under ``ECGML_THREAD_BUDGET=off``: torch's defaults, nothing set.
    enabled: bool = True

    def params(self) -> dict[str, str | int]:
        """The budget as MLflow params of a training run."""
        return {"threads": self.threads, "interop_threads": self.interop, "loader_workers": self.loader_workers,
                "threads_source": self.source[:500], "cores": self.cores}

    def env(self) -> dict[str, str]:
        """The variables that carry this budget into a child process (and into libraries loaded later)."""
        if not self.enabled:
            return {ENV_SWITCH: "off"}
        out = {name: str(self.threads) for name in THREAD_ENV_VARS}
        out[ENV_THREADS] = str(self.threads)
        out[ENV_SOURCE] = self.source
        return out

    def with_loader_workers(self, requested: int, warn: Warn | None = _stderr) -> ThreadBudget:
        """``requested`` data-loader workers, at most one per core of this process's share (each is a
        process of its own; crops are seeded per record, so fewer workers never change the results)."""
        if requested < 0:
            raise ThreadBudgetError(f"data-loader workers must be 0 or more, not {requested}")
        cap = max(1, self.threads)
        if requested <= cap or not self.enabled:
            return replace(self, loader_workers=requested)
        if warn is not None:
            warn(f"{requested} data-loader workers asked for, but this process's share is {self.threads} "
                 f"core(s); using {cap}")
        return replace(self, loader_workers=cap)


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (None when unlimited or unknown).

    cgroup v2 writes ``<quota> <period>`` (or ``max``) to ``cpu.max``; v1 has ``cpu.cfs_quota_us`` (-1 =
    unlimited) and ``cpu.cfs_period_us``. Containers usually see their own cgroup at the root.
    """
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        if text:
            return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cores(affinity: int | None = None, quota: float | None = None, *, read_quota: bool = True) -> int:
    """Cores this process may run on: its CPU affinity, capped by the cgroup quota (rounded up)."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            affinity = os.cpu_count() or 1
    if quota is None and read_quota:
        quota = cgroup_cpu_limit()
    if quota is not None:
        affinity = min(affinity, max(1, math.ceil(quota)))
    return max(1, affinity)


def split_cores(cores: int, processes: int) -> list[int]:
    """Threads of each of ``processes`` that share ``cores``: they add up to ``cores`` (the first ones get
    the remainder), or, with more processes than cores, one each."""
    if cores < 1 or processes < 1:
        raise ThreadBudgetError(f"cannot split {cores} cores among {processes} processes")
    if processes >= cores:
        return [1] * processes
    base, extra = divmod(cores, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def _oversubscribed_note(processes: int, cores: int, what: str) -> str:
    return (f"{processes} {what} share {cores} core(s): each runs 1 thread, {processes / cores:.2g}x "
            "oversubscribed (they take turns; fewer processes would each run faster)")


def parse_threads(value: str | int, name: str) -> int:
    """A thread count from an option or a variable; ThreadBudgetError naming ``name`` if unusable."""
    try:
        n = int(str(value).split(",")[0].strip())  # OMP_NUM_THREADS may list nested levels: "4,2"
    except ValueError:
        raise ThreadBudgetError(f"{name}={value!r} is not a whole number of threads") from None
    if n < 1:
        raise ThreadBudgetError(f"{name} must be at least 1 thread, not {n}")
    return n


def _torchrun_default(env: Mapping[str, str]) -> bool:
    """torchrun sets OMP_NUM_THREADS=1 itself when it starts several local ranks and the variable was unset."""
    return (env.get("OMP_NUM_THREADS", "").strip() == "1" and int(env.get("LOCAL_WORLD_SIZE", "1") or 1) > 1
            and "TORCHELASTIC_RUN_ID" in env)


def plan_budget(*, cores: int, explicit: int | None = None, env: Mapping[str, str] | None = None) -> ThreadBudget:
    """The budget of this process (pure: ``cores`` and ``env`` are given; see the module doc for the order)."""
    env = os.environ if env is None else env
    if env.get(ENV_SWITCH, "").strip().lower() in ("off", "0", "false", "no"):
        return ThreadBudget(threads=cores, interop=cores, cores=cores, enabled=False, wait_policy=None,
                            source=f"{ENV_SWITCH}=off (torch's defaults: one thread per core)")
    ranks = int(env.get("LOCAL_WORLD_SIZE", "1") or 1)
    rank = int(env.get("LOCAL_RANK", "0") or 0)
    user_set, pool, label = False, cores, f"{cores} core(s)"
    if explicit is not None:
        threads, user_set, source = parse_threads(explicit, "--threads"), True, f"--threads {explicit}"
    elif env.get(ENV_THREADS) and env.get(ENV_SOURCE):  # a share an ecgml launcher gave this process
        threads, source = parse_threads(env[ENV_THREADS], ENV_THREADS), env[ENV_SOURCE]
        if ranks > 1:
            pool, label = threads, f"the {threads} thread(s) this job was given ({source})"
    elif env.get(ENV_THREADS):
        value = env[ENV_THREADS]
        threads, user_set, source = parse_threads(value, ENV_THREADS), True, f"{ENV_THREADS}={value}"
    elif env.get("OMP_NUM_THREADS") and not _torchrun_default(env):
        value = env["OMP_NUM_THREADS"]
        threads, user_set, source = parse_threads(value, "OMP_NUM_THREADS"), True, f"OMP_NUM_THREADS={value}"
    else:
        threads, source = cores, f"all {cores} core(s) (alone)"
    note, over = None, False
    if ranks > 1 and not user_set:
        if rank >= ranks:
            raise ThreadBudgetError(f"LOCAL_RANK={rank} is not below LOCAL_WORLD_SIZE={ranks}")
        threads = split_cores(pool, ranks)[rank]
        source = f"local DDP rank {rank} of {ranks} on {label}"
        if ranks > pool:
            over, note = True, _oversubscribed_note(ranks, pool, "local DDP ranks")
    elif user_set and threads > cores:
        over = True
        note = (f"{source}: more threads than the {cores} core(s) this process may use; they will wait on "
                "each other (fewer is faster)")
    return ThreadBudget(threads=threads, interop=threads, cores=cores, source=source, user_set=user_set,
                        oversubscribed=over, note=note)


def child_budgets(parent: ThreadBudget, processes: int, what: str = "workers") -> list[ThreadBudget]:
    """Budgets of ``processes`` children that run side by side while ``parent`` waits for them.

    A user's per-process count is copied to each child; otherwise the children split the parent's share
    (all the cores when the parent was alone), each child getting at least one thread.
    """
    if processes < 1:
        raise ThreadBudgetError(f"need at least one process, not {processes}")
    if not parent.enabled:
        return [parent] * processes
    if parent.user_set:
        over = parent.threads * processes > parent.cores
        note = (f"{processes} {what} x {parent.threads} thread(s) ({parent.source}) is more than the "
                f"{parent.cores} core(s); they will wait on each other") if over else None
        return [replace(parent, source=f"{parent.source}, each of {processes} {what}", oversubscribed=over,
                        note=note) for _ in range(processes)]
    shares = split_cores(parent.threads, processes)
    over = processes > parent.threads
    note = _oversubscribed_note(processes, parent.threads, what) if over else None
    return [ThreadBudget(threads=share, interop=share, cores=parent.cores, oversubscribed=over, note=note,
                         source=f"{what} {i} of {processes} sharing {parent.threads} core(s)",
                         wait_policy=parent.wait_policy)
            for i, share in enumerate(shares)]


def child_env(base: Mapping[str, str], budget: ThreadBudget) -> dict[str, str]:
    """``base`` (a parent's environment) with ``budget`` in it, for ``subprocess.Popen(env=...)``."""
    out = dict(base)
    out.update(budget.env())
    if budget.enabled and budget.wait_policy and "OMP_WAIT_POLICY" not in base:
        out["OMP_WAIT_POLICY"] = budget.wait_policy
    return out


def export_budget(budget: ThreadBudget, environ: MutableMapping[str, str] | None = None) -> None:
    """Write the budget into the environment: read by libraries loaded after this (OpenMP reads
    ``OMP_*`` when torch loads it) and inherited by every child process."""
    environ = os.environ if environ is None else environ
    if not budget.enabled:
        return
    environ.update(budget.env())
    if budget.wait_policy:
        environ.setdefault("OMP_WAIT_POLICY", budget.wait_policy)


_applied: ThreadBudget | None = None


def apply_budget(budget: ThreadBudget, warn: Warn | None = _stderr) -> ThreadBudget:
    """Export the budget and, when torch is loaded, set its thread pools; returns what took effect.

    The inter-op pool can only be sized before torch first uses it; later the size torch has is kept and
    reported (the budget says what the process really runs with).
    """
    global _applied
    if budget.note and warn is not None and (_applied is None or _applied.note != budget.note):
        warn(budget.note)
    export_budget(budget)
    if budget.enabled and "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != budget.threads:
            torch.set_num_threads(budget.threads)
        if torch.get_num_interop_threads() != budget.interop:
            with contextlib.suppress(RuntimeError):  # the pool already started: its size is kept and reported
                torch.set_num_interop_threads(budget.interop)
        budget = replace(budget, threads=torch.get_num_threads(), interop=torch.get_num_interop_threads())
    _applied = budget
    return budget


def ensure_budget(warn: Warn | None = _stderr) -> ThreadBudget:
    """This process's budget: the one applied already (by the ``ecgml`` command), or one planned from the
    environment now and applied (a library call, a launched worker)."""
    if _applied is not None:
        return apply_budget(_applied, warn)  # torch may have been loaded since: size its pools now
    return apply_budget(plan_budget(cores=available_cores()), warn)


def process_budget() -> ThreadBudget:
    """This process's budget without applying anything: the one applied, or one planned from the environment
    (what a launcher splits among the children it starts)."""
    return _applied if _applied is not None else plan_budget(cores=available_cores())


def applied_budget() -> ThreadBudget | None:
    """The budget applied in this process, if any."""
    return _applied


@contextlib.contextmanager
def budget_for_a_while(budget: ThreadBudget) -> Iterator[ThreadBudget]:
    """Run this process on ``budget`` inside the block (work that shares the cores with processes it started
    beside it), then put back what was there: the applied budget, the environment's thread variables and
    torch's thread count."""
    global _applied
    names = (*THREAD_ENV_VARS, ENV_THREADS, ENV_SOURCE, ENV_SWITCH, "OMP_WAIT_POLICY")
    environment = {name: os.environ.get(name) for name in names}
    before = _applied
    torch_threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    try:
        yield apply_budget(budget, warn=None)
    finally:
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _applied = before
        if "torch" in sys.modules:
            threads = torch_threads if torch_threads is not None else process_budget().threads
            if budget.enabled and sys.modules["torch"].get_num_threads() != threads:
                sys.modules["torch"].set_num_threads(threads)
