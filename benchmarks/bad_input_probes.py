"""The bad-input probes of issue 23, rerun: each probe an input, race or fault a team meets on a shared
tracking server, and whether ecgml answers it cleanly.

Starts a real ``mlflow server`` (SQLite, proxied artifacts) and, for the HTTP probes, ``mlflow models serve``
of a tiny registered classifier on 127.0.0.1, plus a basic-auth ``mlflow server`` for the credential probe;
builds a tiny synthetic PTB-XL tree for the training probes. CLI probes run in this process through click's
runner (an exception escaping the CLI is what a user sees as a traceback); ``predict`` on a FIFO and SIGTERM
run in subprocesses with a deadline.

Each probe ends in one outcome:

* ``clean``: refused (or handled) with a clear message naming the input, or the right behaviour;
* ``traceback``: an exception escaped to the user;
* ``500``: the served model answered HTTP 500;
* ``hang``: no answer before the probe's deadline;
* ``wrong``: accepted, skipped or answered without a word where ecgml should have refused or said so.

    python benchmarks/bad_input_probes.py            # all probes, about 3-5 minutes on 2 busy cores
    python benchmarks/bad_input_probes.py --no-slow  # without SIGTERM and the basic-auth server

Prints the table and a count per outcome; exit status 0 whatever the outcomes (it is a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package: its servers and tiny fixtures

import numpy as np

#: The per-request sample limit the served model of the probes runs under (as a user would lower it).
SERVED_REQUEST_LIMIT = 200_000
TINY_BACKBONE = ("--backbone", "xresnet1d18", "--backbone-kwargs", '{"width": 0.25, "layers": [1, 1]}')


@dataclass
class Probe:
    item: str
    name: str
    outcome: str
    detail: str


class Probes:
    """The probes run so far, and the shared set-up they use."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.results: list[Probe] = []

    def run(self, item: str, name: str, probe: Callable[[], tuple[str, str]]) -> None:
        started = time.monotonic()
        try:
            outcome, detail = probe()
        except Exception as exc:  # a probe's own failure (not ecgml's): shown, never hidden
            outcome, detail = "probe error", f"{type(exc).__name__}: {exc}"[:200]
        self.results.append(Probe(item, name, outcome, detail))
        print(f"[{time.monotonic() - started:5.1f} s] {item:>3} {name}: {outcome}", flush=True)


# -- helpers -------------------------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, BaseException | None]:
    """``ecgml ARGS`` in this process: exit code, output, and the exception that escaped (None if none did)."""
    from click.testing import CliRunner

    from ecgml.cli import main

    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        result = CliRunner().invoke(main, list(args))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.output, escaped


def judged(code: int, out: str, escaped: BaseException | None, expect: str, *, ok_exit: int | None = None,
           refused: bool = False) -> tuple[str, str]:
    """A CLI probe's outcome: ``traceback`` when an exception escaped, ``clean`` when ``expect`` is in the
    output (and the exit code is ``ok_exit`` where given, or not 0 where ``refused``), else ``wrong``."""
    if escaped is not None:
        return "traceback", f"{type(escaped).__name__}: {str(escaped)[:150]}"
    lines = [line.strip() for line in out.splitlines() if line.strip()] or [""]
    shown = next((line for line in lines if expect and expect in line), lines[-1])
    if expect in out and (ok_exit is None or code == ok_exit) and not (refused and code == 0):
        return "clean", shown[:160]
    return "wrong", f"exit {code}: {shown[:160]}"


def post(port: int, payload: bytes | dict[str, Any], timeout: float = 120) -> tuple[int, str]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()[:300]
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        with contextlib.suppress(ValueError):
            body = json.loads(body).get("message", body)
        return exc.code, str(body)[:300]
    except TimeoutError:
        return 0, "timed out"


def served(port: int, rows: list[dict[str, Any]] | bytes, expect: str) -> tuple[str, str]:
    status, message = post(port, rows if isinstance(rows, bytes) else {"dataframe_records": rows})
    if status == 0:
        return "hang", message
    if status >= 500:
        return "500", message[:160]
    if status == 400 and expect in message and "\n" not in message and "Traceback" not in message:
        return "clean", message[:160]
    return "wrong", f"HTTP {status}: {message[:160]}"


def ecg(fs: int = 100, seconds: float = 10.0) -> np.ndarray:
    t = np.arange(int(fs * seconds)) / fs
    beat = np.exp(-(((t % 1.0) - 0.3) ** 2) / (2 * 0.01**2))
    return np.stack([(0.6 + 0.1 * k) * beat + 0.05 * np.sin(2 * np.pi * 0.3 * t) for k in range(12)]).astype(
        np.float32)


def nested(depth: int) -> Any:
    value: Any = 1.0
    for _ in range(depth):
        value = [value]
    return value


# -- set-up --------------------------------------------------------------------------------------------------


def register_tiny(work: Path, name: str, versions: int) -> None:
    """A tiny 12-lead classifier logged once as ecgml's pyfunc and registered ``versions`` times."""
    import mlflow

    from ecgml.tracking.pyfunc import log_pyfunc
    from ecgml.tracking.registry import create_version
    from tests.pretrained.conftest import tiny_weights

    weights = tiny_weights(work / f"{name}-weights")
    mlflow.set_experiment("probes")
    with mlflow.start_run():
        info = log_pyfunc(weights)
    client = mlflow.MlflowClient()
    client.create_registered_model(name)
    for _ in range(versions):
        create_version(client, name, info.model_uri)


@contextlib.contextmanager
def model_server(work: Path, uri: str) -> Iterator[int]:
    from tests.servers import model_server as serve

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", ECGML_MAX_REQUEST_SAMPLES=str(SERVED_REQUEST_LIMIT),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with serve(uri, work, env, timeout_s=240) as port:
        yield port


def record_folder(folder: Path, names: list[str], **changes: Any) -> Path:
    from ecgml.data.formats import write_wfdb_record
    from ecgml.data.leads import STANDARD_LEADS

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_wfdb_record(folder, name, changes.get("signal", ecg()), 100, list(STANDARD_LEADS))
    return folder


def predict_subprocess(args: list[str], cwd: Path, deadline: float) -> tuple[int | None, str]:
    """``ecgml predict ARGS`` in a subprocess: (exit code or None on a hang, stdout+stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "ecgml.cli", "predict", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=deadline)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


# -- the probes ----------------------------------------------------------------------------------------------


def registration_probes(p: Probes) -> None:
    p.run("0", "pretrained register over HTTP", lambda: judged(
        *cli("pretrained", "register", "ptbxl-superdiagnostic", "--alias", "production"), "registered", ok_exit=0))

    def listed() -> tuple[str, str]:
        code, out, escaped = cli("registry", "list", "ecgml-ptbxl-backbone")
        if escaped is not None:
            return "traceback", repr(escaped)[:150]
        if "run None" in out or "AUC ?" in out:
            return "wrong", next(line for line in out.splitlines() if "None" in line or "?" in line)[:160]
        return ("clean", out.splitlines()[2].strip()[:160]) if code == 0 else ("wrong", out[-160:])

    p.run("9", "registry list of a shipped version", listed)


def file_probes(p: Probes, model_uri: str) -> None:
    folder = record_folder(p.work / "plain", ["r1"])

    def mode() -> tuple[str, str]:
        out = p.work / "mode.csv"
        old = os.umask(0o022)
        try:
            _, _, escaped = cli("predict", "--model", model_uri, "--out", str(out), str(folder))
        finally:
            os.umask(old)
        if escaped is not None:
            return "traceback", repr(escaped)[:150]
        bits = out.stat().st_mode & 0o777
        return ("clean" if bits == 0o644 else "wrong"), f"predict CSV is {oct(bits)} under umask 022"

    p.run("1", "file modes (predict CSV)", mode)


def promotion_probes(p: Probes) -> None:
    from ecgml.tracking.registry import HISTORY_TAG, promote, resolve_with_fallback, show

    def race() -> tuple[str, str]:
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def one(version: str) -> None:
            barrier.wait()
            try:
                promote("race", version, stage="production", user=f"user{version}", warn=lambda _: None)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(v,)) for v in ("1", "2")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        holders = [v for v in ("1", "2") if "production" in show("race", v).aliases]
        claims = [v for v in ("1", "2")
                  if (json.loads(show("race", v).tags.get(HISTORY_TAG, "[]")) or [{}])[-1].get("to") == "production"]
        if errors:
            return "traceback", repr(errors[0])[:150]
        if len(holders) == 1 and claims == holders:
            return "clean", f"v{holders[0]} holds production; the histories agree"
        return "wrong", f"holders {holders}, histories claiming production {claims}"

    p.run("2", "two promotions at once", race)

    def withdrawn() -> tuple[str, str]:
        promote("fallback", "2", stage="archived", user="probe", warn=lambda _: None)
        info, warning = resolve_with_fallback("models:/fallback@production")
        if info.version == "1" and warning and "skipped archived v2" in warning:
            return "clean", warning[:160]
        return "wrong", f"fell back to v{info.version}: {warning}"

    p.run("3", "archived version is not the fallback", withdrawn)


def input_check_probes(p: Probes, root: Path) -> None:
    for alias in ("a b", "a/b", "a;b", "x" * 300):
        p.run("6", f"alias {alias[:12]!r}{'...' if len(alias) > 12 else ''}",
              lambda alias=alias: judged(*cli("registry", "promote", "race", "1", "--alias", alias), "alias",
                                         refused=True))
    p.run("6", "--alias Production", lambda: judged(*cli("registry", "promote", "race", "1", "--alias", "Production"),
                                                    "use 'production'", refused=True))
    p.run("6", "unknown --backbone-kwargs key", lambda: judged(
        *cli("pretrain", "--root", str(root), "--backbone", "xresnet1d18", "--backbone-kwargs", '{"nope": 1}',
             "--epochs", "1"), "nope", ok_exit=2))
    p.run("6", "--registered-name 'bad name/x'", lambda: judged(
        *cli("pretrained", "register", "ptbxl-superdiagnostic", "--registered-name", "bad name/x"), "bad name/x",
        refused=True))

    def no_such_alias() -> tuple[str, str]:
        code, out, escaped = cli("registry", "show", "models:/race@nosuch")
        return judged(code, out, escaped, "its aliases: production", ok_exit=1)

    p.run("6", "registry show @nosuch lists the real aliases", no_such_alias)
    p.run("9", "predict --model models:/NAME (no version)", lambda: judged(
        *cli("predict", "--model", "models:/race", str(p.work / "plain")), "name a version or an alias", ok_exit=1))
    deep = '{"width": ' + "[" * 5000 + "]" * 5000 + "}"
    p.run("9", "--backbone-kwargs nested 5,000 deep", lambda: judged(
        *cli("pretrain", "--root", str(root), "--backbone-kwargs", deep), "too deeply", ok_exit=2))
    p.run("9", "--fraction 1e-9", lambda: judged(
        *cli("pretrain", "--root", str(root), *TINY_BACKBONE, "--epochs", "1", "--fraction", "1e-9", "--splits",
             "1-6/7-8/9-10", "--cache-dir", str(p.work / "cache"), "--runs-dir", str(p.work / "runs"),
             "--device", "cpu"), "--fraction 1e-09", ok_exit=1))


def auth_probe(p: Probes) -> None:
    from tests.faults.mlflow_server import start_auth_server

    server, _ = start_auth_server(p.work / "auth-server")
    try:
        env = {"MLFLOW_TRACKING_URI": server.uri, "MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": ""}
        for args in (("registry", "list"), ("pretrained", "register", "ptbxl-superdiagnostic")):
            p.run("5", f"{' '.join(args[:2])} without credentials", lambda args=args: judged(
                *cli(*args, env=env), "HTTP 40", ok_exit=1))
    finally:
        server.stop()


def serving_probes(p: Probes, port: int) -> None:
    from ecgml.data.leads import STANDARD_LEADS

    x = ecg()
    twice = {"signal": np.vstack([x, x[1:2] * 0.5]).tolist(), "fs": 100, "leads": [*STANDARD_LEADS, "II"]}
    p.run("4", "request with a second II", lambda: served(port, [twice], "lead(s) II appear more than once"))
    flat = x.copy()
    flat[1:] = 0.0
    p.run("8", "request with 11 of 12 leads flat", lambda: served(port, [{"signal": flat.tolist(), "fs": 100}],
                                                                  "11 of the model's 12 leads are flat"))
    p.run("9", "signal nested 500 deep", lambda: served(port, [{"signal": nested(500), "fs": 100}],
                                                        "signal is not a numeric"))
    body = ('{"dataframe_records": [{"fs": 100, "signal": ' + "[" * 5000 + "]" * 5000 + "}]}").encode()
    p.run("9", "body nested 5,000 deep (parsed by MLflow first)", lambda: served(port, body, ""))
    p.run("9", "leads nested in lists", lambda: served(port, [{"signal": x.tolist(), "fs": 100,
                                                              "leads": [[n] for n in STANDARD_LEADS]}],
                                                       "leads must be a list of lead names"))
    many = [{"signal": x.tolist(), "fs": 100}] * (SERVED_REQUEST_LIMIT // x.size + 1)
    p.run("9", f"request over the served limit ({SERVED_REQUEST_LIMIT:,} samples)",
          lambda: served(port, many, "ECGML_MAX_REQUEST_SAMPLES"))

    def ten_minutes_at_10_khz() -> tuple[str, str]:  # 72 million samples: checked in process, not sent (700 MB)
        from ecgml.tracking.pyfunc import EcgClassifier, InvalidEcgInput
        from tests.pretrained.conftest import tiny_weights

        classifier = EcgClassifier(tiny_weights(p.work / "limit-weights"))
        huge = np.broadcast_to(np.float32(0.5), (12, 600 * 10_000))
        try:
            classifier.predict_proba([{"signal": huge, "fs": 10_000}])
        except InvalidEcgInput as exc:
            return ("clean" if "ECGML_MAX_RECORD_SAMPLES" in str(exc) else "wrong"), str(exc)[:160]
        return "wrong", "72 million samples accepted"

    p.run("9", "a 600 s record at 10 kHz (default limit)", ten_minutes_at_10_khz)


def predict_probes(p: Probes, model_uri: str) -> None:
    base = p.work / "predict"

    fifo = record_folder(base / "fifo", ["pipe"])
    (fifo / "pipe.dat").unlink()
    os.mkfifo(fifo / "pipe.dat")

    def pipe() -> tuple[str, str]:
        code, out = predict_subprocess(["--model", model_uri, "--out", str(base / "fifo.csv"), str(fifo)], base, 90)
        if code is None:
            return "hang", "no answer in 90 s"
        if "Traceback" in out:
            return "traceback", out.strip().splitlines()[-1][:160]
        line = next((ln for ln in out.splitlines() if "pipe.dat" in ln), "")
        return ("clean" if "named pipe (FIFO)" in line else "wrong"), (line or out[-160:]).strip()[:160]

    p.run("9", "predict on a FIFO named .dat", pipe)

    given = record_folder(base / "given", ["r0"])
    elsewhere = record_folder(base / "elsewhere" / "ward", ["r1"])
    (given / "ward").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "back").symlink_to(given, target_is_directory=True)

    def linked() -> tuple[str, str]:
        code, out, escaped = cli("predict", "--model", model_uri, "--out", str(base / "linked.csv"), str(given))
        if escaped is not None:
            return "traceback", repr(escaped)[:150]
        if "predicted 2 of 2" not in out:
            return "wrong", out.splitlines()[0][:160] if out else f"exit {code}"
        return "clean", out.splitlines()[0][:160]

    p.run("9", "predict follows a symlinked folder", linked)

    def loop() -> tuple[str, str]:
        _, out, escaped = cli("predict", "--model", model_uri, "--out", str(base / "loop.csv"), str(given))
        line = next((ln for ln in out.splitlines() if "already searched" in ln), "")
        return ("traceback", repr(escaped)[:150]) if escaped else (("clean", line.strip()[:160]) if line else
                                                                  ("wrong", "the loop is not named"))

    p.run("9", "predict names a symlink loop", loop)

    upper = record_folder(base / "upper", ["good", "loud"])
    (upper / "loud.hea").rename(upper / "LOUD.HEA")
    (upper / "loud.dat").rename(upper / "LOUD.DAT")
    (upper / "orphan.mat").write_bytes(b"\0" * 64)
    for needle, name in (("LOUD.HEA: upper-case ending", "predict names .HEA/.DAT files"),
                         ("orphan.mat: a signal file without its header", "predict names a .mat without header")):
        p.run("9", name, lambda needle=needle: judged(*cli("predict", "--model", model_uri, "--out",
                                                           str(base / "upper.csv"), str(upper)), needle, ok_exit=0))

    zero = record_folder(base / "zero", ["zero"], signal=ecg() / 5)
    header = (zero / "zero.hea").read_text()
    (zero / "zero.hea").write_text(header.replace(" 1000.0(0)/mV ", " 0(0)/mV "))
    p.run("9", "predict warns about a gain of 0", lambda: judged(
        *cli("predict", "--model", model_uri, "--out", str(base / "zero.csv"), str(zero)),
        "warning: " + str(zero / "zero.hea") + ": every lead declares an ADC gain of 0", ok_exit=0))


def scratch_probes(p: Probes) -> None:
    """Weight downloads from the HTTP store and ``ecgml report`` leave nothing in the temp folder."""
    scratch = Path(tempfile.gettempdir())

    def leftovers(prefix: str, code: str) -> tuple[str, str]:
        before = set(scratch.glob(f"{prefix}*"))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        done = subprocess.run([sys.executable, "-c", code], cwd=p.work, env=env, capture_output=True, text=True,
                              timeout=240)
        left = set(scratch.glob(f"{prefix}*")) - before
        if left:
            return "wrong", f"left {sorted(map(str, left))[:2]}"
        return "clean", f"exit {done.returncode}, nothing left under {scratch}/{prefix}*"

    download = ("from ecgml.tracking.registry import resolve, download_weights; "
                "print(download_weights(resolve('models:/race/1')))")
    p.run("9", "backbone download leaves no copy in /tmp", lambda: leftovers("ecgml-weights-", download))
    report = ("import sys; from ecgml.cli import main; sys.argv = ['ecgml', 'report', '--experiment', 'probes']; "
              "main()")
    p.run("9", "ecgml report leaves no scratch folder", lambda: leftovers("ecgml-report-", report))


def sigterm_probe(p: Probes, root: Path, tracking: str) -> None:
    def terminated() -> tuple[str, str]:
        runs = p.work / "sigterm-runs"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        proc = subprocess.Popen([sys.executable, "-m", "ecgml.cli", "pretrain", "--root", str(root), *TINY_BACKBONE,
                                 "--epochs", "200", "--patience", "0", "--batch-size", "8", "--splits", "1-6/7-8/9-10",
                                 "--cache-dir", str(p.work / "cache"), "--runs-dir", str(runs), "--device", "cpu",
                                 "--experiment", "sigterm"], cwd=p.work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not list(runs.glob("*/checkpoint.pt")) and proc.poll() is None:
            time.sleep(0.5)
        if proc.poll() is not None:
            return "probe error", f"training ended before SIGTERM: {proc.stdout.read()[-160:] if proc.stdout else ''}"
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            return "hang", "still running 120 s after SIGTERM"
        import mlflow

        run_id = next(runs.iterdir()).name
        status = mlflow.MlflowClient(tracking).get_run(run_id).info.status
        if status == "KILLED" and f"--resume-run-id {run_id}" in out:
            return "clean", f"run {status}, resume command printed"
        return "wrong", f"run {status}; {out.strip().splitlines()[-1][:120] if out.strip() else ''}"

    p.run("7", "SIGTERM during training", terminated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-slow", action="store_true", help="skip SIGTERM and the basic-auth server")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("ECGML_THREADS", "1")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(name, None)
    import mlflow

    from tests.data.trees import write_tiny_ptbxl
    from tests.faults.mlflow_server import start_server

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ecgml-probes-") as folder:
        work = Path(folder)
        probes = Probes(work)
        server = start_server(work / "server")
        try:
            os.environ["MLFLOW_TRACKING_URI"] = server.uri
            mlflow.set_tracking_uri(server.uri)
            os.chdir(work)
            root = write_tiny_ptbxl(work / "ptbxl", n=40)
            register_tiny(work, "race", 2)
            register_tiny(work, "fallback", 2)
            model_uri = "models:/race/1"
            registration_probes(probes)
            file_probes(probes, model_uri)
            promotion_probes(probes)
            input_check_probes(probes, root)
            predict_probes(probes, model_uri)
            scratch_probes(probes)
            with model_server(work, model_uri) as port:
                serving_probes(probes, port)
            if not args.no_slow:
                sigterm_probe(probes, root, server.uri)
                auth_probe(probes)
        except Exception:
            traceback.print_exc()
        finally:
            server.stop()
            os.chdir(Path(__file__).resolve().parents[1])
    width = max(len(r.name) for r in probes.results)
    print(f"\n{'item':>4}  {'probe':<{width}}  {'outcome':<11}  detail")
    for r in probes.results:
        print(f"{r.item:>4}  {r.name:<{width}}  {r.outcome:<11}  {r.detail}")
    counts = Counter(r.outcome for r in probes.results)
    print(f"\n{len(probes.results)} probes in {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{n} {outcome}" for outcome, n in counts.most_common()))


if __name__ == "__main__":
    main()
