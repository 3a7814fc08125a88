"""Wall time of the compact study (``ecgml main``) step by step, and of each sweep's smallest configuration.

Goals (issue 24, 2 CPU cores): ``ecgml main`` with its defaults in at most 5 minutes alone, and at most 1.3x
that beside one CPU-bound ``nice -n 19`` process. The study runs as users run it, the ``ecgml main`` command
in a subprocess (its thread budget, wait policy and ``--jobs`` default are the CLI's), each time in a fresh
temporary folder and tracking store (nothing reused). The step times are read back from the main run's child
runs, so they are what MLflow recorded. ``--beside-nice`` runs the study a second time in this invocation
beside ``nice -n 19 python -c 'while True: pass'`` and prints the ratio of the two.

    python benchmarks/study_time.py                     # the compact study with its defaults, alone
    python benchmarks/study_time.py --beside-nice       # alone, then beside a niced CPU-bound process
    python benchmarks/study_time.py --beside-nice --wait-policy ACTIVE   # OMP_WAIT_POLICY for both runs
    python benchmarks/study_time.py --sweeps            # also each sweep at one value, one seed, 2 epochs
    python benchmarks/study_time.py --only-sweeps --ptbxl-records 600 --g12ec-records 400
    python benchmarks/study_time.py --report-only       # the report alone, on the test suite's planted study

The report figure replaces the timed assertion the report test once had (the suite times nothing): it builds
the same planted store as ``tests/experiments/test_report.py`` (four sweeps, 68 runs, 300 test records) and
times ``run_report`` on it with the test's 400 bootstrap rounds and the default 1,000.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 5 * 60
TARGET_BESIDE = 1.3
#: The smallest meaningful configuration of each sweep: one swept value (the first non-default where
#: the default is the baseline), one seed, the fine-tuned family's standalone model only.
SMALLEST = {"fraction": (0.1,), "pretrain-fraction": (0.5,), "sampling-rate": (50,), "calibration": (0.1,),
            "input-domain": ("fft_magnitude",), "leads": ("3",), "strategy": ("linear",)}
BUSY_LOOP = "while True: pass"


def _compact(work: Path, args: argparse.Namespace, label: str) -> float:
    """One ``ecgml main`` in ``work`` (a fresh store); its wall time, with the step table printed."""
    import mlflow

    work.mkdir(parents=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ECGML_THREADS", "OMP_NUM"))}
    env["MLFLOW_TRACKING_URI"] = uri
    if args.wait_policy:
        env["OMP_WAIT_POLICY"] = args.wait_policy
    command = [sys.executable, "-m", "ecgml.cli", "main", "--out", str(work / "data"), "--report-dir",
               str(work / "report"), "--ptbxl-records", str(args.ptbxl_records), "--target-records",
               str(args.g12ec_records)]
    if args.jobs:
        command += ["--jobs", str(args.jobs)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"ecgml main failed ({label}):\n{done.stderr[-3000:]}")
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("ecgml-study")
    main_run = client.search_runs([experiment.experiment_id], filter_string="tags.`ecgml.kind` = 'main'")[0]
    print(f"\ncompact study, {label}: {total:.0f} s ({total / 60:.1f} min), goal {TARGET_S / 60:.0f} min: "
          f"{total / TARGET_S:.2f} of it")
    print("  step        wall (from the job's step headers)   its run in MLflow")
    walls = _step_walls(done.stdout, total)
    for key, run_id in sorted(main_run.data.tags.items()):
        if key.startswith("ecgml.step."):
            step = key.removeprefix("ecgml.step.")
            info = client.get_run(run_id).info
            wall = f"{walls[step]:7.1f} s" if step in walls else "      -  "
            print(f"  {step:<10} {wall}                        {(info.end_time - info.start_time) / 1000:7.1f} s")
    return total


def _step_walls(stdout: str, total: float) -> dict[str, float]:
    """Each step's wall time: from its ``[k/n] step ... (elapsed)`` header to the next one (the last to the
    job's end); the light steps' own runs open after their work, so their MLflow times are near zero."""
    marks = [(m.group(1), _seconds(m.group(2))) for m in
             re.finditer(r"^\[\d+/\d+\] (\w+)\b.*\((.+?) elapsed\)$", stdout, flags=re.M)]
    return {step: (marks[i + 1][1] if i + 1 < len(marks) else total) - began
            for i, (step, began) in enumerate(marks)}


def _seconds(text: str) -> float:
    """``1h02m`` / ``3m12s`` / ``4.2 s`` (:func:`ecgml.runtime.console.duration`) as seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)\s*([hms])", text))


def _beside_nice(work: Path, args: argparse.Namespace) -> float:
    """The study beside one CPU-bound ``nice -n 19`` process, started first and stopped after."""
    neighbour = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(1)
        return _compact(work, args, "beside one CPU-bound nice -n 19 process")
    finally:
        neighbour.kill()
        neighbour.wait()


def _sweeps(work: Path, args: argparse.Namespace) -> None:
    from ecgml.experiments.study import StudyConfig, run_sweep

    roots = work / "data" / "synthetic"
    if not (roots / "ptbxl" / "ptbxl_database.csv").exists():
        from ecgml.data.synth import generate_g12ec, generate_ptbxl

        generate_ptbxl(roots / "ptbxl", args.ptbxl_records, 0, sampling_rates=(100, 500), progress=False)
        generate_g12ec(roots / "g12ec", args.g12ec_records, 1, progress=False)
    print("\nsmallest configuration of each sweep (1 value, 1 seed, own-family standalone, "
          f"{args.sweep_epochs} epochs):")
    for name, values in SMALLEST.items():
        study = StudyConfig(seeds=(0,), source_root=roots / "ptbxl", target_root=roots / "g12ec",
                            standalone_backbones=("xresnet1d50_small",), pretrain_epochs=args.sweep_epochs,
                            epochs=args.sweep_epochs, runs_dir=work / "data" / "runs",
                            cache_dir=work / "data" / "cache", experiment=f"bench-{name}",
                            workers=os.cpu_count() or 1)
        start = time.perf_counter()
        _, results = run_sweep(name, study, values, say=lambda text: None)
        print(f"  {name:<18} {time.perf_counter() - start:7.1f} s for {len(results)} runs")


def _report(work: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package, for its planted study
    from ecgml.experiments.report import run_report
    from tests.experiments.test_report import EXPERIMENT, _build

    start = time.perf_counter()
    store = _build(work)
    print(f"\nplanted study: {len(store.logged)} runs logged in {time.perf_counter() - start:.1f} s")
    for rounds in (400, 1000):
        start = time.perf_counter()
        run_report(EXPERIMENT, work / f"report-{rounds}", n_rounds=rounds, progress=False)
        print(f"  report with {rounds:>4} bootstrap rounds: {time.perf_counter() - start:6.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptbxl-records", type=int, default=2000)
    parser.add_argument("--g12ec-records", type=int, default=4000)
    parser.add_argument("--jobs", type=int, default=None, help="ecgml main --jobs [its default].")
    parser.add_argument("--beside-nice", action="store_true",
                        help="Also run the study beside one CPU-bound nice -n 19 process; print the ratio.")
    parser.add_argument("--wait-policy", choices=("PASSIVE", "ACTIVE"), default=None,
                        help="OMP_WAIT_POLICY for the study's processes [ecgml's default].")
    parser.add_argument("--sweeps", action="store_true", help="Also time each sweep's smallest configuration.")
    parser.add_argument("--only-sweeps", action="store_true")
    parser.add_argument("--sweep-epochs", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="Time the report on the planted study only.")
    args = parser.parse_args()
    from ecgml.cli import quiet_known_library_noise

    quiet_known_library_noise()  # the same filters the CLI applies
    work = Path(tempfile.mkdtemp(prefix="ecgml-study-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.chdir(work)
    try:
        within = True
        if args.report_only:
            _report(work)
            return 0
        if not args.only_sweeps:
            alone = _compact(work / "alone", args, "alone")
            within = alone <= TARGET_S
            if args.beside_nice:
                beside = _beside_nice(work / "beside", args)
                ratio = beside / alone
                print(f"\nbeside / alone: {ratio:.2f}x (goal {TARGET_BESIDE}x)")
                within = within and ratio <= TARGET_BESIDE
        if args.sweeps or args.only_sweeps:
            _sweeps(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
