"""Forward passes of a served model: the windows of one request, and of requests that arrive together,
in batched forwards.

Why: MLflow's scoring server answers each request in a thread of its own (``asyncio.to_thread``), so a
worker with 64 waiting clients calls ``predict`` from many threads at once. Each call forwarding its own
few windows (a 10 s record is 7 windows of 2.5 s) spends most of its time in per-layer overhead, and the
calls' thread teams fight over the cores. :class:`BatchedForward` lets one caller at a time run the model,
on every window the waiting callers have queued (flat combining): a caller that arrives while a forward
runs queues its windows and is answered by the next forward, one batch for all of them. Nobody waits for
a batch to fill, so a lone request is answered as fast as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: Windows per forward pass at most (a request or a combined batch larger than this runs in chunks).
MAX_WINDOWS = 512


@dataclass
class _Job:
    windows: np.ndarray
    result: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class BatchedForward:
    """``forward(windows) -> scores`` run in batches of at most ``max_windows`` windows; with ``combine`` the
    windows of callers from several threads that wait at the same time share one forward."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], *, max_windows: int = MAX_WINDOWS,
                 combine: bool = True) -> None:
        if max_windows < 1:
            raise ValueError(f"max_windows must be at least 1, not {max_windows}")
        self._forward = forward
        self.max_windows = max_windows
        self.combine = combine
        self._pending: list[_Job] = []
        self._pending_lock = threading.Lock()
        self._model_lock = threading.Lock()
        #: Forward passes run and windows they scored (how well requests were combined).
        self.forwards = 0
        self.windows = 0

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Scores of ``windows`` (``[n, ...]`` -> ``[n, classes]``), in the order given."""
        if not self.combine:
            return self._chunked(windows)
        job = _Job(windows)
        with self._pending_lock:
            self._pending.append(job)
        with self._model_lock:  # while another caller's forward runs; it may have taken this job too
            if not job.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._run(batch)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _run(self, batch: list[_Job]) -> None:
        """One combined forward (in chunks) for every queued job; each gets its rows or the error."""
        try:
            scores = self._chunked(np.concatenate([job.windows for job in batch]))
            edges = np.cumsum([0] + [len(job.windows) for job in batch])
            for job, lo, hi in zip(batch, edges[:-1], edges[1:], strict=True):
                job.result = scores[lo:hi]
        except BaseException as exc:  # every caller in the batch hears why, not only the one that ran it
            for job in batch:
                job.error = exc
        finally:
            for job in batch:
                job.done = True

    def _chunked(self, windows: np.ndarray) -> np.ndarray:
        parts = [self._forward(windows[i:i + self.max_windows]) for i in range(0, len(windows), self.max_windows)]
        self.forwards += len(parts)
        self.windows += len(windows)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]
