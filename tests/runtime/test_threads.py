"""The thread budget: shares that add up to the machine, overrides, bad input, and a child that applies it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecgml.runtime.threads import (
    ENV_SOURCE,
    ENV_THREADS,
    THREAD_ENV_VARS,
    ThreadBudgetError,
    available_cores,
    cgroup_cpu_limit,
    child_budgets,
    child_env,
    plan_budget,
    split_cores,
)

CLEAN: dict[str, str] = {}


@pytest.mark.parametrize("cores", [1, 2, 3, 8, 16, 64])
@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7])
def test_worker_shares_add_up_to_the_machine(cores: int, workers: int) -> None:
    alone = plan_budget(cores=cores, env=CLEAN)
    assert alone.threads == cores and not alone.user_set
    children = child_budgets(alone, workers)
    threads = [c.threads for c in children]
    assert len(children) == workers and min(threads) >= 1
    if workers <= cores:
        assert sum(threads) == cores and max(threads) - min(threads) <= 1
        assert not any(c.oversubscribed for c in children)
    else:  # more workers than cores: one thread each, and it says so
        assert threads == [1] * workers
        assert all(c.oversubscribed and "oversubscribed" in (c.note or "") for c in children)


@pytest.mark.parametrize("cores", [2, 5, 16])
@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_local_ddp_ranks_split_the_cores(cores: int, ranks: int) -> None:
    budgets = [plan_budget(cores=cores, env={"LOCAL_WORLD_SIZE": str(ranks), "LOCAL_RANK": str(r)})
               for r in range(ranks)]
    assert sum(b.threads for b in budgets) == max(cores, ranks)
    if ranks > 1:
        assert all("local DDP rank" in b.source for b in budgets)


def test_torchrun_default_of_one_thread_is_replaced_by_the_share() -> None:
    env = {"LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "0", "OMP_NUM_THREADS": "1", "TORCHELASTIC_RUN_ID": "x"}
    assert plan_budget(cores=16, env=env).threads == 8
    user = {**env, ENV_THREADS: "1"}  # a user who wants one thread says so with ECGML_THREADS or --threads
    assert plan_budget(cores=16, env=user).threads == 1


def test_an_inherited_share_is_split_among_local_ranks() -> None:
    env = {ENV_THREADS: "4", ENV_SOURCE: "workers 0 of 2 sharing 8 core(s)", "LOCAL_WORLD_SIZE": "2",
           "LOCAL_RANK": "1"}
    assert plan_budget(cores=8, env=env).threads == 2


def test_explicit_option_then_env_then_alone() -> None:
    env = {"OMP_NUM_THREADS": "3"}
    assert plan_budget(cores=8, explicit=2, env=env).threads == 2
    assert plan_budget(cores=8, explicit=2, env=env).source == "--threads 2"
    from_env = plan_budget(cores=8, env=env)
    assert (from_env.threads, from_env.user_set, from_env.source) == (3, True, "OMP_NUM_THREADS=3")
    assert plan_budget(cores=8, env={"OMP_NUM_THREADS": "4,2"}).threads == 4  # nested levels: the first
    inherited = plan_budget(cores=8, env={ENV_THREADS: "5", ENV_SOURCE: "workers 0 of 2", **env})
    assert (inherited.threads, inherited.user_set, inherited.source) == (5, False, "workers 0 of 2")
    assert plan_budget(cores=8, env={ENV_THREADS: "6"}).user_set


def test_user_threads_are_copied_to_each_child_with_a_warning_when_too_many() -> None:
    parent = plan_budget(cores=4, explicit=3, env=CLEAN)
    children = child_budgets(parent, 2)
    assert [c.threads for c in children] == [3, 3]
    assert all(c.oversubscribed and "more than the 4 core(s)" in (c.note or "") for c in children)
    assert not any(c.oversubscribed for c in child_budgets(plan_budget(cores=4, explicit=2, env=CLEAN), 2))


@pytest.mark.parametrize("value", [0, -1, "0", "-3", "two", ""])
def test_bad_thread_counts_are_clear_errors(value: object) -> None:
    with pytest.raises(ThreadBudgetError, match="thread"):
        if value == "":
            plan_budget(cores=2, env={ENV_THREADS: "x"})
        elif isinstance(value, int):
            plan_budget(cores=2, explicit=value)
        else:
            plan_budget(cores=2, env={"OMP_NUM_THREADS": str(value)})


def test_more_threads_than_cores_warns() -> None:
    budget = plan_budget(cores=2, explicit=8, env=CLEAN)
    assert budget.threads == 8 and budget.oversubscribed
    assert "more threads than the 2 core(s)" in (budget.note or "")


def test_switch_off_keeps_torch_defaults() -> None:
    budget = plan_budget(cores=4, env={"ECGML_THREAD_BUDGET": "off"})
    assert not budget.enabled and budget.threads == 4
    assert child_env({}, budget) == {"ECGML_THREAD_BUDGET": "off"}


def test_loader_workers_are_capped_by_the_share() -> None:
    said: list[str] = []
    budget = plan_budget(cores=2, env=CLEAN)
    assert budget.with_loader_workers(1).loader_workers == 1
    assert budget.with_loader_workers(6, said.append).loader_workers == 2
    assert "6 data-loader workers" in said[0]
    with pytest.raises(ThreadBudgetError):
        budget.with_loader_workers(-1)


def test_split_and_core_count_edge_cases(tmp_path: Path) -> None:
    assert split_cores(7, 3) == [3, 2, 2]
    with pytest.raises(ThreadBudgetError):
        split_cores(4, 0)
    assert available_cores(affinity=8, quota=2.5) == 3
    assert available_cores(affinity=2, quota=16.0) == 2
    assert available_cores(affinity=4, read_quota=False) == 4
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert cgroup_cpu_limit(tmp_path) == 3.0


_CHILD = """
import json, torch
from ecgml.runtime.threads import ensure_budget
budget = ensure_budget()
print(json.dumps({"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
                  "budget": budget.threads, "source": budget.source}))
"""


def _clean_env() -> dict[str, str]:
    drop = {*THREAD_ENV_VARS, ENV_THREADS, ENV_SOURCE, "OMP_WAIT_POLICY", "LOCAL_WORLD_SIZE", "LOCAL_RANK"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run_child(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_spawned_worker_applies_its_share() -> None:
    """The launcher's environment for worker 1 of 3 on 5 cores: torch in that process runs its 2 threads."""
    parent = plan_budget(cores=5, env=CLEAN)
    share = child_budgets(parent, 3)[1]
    got = _run_child(child_env(_clean_env(), share))
    assert got == {"torch": 2, "interop": 2, "budget": 2, "source": "workers 1 of 3 sharing 5 core(s)"}


def test_a_local_rank_applies_its_share_after_torch_is_loaded() -> None:
    """Under torchrun (torch imported first, OMP_NUM_THREADS=1 from torchrun): the rank's half of the 6
    threads its job was given is what torch runs."""
    env = {**_clean_env(), ENV_THREADS: "6", ENV_SOURCE: "test job", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "1",
           "OMP_NUM_THREADS": "1", "TORCHELASTIC_RUN_ID": "test"}
    got = _run_child(env)
    assert got["torch"] == got["interop"] == got["budget"] == 3
    assert got["source"].startswith("local DDP rank 1 of 2")


class _Started:
    """A worker process that was started and exits at once."""

    pid = 1
    stdin = None

    def wait(self) -> int:
        return 0

    def poll(self) -> int:
        return 0


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> list[dict[str, str]]:
    """The environments of the worker processes the tune launcher starts (none really starts); this process's
    variables, applied budget and torch thread count are restored afterwards."""
    from ecgml.runtime import threads
    from ecgml.tune import pool

    envs: list[dict[str, str]] = []

    def popen(cmd: list[str], env: dict[str, str], **kwargs: object) -> _Started:
        assert cmd[:3] == [sys.executable, "-m", pool.ENTRY]
        envs.append(env)
        return _Started()

    monkeypatch.setattr(pool.subprocess, "Popen", popen)
    monkeypatch.setattr(threads, "_applied", None)
    for name in (*THREAD_ENV_VARS, ENV_THREADS, ENV_SOURCE, "OMP_WAIT_POLICY"):
        monkeypatch.setenv(name, "1")  # recorded, so the variables the launcher exports are undone
        monkeypatch.delenv(name)
    if "torch" in sys.modules:
        torch, before = sys.modules["torch"], sys.modules["torch"].get_num_threads()
        request.addfinalizer(lambda: torch.set_num_threads(before))
    return envs


@pytest.mark.parametrize(("cores", "workers", "explicit", "expected", "warning"), [
    (2, 1, None, [2], None),  # one process alone: all the cores, nothing started
    (5, 3, None, [2, 2, 1], None),  # N workers divide the cores
    (2, 2, None, [1, 1], None),
    (2, 3, None, [1, 1, 1], "3 tune workers share 2 core(s): each runs 1 thread, 1.5x oversubscribed"),
    (8, 2, 2, [2, 2], None),  # --threads 2: each worker runs 2
    (4, 2, 3, [3, 3], "2 tune workers x 3 thread(s) (--threads 3) is more than the 4 core(s)"),
])
def test_tune_launcher_gives_each_worker_its_share(launched: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch,
                                                   cores: int, workers: int, explicit: int | None,
                                                   expected: list[int], warning: str | None) -> None:
    """``ecgml tune --workers N``: this process is worker 0 with the first share and starts N-1 processes with
    the others; the shares add up to the machine unless the user set a count per process or there are more
    workers than cores, which the launcher says."""
    from ecgml.runtime import threads
    from ecgml.tune import pool, study, worker

    lead = threads.apply_budget(plan_budget(cores=cores, explicit=explicit, env=CLEAN), warn=None)
    seen: list[tuple[int, str | None, int]] = []

    def run_worker(storage: str, name: str, *, worker_index: int, **kwargs: object) -> None:
        applied = threads.applied_budget()
        assert applied is not None
        seen.append((applied.threads, os.environ.get("OMP_NUM_THREADS"), worker_index))

    monkeypatch.setattr(worker, "run_worker", run_worker)
    said: list[str] = []
    settings = study.RunSettings(storage=str(Path("j.log")), workers=workers)
    started = pool.WorkerPool.start(settings, said.append)
    started.release("s")
    started.work_here("s", said.append)
    assert started.wait() == dict.fromkeys(range(1, workers), 0)
    threads_of = [seen[0][0]] + [int(e["ECGML_THREADS"]) for e in launched]
    assert threads_of == expected and seen == [(expected[0], str(expected[0]), 0)]
    assert [e["OMP_NUM_THREADS"] for e in launched] == [str(n) for n in expected[1:]]
    if explicit is None and workers <= cores:
        assert sum(threads_of) == cores
    if explicit is not None:
        assert all(e["ECGML_THREADS_SOURCE"].startswith(f"--threads {explicit}, each of") for e in launched)
    elif workers > 1:
        assert all(e["ECGML_THREADS_SOURCE"].startswith("tune workers") for e in launched)
    warned = [line for line in said if line.startswith("warning:")]
    assert len(warned) == (1 if warning else 0) and all(str(warning) in line for line in warned)
    started_lines = [line for line in said if line.startswith("worker ")]
    assert len(started_lines) == workers and f"{os.getpid()}, {expected[0]} thread(s)" in started_lines[-1]
    assert threads.applied_budget() == lead and os.environ["ECGML_THREADS"] == str(lead.threads)
