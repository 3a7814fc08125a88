"""``ecgml main``'s old import path: the main job lives in :mod:`ecgml.workflow.main`, above the sweeps it runs.
Kept so ``ecgml.cli.jobs`` and ``benchmarks/study_time.py`` import unchanged; import the new path in new code."""

from __future__ import annotations

from ecgml.workflow.main import MAIN_STEPS, DataTreeError, MainConfig, MainOutcome, run_main

__all__ = ["MAIN_STEPS", "DataTreeError", "MainConfig", "MainOutcome", "run_main"]
