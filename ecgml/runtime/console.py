"""What ecgml prints: a log a person can read, the same in a terminal and in a file.

Why: ``ecgml main`` printed hundreds of MLflow "Downloading artifacts" bars and repeated MLflow warnings
with raw ANSI colour codes into files, and nothing about how training went. Here, by default:

* library noise is off: MLflow's artifact progress bars (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``), its
  INFO chatter (``MLFLOW_LOGGING_LEVEL=WARNING``) and the warnings listed in :data:`KNOWN_NOISE`, each
  checked to be benign for ecgml; ``--verbose`` (or ``ECGML_VERBOSE=1``) shows all of it;
* output that is not a terminal carries no ANSI escape codes (:class:`PlainText` strips them, whoever
  wrote them), and progress bars are drawn only on a terminal and only for work that lasts
  (:func:`progress_options`);
* a training prints one line per epoch (:func:`epoch_line`) and the main job numbers its steps with the
  time elapsed (:class:`StepCounter`).

The settings travel to child processes through the environment (tuning workers, torchrun ranks).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, MutableMapping
from typing import IO, Any, TextIO

ENV_VERBOSE = "ECGML_VERBOSE"
#: CSI sequences (colours, cursor moves) and the two-byte escapes: what a file must never receive.
ANSI_PATTERN = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
#: Library messages hidden unless verbose (regexes matched at the start of the message), each checked:
KNOWN_NOISE: tuple[str, ...] = (
    "The specified dataset source can be interpreted in multiple ways",  # our CSV index inputs
    "Hint: Inferred schema contains integer column",  # dataset inputs, not model schemas
    ".*Add type hints to the `predict` method",  # ecgml's pyfunc validates its own input
    ".*Type hint used in the model's predict function",  # the same, worded by another MLflow module
)
#: MLflow loggers whose records carry the noise above (logging filters apply per originating logger).
NOISY_LOGGERS = ("mlflow.pyfunc", "mlflow.models.signature", "mlflow.pyfunc.utils.data_validation",
                 "mlflow.types.type_hints", "mlflow.models.model", "mlflow.data")
#: Progress bars wait this long before they appear: short work shows none.
PROGRESS_DELAY_S = 2.0


def strip_ansi(text: str) -> str:
    return ANSI_PATTERN.sub("", text)


def is_terminal(stream: IO[Any] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced by something that is not a file
        return False


class PlainText:
    """A text stream for a file or a pipe: ANSI escape codes are dropped, and so are a progress bar's
    carriage-return redraws (``"\\r" + bar``, and the newline that ends a bar), which only a terminal can
    show. Whoever writes (ecgml, MLflow, tqdm, warnings), the file receives plain lines."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._redrawing = False

    def write(self, text: str) -> int:
        if text.startswith("\r"):
            self._redrawing = True
        elif not (self._redrawing and text == "\n"):
            self._redrawing = False
            self._stream.write(strip_ansi(text))
        else:
            self._redrawing = False
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer...
        return getattr(self._stream, name)


def is_verbose(environ: MutableMapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(ENV_VERBOSE, "").strip().lower() in ("1", "true", "yes", "on")


class _DropNoise(logging.Filter):
    """Drops the log records of :data:`KNOWN_NOISE`; keeps every other record."""

    def __init__(self) -> None:
        super().__init__("ecgml.console")
        self.patterns = [re.compile(p) for p in KNOWN_NOISE]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


def _plain_streams() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PlainText) and not is_terminal(stream):
            setattr(sys, name, PlainText(stream))


def _hide_noisy_warnings() -> None:
    """Warnings of :data:`KNOWN_NOISE` are not shown, and any other warning is shown once per process (a
    study trains dozens of runs in one process; the same sentence each time buries the log). Done where
    warnings are shown, not with a warnings filter: MLflow wraps model logging in ``catch_warnings`` +
    ``simplefilter("once")``, which overrides filters and resets what Python remembers having shown."""
    shown = warnings.showwarning
    if getattr(shown, "ecgml_quiet", False):
        return
    patterns = [re.compile(p) for p in KNOWN_NOISE]
    seen: set[tuple[str, str]] = set()

    def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: TextIO | None = None, line: str | None = None) -> None:
        text = strip_ansi(str(message))
        if (category.__name__, text) in seen or any(p.match(text) for p in patterns):
            return
        seen.add((category.__name__, text))
        shown(message, category, filename, lineno, file, line)

    showwarning.ecgml_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
    _drop_noise_below_catch_warnings(patterns)


def _drop_noise_below_catch_warnings(patterns: list[re.Pattern[str]]) -> None:
    """Drop :data:`KNOWN_NOISE` in ``warnings._showwarnmsg``, which every shown or recorded warning goes through.

    Why: ``catch_warnings`` saves ``showwarning`` on entry and puts it back on exit, process-wide. When two
    threads' blocks overlap (``ecgml main`` logs from its sweep's thread while its chain logs models in the main
    thread), one of them can put back the plain ``showwarning`` it found inside the other's recording block, and
    the hook above is gone for good. ``catch_warnings`` never touches ``_showwarnmsg``."""
    current = warnings._showwarnmsg  # type: ignore[attr-defined]
    if getattr(current, "ecgml_quiet", False):
        return

    def showwarnmsg(message: warnings.WarningMessage) -> None:
        if any(p.match(strip_ansi(str(message.message))) for p in patterns):
            return
        current(message)

    showwarnmsg.ecgml_quiet = True  # type: ignore[attr-defined]
    warnings._showwarnmsg = showwarnmsg  # type: ignore[attr-defined]


def configure_console(verbose: bool | None = None, environ: MutableMapping[str, str] | None = None) -> bool:
    """Set up this process's output (call first thing, before MLflow loads); returns whether verbose.

    ``verbose=None`` takes ``ECGML_VERBOSE`` (how a parent's ``--verbose`` reaches its workers).
    """
    environ = os.environ if environ is None else environ
    verbose = is_verbose(environ) if verbose is None else verbose
    _plain_streams()
    if verbose:
        environ[ENV_VERBOSE] = "1"
        return True
    environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when MLflow is imported
    for message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    _hide_noisy_warnings()
    noise = _DropNoise()
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(noise)
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    return False


def progress_options(enabled: bool = True, stream: IO[Any] | None = None) -> dict[str, Any]:
    """``tqdm`` keyword arguments: a bar only when ``enabled``, on a terminal, and once the work has lasted
    :data:`PROGRESS_DELAY_S` (short work shows none)."""
    stream = sys.stderr if stream is None else stream
    return {"disable": not (enabled and is_terminal(stream)), "delay": PROGRESS_DELAY_S, "file": stream}


def say(text: str) -> None:
    """One line of the run's log on stdout, flushed (a log read while the job runs)."""
    print(text, flush=True)


def duration(seconds: float) -> str:
    """``42 s``, ``3m05s``, ``1h02m``: short and unambiguous in a log."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def epoch_line(epoch: int, epochs: int, train_loss: float, val_macro_auc: float, best_score: float,
               best_epoch: int, seconds: float) -> str:
    """One epoch of a training (``epoch`` and ``best_epoch`` count from 0, as the loop does)."""
    width = len(str(epochs))
    mark = " *" if best_epoch == epoch else ""
    return (f"epoch {epoch + 1:>{width}}/{epochs}  train loss {train_loss:.4f}  val macro AUC {val_macro_auc:.4f}  "
            f"best {best_score:.4f} (epoch {best_epoch + 1}){mark}  {duration(seconds)}")


class StepCounter:
    """``[4/8] finetune  (3m12s elapsed)``: where a long job is, and how long it has run."""

    def __init__(self, total: int, say: Callable[[str], None] = say,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.say, self.clock = total, say, clock
        self.started = clock()
        self.done = 0

    def begin(self, name: str, detail: str = "") -> None:
        self.done += 1
        elapsed = duration(self.clock() - self.started)
        self.say(f"[{self.done}/{self.total}] {name}" + (f": {detail}" if detail else "") + f"  ({elapsed} elapsed)")
