"""The console: plain lines in files, library noise hidden unless verbose, epoch lines and the step counter."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecgml.runtime.console import (
    PlainText,
    StepCounter,
    configure_console,
    duration,
    epoch_line,
    progress_options,
    strip_ansi,
)
from tests.mlflow_store import seeded_sqlite_uri


def test_plain_text_drops_escape_codes_and_progress_redraws() -> None:
    out = io.StringIO()
    stream = PlainText(out)  # type: ignore[arg-type]
    stream.write("\x1b[33mwarning\x1b[0m: yellow\n")
    stream.write("\rbar:  10%|#  | 1/10")
    stream.write("\rbar: 100%|###| 10/10")
    stream.write("\n")  # the newline that ends a bar
    stream.write("line after\n")
    stream.write("\n")  # an ordinary empty line stays
    assert out.getvalue() == "warning: yellow\nline after\n\n"
    assert strip_ansi("\x1b[1;31mred\x1b[0m \x1b[2K\x1b[Aup") == "red up"


def test_progress_bars_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_options(stream=io.StringIO())["disable"]
    assert not progress_options(stream=Tty())["disable"]
    assert progress_options(enabled=False, stream=Tty())["disable"]
    assert progress_options(stream=Tty())["delay"] > 0


def test_epoch_line_and_durations() -> None:
    line = epoch_line(2, 15, 0.23456, 0.81234, 0.83, 1, 12.34)
    assert line == "epoch  3/15  train loss 0.2346  val macro AUC 0.8123  best 0.8300 (epoch 2)  12 s"
    assert epoch_line(0, 2, 0.5, 0.6, 0.6, 0, 3.0).endswith("(epoch 1) *  3.0 s")
    assert [duration(s) for s in (4.26, 42, 185, 3720)] == ["4.3 s", "42 s", "3m05s", "1h02m"]


def test_step_counter_numbers_steps_with_elapsed_time() -> None:
    lines: list[str] = []
    now = iter([100.0, 100.0, 292.0])
    steps = StepCounter(8, say=lines.append, clock=lambda: next(now))
    steps.begin("data")
    steps.begin("pretrain", "xresnet1d50_small on PTB-XL")
    assert lines == ["[1/8] data  (0.0 s elapsed)", "[2/8] pretrain: xresnet1d50_small on PTB-XL  (3m12s elapsed)"]


def test_verbose_sets_nothing_but_the_flag_children_read() -> None:
    env: dict[str, str] = {}
    assert configure_console(verbose=True, environ=env)
    assert env == {"ECGML_VERBOSE": "1"}
    assert configure_console(environ=env)  # a worker started with ECGML_VERBOSE=1 is verbose too


_NOISY = r"""
import sys, warnings
from ecgml.runtime.console import configure_console
configure_console(verbose={verbose})
from mlflow.utils.warnings_utils import color_warning
from mlflow.utils.annotations import filter_user_warnings_once
import logging, mlflow.pyfunc
from tqdm import tqdm

@filter_user_warnings_once  # what MLflow wraps model logging in: it overrides warnings filters
def log_model():
    color_warning("Add type hints to the `predict` method to enable data validation", stacklevel=1,
                  color="yellow", category=UserWarning)
    logging.getLogger("mlflow.pyfunc").warning("Add type hints to the `predict` method", extra={{"color": "red"}})

log_model()
for _ in tqdm(range(3), desc="bar", disable=False):
    pass
for _ in range(3):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a warning of our own", UserWarning)
# two threads' catch_warnings blocks overlapping (ecgml main's sweep thread beside its chain): one puts back the
# plain showwarning it found inside the other's recording block
warnings.showwarning = warnings._showwarning_orig
with warnings.catch_warnings():
    warnings.simplefilter("always")
    color_warning("Add type hints to the `predict` method, once more", stacklevel=1, color="yellow",
                  category=UserWarning)
print("\x1b[32mdone\x1b[0m")
"""


def _run(verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_LOGGING", "ECGML_VERBOSE"))}
    out = subprocess.run([sys.executable, "-c", _NOISY.format(verbose=verbose)], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    return out.stdout + out.stderr


def test_library_noise_is_hidden_and_files_get_no_escape_codes() -> None:
    quiet = _run(False)
    assert "\x1b" not in quiet and "\r" not in quiet
    assert "Add type hints" not in quiet
    assert quiet.count("a warning of our own") == 1 and "done" in quiet  # said once per process


def test_verbose_shows_the_noise_still_without_escape_codes() -> None:
    loud = _run(True)
    assert loud.count("Add type hints") == 3 and loud.count("a warning of our own") == 3
    assert "\x1b" not in loud


def test_a_sweep_worker_sets_up_the_console_as_the_command_did() -> None:
    """A sweep's spawned worker writes to the same terminal: library noise is off there too."""
    script = ("import warnings\nfrom ecgml.experiments.parallel import _start_worker\n_start_worker({})\n"
              "print(getattr(warnings.showwarning, 'ecgml_quiet', False), "
              "getattr(warnings._showwarnmsg, 'ecgml_quiet', False))")
    env = {k: v for k, v in os.environ.items() if k != "ECGML_VERBOSE"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                         check=True)
    assert out.stdout.split() == ["True", "True"]


@pytest.mark.slow
def test_a_training_logs_one_plain_line_per_epoch_and_its_thread_budget(tmp_path: Path) -> None:
    """``ecgml --threads 1 pretrain`` into a pipe: one line per epoch, no escape codes or bar redraws, no
    artifact-download bars, and the budget among the run's params."""
    import mlflow

    from ecgml.data.synth import generate_ptbxl

    work = tmp_path
    generate_ptbxl(work / "data" / "synthetic" / "ptbxl", 120, seed=0, sampling_rates=(100,), workers=1,
                   progress=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_LOGGING", "ECGML_VERBOSE"))}
    env.update(MLFLOW_TRACKING_URI=seeded_sqlite_uri(work / "mlflow.db"), ECGML_DATA=str(work / "data"))
    done = subprocess.run([sys.executable, "-m", "ecgml.cli", "--threads", "1", "pretrain", "--task", "superdiagnostic",
                           "--epochs", "3", "--patience", "0", "--batch-size", "16", "--backbone", "xresnet1d18",
                           "--backbone-kwargs", '{"width": 0.25, "layers": [1, 1]}'],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "\x1b" not in output and "\r" not in output
    assert "Downloading artifacts" not in output
    epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all("val macro AUC" in line and "best" in line for line in epochs)
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["threads"] == "1" and run.data.params["threads_source"] == "--threads 1"
    assert {"interop_threads", "loader_workers", "cores"} <= set(run.data.params)
