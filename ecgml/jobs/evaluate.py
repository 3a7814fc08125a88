"""``ecgml evaluate``'s old import path: evaluation as served lives in :mod:`ecgml.posttrain.evaluate`, below
both the sweeps and the main job. Kept so ``ecgml.cli.jobs`` imports unchanged; import the new path in new code."""

from __future__ import annotations

from ecgml.posttrain.evaluate import EvaluationError, EvaluationOutcome, run_evaluation

__all__ = ["EvaluationError", "EvaluationOutcome", "run_evaluation"]
