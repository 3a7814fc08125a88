"""What fine-tuning adds on a small Challenge target: pooled out-of-fold macro AUC of ``ecgml finetune --target cinc
--cv K`` (from a backbone pretrained on a synthetic PTB-XL tree) against ``ecgml train-standalone --target cinc --cv K``
on a synthetic CPSC 2018-shaped tree (the 2020 first release's abbreviation dialect), as a user types them.

Usage::

    python benchmarks/cpsc_transfer.py                                   # small sizes, one thread
    python benchmarks/cpsc_transfer.py --ptbxl-records 2000 --cpsc-records 600 --epochs 20 --threads 2

Prints both pooled AUCs with their bootstrap intervals and the difference, all from one run in one fresh store.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ecgml.data.synth import generate_cpsc, generate_ptbxl

_POOLED = re.compile(r"pooled out-of-fold test macro AUC ([0-9.]+) \[([0-9.]+), ([0-9.]+)\]")


def _ecgml(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "ecgml.cli", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ecgml {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _pooled(output: str) -> tuple[float, float, float]:
    match = _POOLED.search(output)
    if not match:
        raise SystemExit(f"no pooled AUC in the output:\n{output[-2000:]}")
    return float(match[1]), float(match[2]), float(match[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ptbxl-records", type=int, default=600)
    parser.add_argument("--cpsc-records", type=int, default=240)
    parser.add_argument("--cpsc-seconds", type=float, default=30.0, help="longest CPSC record (6 s to this)")
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--min-positives", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backbone", default="xresnet1d18")
    parser.add_argument("--backbone-kwargs", default=json.dumps({"width": 0.5}))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cpsc_transfer_") as scratch:
        work = Path(scratch)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "ECGML_DATA": str(work / "data"),
               "ECGML_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
        start = time.perf_counter()
        generate_ptbxl(work / "ptbxl", args.ptbxl_records, seed=args.seed, sampling_rates=(100,), workers=1,
                       progress=False)
        generate_cpsc(work / "cpsc", args.cpsc_records, seed=args.seed + 2, workers=1, progress=False,
                      seconds=args.cpsc_seconds)
        model = ["--backbone", args.backbone, "--backbone-kwargs", args.backbone_kwargs, "--batch-size", "32"]
        _ecgml(env, "pretrain", "--root", str(work / "ptbxl"), "--task", "all", "--epochs", str(args.pretrain_epochs),
               "--experiment", "bench-pre", *model)
        _ecgml(env, "register", "--experiment", "bench-pre", "--name", "bench-backbone")
        target = ["--target", "cinc", "--root", str(work / "cpsc"), "--cv", str(args.cv), "--min-positives",
                  str(args.min_positives), "--epochs", str(args.epochs), "--seed", str(args.seed)]
        tuned = _pooled(_ecgml(env, "finetune", *target, "--backbone-uri", "models:/bench-backbone/1", *model))
        alone = _pooled(_ecgml(env, "train-standalone", *target, *model))
    print(f"synthetic CPSC tree: {args.cpsc_records} records (6-{args.cpsc_seconds:g} s), backbone pretrained on "
          f"{args.ptbxl_records} synthetic PTB-XL records for {args.pretrain_epochs} epochs; {args.cv}-fold CV, "
          f"{args.epochs} epochs, {args.backbone} {args.backbone_kwargs}, {args.threads} thread(s)")
    print(f"finetune          pooled OOF macro AUC {tuned[0]:.3f} [{tuned[1]:.3f}, {tuned[2]:.3f}]")
    print(f"train-standalone  pooled OOF macro AUC {alone[0]:.3f} [{alone[1]:.3f}, {alone[2]:.3f}]")
    print(f"fine-tuning adds {tuned[0] - alone[0]:+.3f}; wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
