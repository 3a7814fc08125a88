"""The preloaded launcher behind :func:`tests.commands.run_ecgml`: imports the libraries every ``ecgml`` command
loads, then forks one child per request read from stdin (one JSON line: args, cwd, env, stdout, stderr) and
answers on stdout with the child's pid, then its exit status (``subprocess``'s convention: ``-N`` for signal N).

Nothing here runs a Python thread or any torch operation before a fork (importing is all), so a child starts as
clean as a fresh interpreter. The one native thread the imports start is jemalloc's background thread (pyarrow,
through pandas), which jemalloc's own fork handlers take care of.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys


def _preload() -> None:
    """What a command imports before its work starts; torch and ecgml's training modules only in a launcher for
    commands of one thread (its environment, made from theirs, says ``OMP_NUM_THREADS=1``; see
    :mod:`tests.commands`)."""
    import matplotlib.figure  # noqa: F401
    import mlflow
    import mlflow.pyfunc  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.metrics  # noqa: F401

    if os.environ.get("OMP_NUM_THREADS") == "1":
        import torch  # noqa: F401

        import ecgml.posttrain.calibrate
        import ecgml.tracking.pyfunc
        import ecgml.train.runner  # noqa: F401
    elif "torch" in sys.modules:  # a future library version that pulls it in: say so, do not fork it
        raise RuntimeError("preloading imported torch, which must load in each command after its thread budget")


def _exit_status(code: object) -> int:
    """The status the interpreter exits with for ``SystemExit(code)`` (a message goes to stderr, then 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(request: dict) -> None:
    """Become ``python -m ecgml.cli ARGS`` in the request's directory and environment; never returns."""
    import atexit
    import random
    import runpy
    import threading
    import traceback

    status = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        os.close(null)
        sys.path[0] = os.getcwd()  # what `python -m` puts first
        sys.argv = ["-m", *request["args"]]
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()  # a fresh interpreter's global generator is seeded afresh
        try:
            runpy.run_module("ecgml.cli", run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as exc:
            status = _exit_status(exc.code)
        except BaseException:  # what the interpreter does with an uncaught exception
            traceback.print_exc()
            status = 1
        threading._shutdown()  # as the interpreter at exit: wait for non-daemon threads, then atexit
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream at exit: the interpreter ignores it too
                stream.flush()
        os._exit(status)


def main() -> None:
    _preload()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, wait_status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(wait_status)}), flush=True)


if __name__ == "__main__":
    main()
