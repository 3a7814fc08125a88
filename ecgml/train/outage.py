"""What a user reads after a tracking outage or an interruption, and the command that finishes the same run."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ecgml.defaults import FINETUNE_KIND, PRETRAIN_KIND, STANDALONE_KIND
from ecgml.tracking.runs import epochs_text

#: The ``ecgml`` command that runs each kind of training (what a resume message tells the user to type).
COMMANDS: dict[str, str] = {PRETRAIN_KIND: "pretrain", STANDALONE_KIND: "train-standalone", FINETUNE_KIND: "finetune"}


def resume_command(kind: str, run_id: str, argv: Sequence[str] | None = None) -> str:
    """The command that finishes run ``run_id``: this process's own ``ecgml`` command line with
    ``--resume-run-id`` in place of any resume option, or a template when it was not started that way."""
    argv = list(sys.argv if argv is None else argv)
    command = COMMANDS.get(kind, kind)
    if len(argv) < 2 or argv[1] != command:
        return f"ecgml {command} <the same options as before> --resume-run-id {run_id}"
    rest: list[str] = []
    skip = False
    for arg in argv[2:]:
        if skip:
            skip = False
        elif arg == "--resume-run-id":
            skip = True
        elif arg != "--resume" and not arg.startswith("--resume-run-id="):
            rest.append(arg)
    return shlex.join(["ecgml", command, *rest, "--resume-run-id", run_id])


def outage_message(*, uri: str, reason: str | None, run_id: str, experiment: str, checkpoint: Path,
                   last_epoch: int | None, unlogged_steps: Sequence[int], final_phase_started: bool,
                   command: str, waited_s: float | None = None) -> str:
    """What a user needs after a tracking outage: which server, what is missing, that the training is
    safe (and where), and the one command that finishes the same run."""
    waited = f" after waiting {waited_s:g} s" if waited_s is not None else ""
    missing = []
    if unlogged_steps:
        missing.append(f"the metrics of {epochs_text(unlogged_steps)}")
    missing.append("the evaluation (best-epoch validation and test metrics, predictions, plots), the weights "
                   "and the model" + (" (part of them may have arrived before the server stopped)"
                                      if final_phase_started else ""))
    saved = (f"the checkpoint of epoch {last_epoch + 1} is kept at {checkpoint}" if last_epoch is not None
             else f"the checkpoint is kept at {checkpoint}")
    return (f"tracking server {uri} is unreachable ({reason or 'it stopped answering'}){waited}.\n"
            f"Not logged to run {run_id} (experiment {experiment!r}): {'; '.join(missing)}. "
            "What the server already holds is kept.\n"
            f"The training is not lost: {saved}.\n"
            "When the server answers again, finish the same run (nothing is retrained or logged twice) with:\n"
            f"  {command}")


def interrupted_message(*, signal_name: str, run_id: str, checkpoint: Path, last_epoch: int | None,
                        command: str) -> str:
    """What a user reads after Ctrl-C or SIGTERM stopped a training: the run is marked KILLED, what is kept,
    and the command that continues the same run from the last finished epoch."""
    if not checkpoint.is_file():
        return (f"interrupted ({signal_name}): run {run_id} is marked KILLED; no epoch had finished, so there is "
                "nothing to resume: start the training again")
    saved = (f"the checkpoint of epoch {last_epoch + 1} is kept at {checkpoint}" if last_epoch is not None
             else f"the checkpoint of its last finished epoch is kept at {checkpoint}")
    return (f"interrupted ({signal_name}): run {run_id} is marked KILLED; {saved}.\n"
            "Continue the same run from there with:\n"
            f"  {command}")
