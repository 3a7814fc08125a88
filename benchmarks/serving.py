"""Serving in parallel: ``mlflow models serve`` of a registered version under many concurrent clients.

Goal (issue 24, 2 cores): with N workers, at least 2x the throughput of the server as it was (one worker,
each request its own forwards) under 64 concurrent clients sending a real 100 Hz record, and p99 under 1.5 s.

Registers the default backbone (``xresnet1d50_small``, 12 leads, 18 classes, 2.5 s input at 100 Hz; its
weights are random: serving costs the same) in a fresh SQLite store, then for each configuration starts
``mlflow models serve -m models:/NAME/1 --env-manager local -w W`` on 127.0.0.1, warms it up, and drives
``--clients`` threads (one keep-alive connection each) through ``--requests`` requests in all, each a
single real PTB-XL 100 Hz record (10 s, 12 leads, mV) from the real sample. Configurations, all measured in
this one invocation:

* ``before``: 1 worker, ``ECGML_SERVE_BATCHING=off`` (every request its own forwards, as before);
* ``1 worker``: concurrent requests combined into batched forwards (all the cores' threads, and 1 thread);
* ``N workers``: the same in each of N workers, each worker with its share of the cores.

    python benchmarks/serving.py                            # 64 clients, 200 requests, 1 and 2 workers
    python benchmarks/serving.py --workers 2 4 --requests 400

The server's threads are the budget's (the script drops OMP_NUM_THREADS and friends from its environment).
A busy machine inflates every figure: compare the rows with each other, rerun quietly for absolute figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ecgml.runtime.threads import ENV_SOURCE, ENV_SWITCH, ENV_THREADS, THREAD_ENV_VARS, available_cores

MODEL_NAME = "bench-serving"
REAL_RECORD = Path(__file__).resolve().parents[1].parent / "shared" / "real-sample" / "ptbxl" / "records100" / \
    "00000" / "00026_lr"
TARGET_SPEEDUP, TARGET_P99_S = 2.0, 1.5
_OUTSIDE = (*THREAD_ENV_VARS, ENV_THREADS, ENV_SOURCE, ENV_SWITCH, "OMP_WAIT_POLICY", "MLFLOW_RUN_ID",
            "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "ECGML_SERVE_WORKERS", "ECGML_SERVE_BATCHING")


@dataclass
class Result:
    label: str
    requests: int
    wall_s: float
    latencies: list[float]
    errors: int

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_s

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _register(work: Path) -> str:
    """The default backbone logged as ecgml's pyfunc and registered; returns its models:/ URI."""
    import mlflow
    import torch

    from ecgml.data.leads import STANDARD_LEADS
    from ecgml.defaults import DEFAULT_BACKBONE
    from ecgml.models import create_backbone
    from ecgml.tracking.pyfunc import log_pyfunc
    from ecgml.tracking.weights import WeightMetadata, save_weights

    torch.manual_seed(0)
    classes = tuple(f"class{i}" for i in range(18))
    model = create_backbone(DEFAULT_BACKBONE, in_channels=12, num_classes=len(classes)).eval()
    metadata = WeightMetadata(
        backbone=DEFAULT_BACKBONE, backbone_kwargs=model.constructor["kwargs"], num_classes=len(classes), fs=100,
        input_samples=250, leads=STANDARD_LEADS, classes=classes, norm_mean=(0.0,) * 12, norm_std=(0.2,) * 12,
        source="g12ec", dataset_version="bench", cache_digest="bench", task="shared18", label_map="challenge",
        aggregate="max")
    weights = save_weights(work / "weights", model, metadata)
    mlflow.set_experiment("bench-serving")
    with mlflow.start_run():
        info = mlflow.register_model(str(log_pyfunc(weights).model_uri), MODEL_NAME)
    return f"models:/{MODEL_NAME}/{info.version}"


def _payload(record: Path) -> bytes:
    from ecgml.data.leads import STANDARD_LEADS
    from ecgml.data.records import load_signal

    signal = load_signal(record, STANDARD_LEADS)
    return json.dumps({"dataframe_records": [{"signal": signal.round(3).tolist(), "fs": 100,
                                              "leads": list(STANDARD_LEADS)}]}).encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(uri: str, workers: int, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while True:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read()[-3000:] if server.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return server, port
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.time() > deadline:
                server.kill()
                raise SystemExit("the server did not answer /ping within 300 s") from None
            time.sleep(0.5)


def _drive(port: int, payload: bytes, clients: int, requests: int, label: str) -> Result:
    """``clients`` threads, one keep-alive connection each, send ``requests`` requests in all."""
    lock = threading.Lock()
    left = [requests]
    latencies: list[float] = []
    errors = [0]
    headers = {"Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
            began = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=payload, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                latencies.append(time.perf_counter() - began)
                errors[0] += 0 if ok else 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Result(label, requests, time.perf_counter() - began, latencies, errors[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=200, help="Requests in all, per configuration.")
    parser.add_argument("--workers", type=int, nargs="+", default=[available_cores()],
                        help="Worker counts to measure beside one worker [the cores].")
    parser.add_argument("--record", type=Path, default=REAL_RECORD, help="A 100 Hz WFDB record (no extension).")
    args = parser.parse_args()
    from ecgml.cli import quiet_known_library_noise

    quiet_known_library_noise()
    work = Path(tempfile.mkdtemp(prefix="ecgml-serving-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    try:
        os.chdir(work)
        uri = _register(work)
        payload = _payload(args.record)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # uvicorn
        base = {**{k: v for k, v in os.environ.items() if k not in _OUTSIDE}, "PATH": path,
                "PYTHONWARNINGS": "ignore"}
        configs = [("before: 1 worker, per-request forwards", 1, {"ECGML_SERVE_BATCHING": "off"}),
                   ("1 worker, combined forwards", 1, {}),
                   ("1 worker, 1 thread, combined forwards", 1, {"ECGML_THREADS": "1"})]
        configs += [(f"{n} workers, combined forwards", n, {}) for n in args.workers if n > 1]
        print(f"{args.clients} concurrent clients, {args.requests} requests of one real 100 Hz record "
              f"({args.record.name}, {len(payload) / 1024:.0f} KiB of JSON), {available_cores()} core(s)")
        results = []
        for label, workers, extra in configs:
            server, port = _start(uri, workers, {**base, **extra}, work)
            try:
                _drive(port, payload, min(args.clients, 4 * workers), 4 * workers, "warm-up")
                results.append(_drive(port, payload, args.clients, args.requests, label))
            finally:
                server.terminate()
                server.wait(timeout=60)
        before = results[0].throughput
        print(f"\n{'configuration':<40} {'req/s':>7} {'x before':>8} {'p50 s':>7} {'p99 s':>7} {'errors':>6}")
        for r in results:
            print(f"{r.label:<40} {r.throughput:7.1f} {r.throughput / before:8.2f} {r.percentile(50):7.3f} "
                  f"{r.percentile(99):7.3f} {r.errors:6d}")
        best = max(results[1:], key=lambda r: r.throughput)
        print(f"\nbest: {best.label}: {best.throughput / before:.2f}x the throughput before (goal "
              f">= {TARGET_SPEEDUP:g}x), p99 {best.percentile(99):.2f} s (goal < {TARGET_P99_S:g} s)")
        met = best.throughput / before >= TARGET_SPEEDUP and best.percentile(99) < TARGET_P99_S
        return 0 if met and not any(r.errors for r in results) else 1
    finally:
        os.chdir(Path(__file__).resolve().parent)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
