"""``ecgml`` commands for the tests, each in a process of its own, started from a process that has already
imported the libraries every command loads (MLflow, pandas, scikit-learn, matplotlib; torch for commands of one
thread).

    done = run_ecgml(["pretrain", "--epochs", "1"], cwd=work, env=env, timeout=400)
    assert done.returncode == 0, done.stderr

Why: the suite runs about 80 commands as users type them, and each fresh ``python -m ecgml.cli`` spent 3.3
(4.8 with torch) of its CPU-seconds importing those libraries before doing anything (the suite is CPU-bound
on 2 cores).
Here a per-test-process launcher imports them once and forks a child for every command. The child is a
process of its own, as ``subprocess.run`` would start: it gets the command's environment, working
directory, ``sys.argv`` and ``sys.path[0]``, its stdout and stderr go to files, stdin is ``/dev/null``; it runs
``ecgml.cli``'s ``__main__`` as ``python -m`` does (``runpy``), and exits as the interpreter does (non-daemon
threads joined, ``atexit`` handlers, streams flushed) with the same exit status. The result is a
:class:`subprocess.CompletedProcess`, and a command past its ``timeout`` is killed and raises
:class:`subprocess.TimeoutExpired`, as ``subprocess.run`` does.

What is not the same, and why it does not matter here:

- torch (with libgomp, which reads ``OMP_*`` once, when it loads) is preloaded only for commands whose
  environment says ``OMP_NUM_THREADS=1``, as nearly all the suite's do: with one thread the variables libgomp
  reads at load change nothing (no team to size, no thread to spin or sleep), torch's thread pools are
  still unused when the child starts, and the command's thread budget sets them as in a fresh process.
  For any other thread count torch loads in the child, after the command applied its budget.
- The libraries that are preloaded read some variables at import time (thread counts of the BLAS under
  numpy, ``PYTHONWARNINGS``, MLflow's logging switches, matplotlib's). A launcher is made for each set of
  those values a command asks for, so each command sees the values it was given.
- A second command while one runs (a test's own threads), and any run with ``ECGML_TEST_FRESH_PROCESSES=1``,
  start a fresh ``python -m ecgml.cli`` instead.

A fresh interpreter's own start-up stays tested where it is the point: ``--version`` in an ``mlflow run``
environment, the console's first lines, signals and crashes (``Popen`` in the fault tests), ``mlflow run``.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Variables the preloaded libraries read when they load: a launcher serves only commands with its values.
_LOAD_TIME_PREFIXES = ("OMP_", "GOMP_", "OPENBLAS_", "MKL_", "BLIS_", "NUMEXPR_", "VECLIB_", "PYTHON", "MPL",
                       "MATPLOTLIB", "MLFLOW_LOGGING", "MLFLOW_CONFIGURE_LOGGING", "LD_", "TZ", "LANG", "LC_", "TORCH",
                       "PYTORCH", "CUDA", "KMP_")
_ROOT = Path(__file__).resolve().parents[1]
FRESH_SWITCH = "ECGML_TEST_FRESH_PROCESSES"


def _load_time_key(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(_LOAD_TIME_PREFIXES)))


class _Launcher:
    """One preloaded ``python -m tests.command_launcher`` process; one command at a time."""

    def __init__(self, key: tuple[tuple[str, str], ...]) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_LOAD_TIME_PREFIXES)}
        self.busy = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.command_launcher"], cwd=_ROOT,
                                     env={**base, **dict(key)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _reply(self, timeout: float | None) -> dict | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the command launcher exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self, args: list[str], cwd: str, env: dict[str, str], timeout: float | None
            ) -> subprocess.CompletedProcess[str]:
        assert self.proc.stdin is not None
        with tempfile.TemporaryDirectory(prefix="ecgml-command-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            self.proc.stdin.write(json.dumps({"args": args, "cwd": cwd, "env": env, "stdout": str(out),
                                              "stderr": str(err)}) + "\n")
            self.proc.stdin.flush()
            started = self._reply(60)
            if started is None or "pid" not in started:
                raise RuntimeError(f"the command launcher did not start {args}: {started}")
            done = self._reply(timeout)
            argv = [sys.executable, "-m", "ecgml.cli", *args]
            if done is None:  # as subprocess.run: kill the child, then raise with what it wrote
                os.kill(started["pid"], signal.SIGKILL)
                self._reply(None)
                raise subprocess.TimeoutExpired(argv, timeout or 0, out.read_text(errors="replace"),
                                                err.read_text(errors="replace"))
            return subprocess.CompletedProcess(argv, done["returncode"], out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)


_launchers: dict[tuple[tuple[str, str], ...], _Launcher] = {}
_launchers_lock = threading.Lock()


def _close_all() -> None:
    for launcher in _launchers.values():
        launcher.close()


def _launcher_for(env: Mapping[str, str]) -> _Launcher:
    key = _load_time_key(env)
    with _launchers_lock:
        launcher = _launchers.get(key)
        if launcher is None or not launcher.alive():
            if not _launchers:
                atexit.register(_close_all)
            launcher = _launchers[key] = _Launcher(key)
        return launcher


def run_ecgml(args: Sequence[str], *, cwd: str | Path, env: Mapping[str, str], timeout: float | None = None
              ) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, "-m", "ecgml.cli", *args], cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout)``, started from a preloaded launcher (see the module's docstring)."""
    args, cwd, env = [str(a) for a in args], str(Path(cwd).resolve()), dict(env)

    def fresh() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ecgml.cli", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)

    if os.environ.get(FRESH_SWITCH) == "1" or env.get(FRESH_SWITCH) == "1":
        return fresh()
    launcher = _launcher_for(env)
    if not launcher.busy.acquire(blocking=False):  # another thread's command is running: start a fresh one
        return fresh()
    try:
        return launcher.run(args, cwd, env, timeout)
    finally:
        launcher.busy.release()
