"""``ecgml calibrate``'s old import path: the calibration core lives in :mod:`ecgml.posttrain.calibrate`, below
both the sweeps and the main job. Kept so ``ecgml.cli.jobs`` imports unchanged; import the new path in new code."""

from __future__ import annotations

from ecgml.posttrain.calibrate import (
    METHOD_CHOICES,
    Calibration,
    CalibrationError,
    CalibrationOutcome,
    PredictionSet,
    calibrate_predictions,
    read_predictions,
    run_calibration,
)

__all__ = ["METHOD_CHOICES", "Calibration", "CalibrationError", "CalibrationOutcome", "PredictionSet",
           "calibrate_predictions", "read_predictions", "run_calibration"]
