"""Where one training run's wall time goes: start-up, context, epochs, evaluation, figures, logging.

Target (issue 24): a run costs little beyond its epochs, at most 3 s of fixed cost (its wall time minus
its epochs) on 2 cores. A child process runs ``ecgml train-standalone`` in-process ``--runs`` times on a
synthetic G12EC-shaped tree whose cache and tracking store are made beforehand (outside the clock, as they
are once per study), with a timer around each
stage of the run. Each stage's time is exclusive (a stage nested in another is subtracted from it), so
the parts add up to the run's wall time. The first run is *cold*: it pays the process's start-up
(interpreter, imports, the tracking store's first connection); the next ones are *warm*, as every run of
a sweep after its first is (a sweep trains its runs in one process, or in a few worker processes).

    python benchmarks/run_cost.py                          # 1,000 records, fraction 0.25, 5 epochs, 2 runs
    python benchmarks/run_cost.py --records 400 --epochs 2 --threads 1

Every figure comes from this one invocation on this machine; a busy machine inflates all of them, so
compare the parts with each other, and rerun on a quiet machine for the absolute figures.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # first thing: the child's start-up is counted from here

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

TARGET_FIXED_S = 3.0
#: (module, attribute, stage): the functions timed in the child, outermost first. A method is "Class.name".
STAGES = (
    ("ecgml.train.runner", "run_training", "other (device, budget, tags)"),
    ("ecgml.train.runner", "_build_context", "context (splits, model)"),
    ("ecgml.data.prepare", "prepare", "context: cache lookup"),
    ("ecgml.train.runner", "_open", "open the MLflow run, log inputs"),
    ("ecgml.train.runner", "_make_trainer", "trainer (optimizer, batches)"),
    ("ecgml.train.loop", "Trainer.fit", "epochs: the rest of fit"),
    ("ecgml.train.loop", "Trainer._train_epoch", "epochs: training steps"),
    ("ecgml.train.loop", "Trainer._validate", "epochs: validation"),
    ("ecgml.train.loop", "Trainer._end_epoch", "epochs: checkpoint and metric log"),
    ("ecgml.train.runner", "_best_predictions", "best epoch's predictions"),
    ("ecgml.train.runner", "finish_run", "weights, model, tags"),
    ("ecgml.train.finish", "evaluate_and_log", "evaluation and its logging"),
    ("ecgml.evaluate.figures", "plot_learning_curves", "figures"),
    ("ecgml.evaluate.figures", "plot_roc_curves", "figures"),
    ("ecgml.evaluate.figures", "plot_auc_bars", "figures"),
    ("ecgml.tracking.pyfunc", "log_pyfunc", "log the pyfunc model"),
    ("ecgml.tracking.registry", "register_run_model", "registration"),
)


class StageTimer:
    """Exclusive seconds per stage: a stage's time without the stages that ran inside it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[float] = []  # time spent in nested stages, one entry per open stage

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                inner = self._stack.pop()
                spent = time.perf_counter() - began
                self.seconds[stage] = self.seconds.get(stage, 0.0) + spent - inner
                if self._stack:
                    self._stack[-1] += spent

        return timed

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


def _install(timer: StageTimer) -> None:
    import importlib

    for module_name, attribute, stage in STAGES:
        module = importlib.import_module(module_name)
        owner_name, _, name = attribute.rpartition(".")
        owner = getattr(module, owner_name) if owner_name else module
        setattr(owner, name, timer.wrap(stage, getattr(owner, name)))


def _child(args: argparse.Namespace) -> None:
    """Run the command ``--runs`` times in this process; print each run's stages as one JSON line."""
    from ecgml.cli import main

    timer = StageTimer()
    _install(timer)
    command = ["train-standalone", "--root", str(args.root), "--cache-dir", str(args.cache_dir),
               "--runs-dir", str(args.runs_dir), "--fraction", str(args.fraction), "--epochs", str(args.epochs),
               "--patience", "0"]
    if args.threads:
        command = ["--threads", str(args.threads), *command]
    began = STARTED
    for i in range(args.runs):
        main.main([*command, "--seed", str(i)], standalone_mode=False)
        ended = time.perf_counter()
        stages = timer.take()
        stages["start-up (interpreter, imports, CLI)" if i == 0 else "between runs"] = \
            ended - began - sum(stages.values())
        print("STAGES " + json.dumps({"wall": ended - began, "stages": stages}), flush=True)
        began = ended


def _report(label: str, wall: float, stages: dict[str, float]) -> float:
    epochs = sum(seconds for stage, seconds in stages.items() if stage.startswith("epochs"))
    fixed = wall - epochs
    print(f"\n{label}: {wall:.1f} s, of which epochs {epochs:.1f} s; fixed cost {fixed:.1f} s "
          f"(target {TARGET_FIXED_S:g} s: {fixed / TARGET_FIXED_S:.2f} of it)")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<40} {seconds:6.2f} s  {seconds / wall:5.1%}")
    return fixed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000, help="G12EC-shaped records in the synthetic tree.")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2, help="Runs in the one process (the first is cold).")
    parser.add_argument("--threads", type=int, default=None, help="--threads of the command [its budget].")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return 0
    work = Path(tempfile.mkdtemp(prefix="ecgml-run-cost-"))
    try:
        from ecgml.data.synth import generate_g12ec

        root, cache = work / "g12ec", work / "cache"
        generate_g12ec(root, args.records, 1, progress=False)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
        subprocess.run([sys.executable, "-m", "ecgml.cli", "data", "prepare", "--source", "g12ec", "--root",
                        str(root), "--cache-dir", str(cache)], check=True, env=env, capture_output=True)
        # the store's tables are created once per store, not per run: outside the clock too
        subprocess.run([sys.executable, "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"],
                       check=True, env=env, capture_output=True)
        cmd = [sys.executable, __file__, "--child", "--root", str(root), "--cache-dir", str(cache), "--runs-dir",
               str(work / "runs"), "--fraction", str(args.fraction), "--epochs", str(args.epochs), "--runs",
               str(args.runs)] + (["--threads", str(args.threads)] if args.threads else [])
        began = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
        total = time.perf_counter() - began
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
            return 1
        runs = [json.loads(line.removeprefix("STAGES ")) for line in done.stdout.splitlines()
                if line.startswith("STAGES ")]
        runs[0]["stages"]["start-up (interpreter, imports, CLI)"] += total - sum(r["wall"] for r in runs)  # exit
        runs[0]["wall"] = total - sum(r["wall"] for r in runs[1:])
        print(f"{args.records} records, fraction {args.fraction:g}, {args.epochs} epochs, "
              f"{args.threads or 'budget'} threads; {args.runs} run(s) in one process")
        fixed = [_report("cold run (the process's first)" if i == 0 else f"warm run {i + 1} (as in a sweep)",
                         run["wall"], run["stages"]) for i, run in enumerate(runs)]
        warm = fixed[1:] or fixed
        print(f"\nfixed cost per run: cold {fixed[0]:.1f} s, warm {min(warm):.1f}-{max(warm):.1f} s "
              f"(target {TARGET_FIXED_S:g} s)")
        return 0 if max(warm) <= TARGET_FIXED_S else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
