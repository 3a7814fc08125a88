"""Trainings side by side: does a group of processes get the work of one alone done N times as fast?

Trains the default model (``xresnet1d50_small``) over whole short runs (prepare, train, evaluate, log
to MLflow) on a synthetic PTB-XL-shaped tree: first one process alone, then N at once as separate
processes, and prints

    ratio = aggregate samples/s of the group / samples/s of one alone

over the whole runs (1.0 is ideal: N processes together do N times the work per second; issue 15 measured
0.2 for two before the thread budget) and over the training epochs only. Each arrangement of threads
runs in the same invocation, so the before and after figures come from one run on one machine:

* ``old``: what ecgml did before the budget (``ECGML_THREAD_BUDGET=off``): torch's defaults, one
  intra-op thread per core in every process, OpenMP's own spin-then-sleep waiting;
* ``independent``: every process plans its budget by itself, as two ``ecgml`` commands started by hand
  would (each thinks it is alone: all the cores), with the budget's passive OpenMP waiting;
* ``shared``: the processes get the shares a launcher gives its children (``ecgml tune --workers N``,
  torchrun ranks): the cores split among them, passive waiting;
* ``shared-spin``: the same shares with OpenMP's default waiting (the wait-policy decision).

Whole-run samples/s counts every second of a run (imports, MLflow, evaluation) against the samples it
trained. Each process logs to its own SQLite store (copied from one initialised store), so the figure
measures how the processes share the cores, not how SQLite serialises writers.

``--tune`` also times ``ecgml tune`` on a fixed small study with ``--workers 1`` and ``--workers N``, and says
when the study was ready and when each worker started its first trial (where the start-up time goes).

``--wait-policy PASSIVE|ACTIVE`` sets ``OMP_WAIT_POLICY`` explicitly in every training child, whatever the
mode says (ACTIVE: OpenMP threads spin while they wait; PASSIVE: they sleep), to measure the policy alone
and side by side on a quiet machine; without it each mode sets the policy it names.

Run it without a thread-limiting environment (the script drops OMP_NUM_THREADS and friends from the
children's environment: the budget must set them itself), and say what else ran on the machine:

    python benchmarks/concurrency.py                       # 2 processes, 1,200 records, 3 epochs
    python benchmarks/concurrency.py --processes 4 --records 4000 --epochs 4 --tune
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgml.runtime.threads import (
    ENV_SOURCE,
    ENV_SWITCH,
    ENV_THREADS,
    THREAD_ENV_VARS,
    apply_budget,
    available_cores,
    child_budgets,
    child_env,
    plan_budget,
)

BACKBONE = "xresnet1d50_small"
#: Variables that would pin the children's thread counts from outside: the budget must do it.
_OUTSIDE = (*THREAD_ENV_VARS, ENV_THREADS, ENV_SOURCE, ENV_SWITCH, "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
            "KMP_BLOCKTIME", "LOCAL_WORLD_SIZE", "LOCAL_RANK", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")
MODES = {
    "old": "torch defaults in every process (budget off), OpenMP default waiting",
    "independent": "each process plans its own budget (all cores), passive waiting",
    "shared": "launcher shares (cores split among the processes), passive waiting",
    "shared-spin": "launcher shares, OpenMP default waiting",
}


# -- the child: one training run ----------------------------------------------------------------------
def _child(args: argparse.Namespace) -> None:
    """One whole training run, as ``ecgml pretrain`` does it; prints its samples and epoch seconds."""
    budget = apply_budget(plan_budget(cores=available_cores()))  # what the ecgml command does first
    if args.wait == "default":  # before torch loads OpenMP: its own spin-then-sleep waiting (the budget's
        # policy, or one the parent set with --wait-policy, is kept by "keep")
        os.environ.pop("OMP_WAIT_POLICY", None)
    from ecgml.config import DataConfig, PrepareConfig
    from ecgml.train.loop import OptimConfig
    from ecgml.train.pipeline import ModelConfig, TrainConfig
    from ecgml.train.runner import run_training

    epochs: list[tuple[float, float]] = []

    def on_epoch(record: Any) -> None:
        epochs.append((record.samples_per_s * record.seconds, record.seconds))

    data = PrepareConfig(DataConfig(source="ptbxl", root=Path(args.root), fs=100, task="superdiagnostic"),
                         cache_dir=Path(args.cache_dir))
    config = TrainConfig(kind="pretrain", data=data, model=ModelConfig(BACKBONE),
                         optim=OptimConfig(epochs=args.epochs, patience=0), device="cpu", experiment="concurrency",
                         runs_dir=Path(args.runs_dir), run_name=f"concurrency-{args.tag}")
    run_training(config, progress=False, on_epoch=on_epoch)
    import torch

    print("RESULT " + json.dumps({"samples": sum(s for s, _ in epochs), "epoch_s": sum(t for _, t in epochs),
                                  "threads": torch.get_num_threads(), "source": budget.source,
                                  "wait": os.environ.get("OMP_WAIT_POLICY", "default")}), flush=True)


# -- the parent ---------------------------------------------------------------------------------------
@dataclass
class RunResult:
    samples: float
    epoch_s: float
    wall_s: float
    threads: int
    source: str
    wait: str


@dataclass
class GroupResult:
    runs: list[RunResult]
    wall_s: float

    @property
    def whole(self) -> float:
        """Aggregate samples/s over the group's wall time (first start to last exit)."""
        return sum(r.samples for r in self.runs) / self.wall_s

    @property
    def epochs(self) -> float:
        """Aggregate samples/s of the training epochs (each run's samples over its own epoch time)."""
        return sum(r.samples / r.epoch_s for r in self.runs)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _OUTSIDE}


def _envs(mode: str, n: int, cores: int) -> list[dict[str, str]]:
    base = _base_env()
    if mode == "old":
        return [{**base, ENV_SWITCH: "off"} for _ in range(n)]
    if mode == "independent":
        return [dict(base) for _ in range(n)]
    parent = plan_budget(cores=cores, env={})  # the launcher alone: all cores, then split among its children
    return [child_env(base, budget) for budget in child_budgets(parent, n, "processes")]


def _group(mode: str, n: int, work: Path, template: Path, args: argparse.Namespace, cores: int) -> GroupResult:
    procs = []
    began = time.perf_counter()
    for i, env in enumerate(_envs(mode, n, cores)):
        folder = work / f"{mode}-{n}-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(template, folder / "mlflow.db")
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
        if args.wait_policy:
            env["OMP_WAIT_POLICY"] = args.wait_policy
        wait = "keep" if args.wait_policy else "default" if mode in ("old", "shared-spin") else "passive"
        cmd = [sys.executable, __file__, "--child", "--root", str(args.tree), "--cache-dir", str(args.cache),
               "--runs-dir", str(folder / "runs"), "--epochs", str(args.epochs), "--tag", f"{mode}-{n}-{i}",
               "--wait", wait]
        procs.append((time.perf_counter(), subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                                             stderr=subprocess.PIPE, text=True)))
    runs = []
    for start, proc in procs:
        out, err = proc.communicate()
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"a {mode} run failed ({proc.returncode}):\n{err[-3000:]}")
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        doc = json.loads(line.removeprefix("RESULT "))
        runs.append(RunResult(doc["samples"], doc["epoch_s"], wall, doc["threads"], doc["source"], doc["wait"]))
    return GroupResult(runs, time.perf_counter() - began)


def _prepare(args: argparse.Namespace, work: Path) -> Path:
    """The synthetic tree, its cache and an initialised MLflow store to copy (built once, outside the clock)."""
    from ecgml.config import DataConfig, PrepareConfig
    from ecgml.data.prepare import prepare
    from ecgml.data.synth import generate_ptbxl

    args.tree = work / "ptbxl"
    args.cache = work / "cache"
    generate_ptbxl(args.tree, args.records, 0, sampling_rates=(100,), progress=False)
    prepare(PrepareConfig(DataConfig(source="ptbxl", root=args.tree, fs=100, task="superdiagnostic"),
                          cache_dir=args.cache), progress=False)
    template = work / "template.db"
    subprocess.run([sys.executable, "-c", "import mlflow, sys; mlflow.MlflowClient(sys.argv[1]).search_experiments()",
                    f"sqlite:///{template}"], check=True, env=_base_env(), capture_output=True)
    return template


#: What changes a trial's cost is fixed, so both studies do the same work whatever the sampler draws; the
#: learning rate, weight decay, dropout and aggregation are still searched.
_TUNE_FIXED = "backbone=xresnet1d18;width=0.5;crop_s=2.5;batch_size=64"


def _timed_lines(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, list[tuple[float, str]], float]:
    """Run ``cmd``; its exit code, every output line with the seconds since launch it arrived at, and the
    total seconds."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    assert proc.stdout is not None
    lines = [(time.perf_counter() - began, line.rstrip("\n")) for line in proc.stdout]
    code = proc.wait()
    return code, lines, time.perf_counter() - began


def _start_up(lines: list[tuple[float, str]]) -> str:
    """Where the start-up time went: when the study was ready, and when each worker started its first trial
    (seconds since launch; workers are told apart by the ``host:pid`` of their trial lines)."""
    ready = next((t for t, line in lines if line.startswith("study ")), float("nan"))
    first: dict[str, float] = {}
    for t, line in lines:
        match = re.match(r"\[(\S+)\] trial \d+ started", line)
        if match:
            first.setdefault(match.group(1), t)
    starts = ", ".join(f"{t:.1f}" for t in sorted(first.values()))
    return f"study ready at {ready:.1f} s, first trial of each worker at {starts} s"


def _tune(args: argparse.Namespace, work: Path, n: int) -> dict[int, float]:
    """Wall time of ``ecgml tune`` on the same fixed study with 1 and ``n`` workers."""
    seconds = {}
    for workers in (1, n):
        folder = work / f"tune-{workers}"
        folder.mkdir()
        env = {**_base_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
        cmd = [sys.executable, "-m", "ecgml.cli", "tune", "--stage", "pretrain", "--n-trials", str(args.tune_trials),
               "--workers", str(workers), "--storage", str(folder / "optuna.log"), "--study-name", "bench",
               "--root", str(args.tree), "--task", "superdiagnostic", "--cache-dir", str(args.cache),
               "--runs-dir", str(folder / "runs"), "--epochs", str(args.tune_epochs), "--pruner", "none",
               "--no-register", "--device", "cpu", "--space", _TUNE_FIXED]
        code, lines, seconds[workers] = _timed_lines(cmd, env, folder)
        if code != 0:
            tail = "\n".join(line for _, line in lines)[-3000:]
            raise SystemExit(f"ecgml tune --workers {workers} failed:\n{tail}")
        print(f"--workers {workers}: {seconds[workers]:.1f} s; {_start_up(lines)}")
    return seconds


def _alone(modes: list[str], work: Path, template: Path, args: argparse.Namespace,
           cores: int) -> dict[str, GroupResult]:
    """One process by itself, per waiting policy the chosen modes need (the reference of their ratios)."""
    alone: dict[str, GroupResult] = {}
    for wait, mode in (("default", "old"), ("passive", "independent")):
        if any(m in modes for m in ((mode, "shared-spin") if wait == "default" else (mode, "shared"))):
            alone[wait] = _group(mode, 1, work, template, args, cores)
            r = alone[wait].runs[0]
            print(f"one process alone (OMP_WAIT_POLICY {r.wait}, {r.threads} threads): {alone[wait].whole:7.1f} "
                  f"samples/s whole run ({r.wall_s:.1f} s), {alone[wait].epochs:7.1f} samples/s in epochs")
    return alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, help="Processes run at once [2].")
    parser.add_argument("--records", type=int, default=1200, help="Synthetic PTB-XL records [1200].")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of every run [3].")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"Comma list of {', '.join(MODES)} ('' with --tune: only the tuning figure).")
    parser.add_argument("--tune", action="store_true", help="Also time ecgml tune --workers 1 vs --workers N.")
    parser.add_argument("--tune-trials", type=int, default=12)
    parser.add_argument("--tune-epochs", type=int, default=3)
    parser.add_argument("--wait-policy", choices=("PASSIVE", "ACTIVE"), default=None,
                        help="OMP_WAIT_POLICY set in every training child, overriding the modes' own [unset].")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    # the child's own options
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--root", "--cache-dir", "--runs-dir", "--tag"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--wait", choices=("passive", "default", "keep"), default="passive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # figures as they come, into a log too
    if args.child:
        _child(args)
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown or args.processes < 2:
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}; --processes >= 2")
    cores = available_cores()
    outside = {k: os.environ[k] for k in _OUTSIDE if k in os.environ}
    print(f"{cores} core(s) usable; {args.processes} processes at once; {BACKBONE}, {args.records} synthetic "
          f"records, {args.epochs} epochs per run" + (f"; dropped from the children's environment: {outside}"
                                                      if outside else ""))
    if args.wait_policy:
        print(f"OMP_WAIT_POLICY={args.wait_policy} set in every training child (--wait-policy), whatever the mode")
    try:
        load = os.getloadavg()
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    except OSError:
        pass
    work = Path(tempfile.mkdtemp(prefix="ecgml-concurrency-"))
    try:
        template = _prepare(args, work)
        alone = _alone(modes, work, template, args, cores)
        best = max((g.whole for g in alone.values()), default=float("nan"))
        best_epochs = max((g.epochs for g in alone.values()), default=float("nan"))
        if modes:
            print(f"\n{'mode':<12} {'threads':>8} {'whole run':>10} {'ratio':>6} {'vs best':>8} {'epochs':>8} "
                  f"{'ratio':>6}  (samples/s of the group; ratio = group / one alone)")
        for mode in modes:
            group = _group(mode, args.processes, work, template, args, cores)
            ref = alone["default" if mode in ("old", "shared-spin") else "passive"]
            threads = "+".join(str(r.threads) for r in group.runs)
            print(f"{mode:<12} {threads:>8} {group.whole:10.1f} {group.whole / ref.whole:6.2f} "
                  f"{group.whole / best:8.2f} {group.epochs:8.1f} {group.epochs / ref.epochs:6.2f}   {MODES[mode]}"
                  + (f" [OMP_WAIT_POLICY {group.runs[0].wait}]" if args.wait_policy else ""))
        if modes:
            print(f"(best alone: {best:.1f} samples/s whole run, {best_epochs:.1f} in epochs)")
        if args.tune:
            seconds = _tune(args, work, args.processes)
            n = args.processes
            print(f"\necgml tune, {args.tune_trials} trials x {args.tune_epochs} epochs: --workers 1 "
                  f"{seconds[1]:.1f} s, --workers {n} {seconds[n]:.1f} s; speed-up {seconds[1] / seconds[n]:.2f} "
                  "(>= 1: no slower)")
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
