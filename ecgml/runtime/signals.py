"""SIGTERM handled as Ctrl-C: what ``docker stop``, Slurm and Kubernetes send before they kill a job."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so every ``except KeyboardInterrupt`` (mark the run
    KILLED, keep the checkpoint, say how to resume) handles it as it handles Ctrl-C."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """For the body, SIGTERM raises :class:`Terminated` in the main thread (elsewhere signals cannot be
    handled, and the body runs as before); the previous handler is back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
