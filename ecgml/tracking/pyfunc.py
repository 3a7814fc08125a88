"""The MLflow pyfunc flavour: a logged classifier that takes a raw 12-lead signal and does the rest.

Input: a DataFrame (or a list of dicts) with one row per ECG and the columns ``signal`` (nested list
``[leads][samples]`` in millivolts), ``fs`` (its sampling rate) and optionally ``leads`` (the names of
the rows of ``signal``; default: the standard 12-lead order). The model resamples to its own rate,
picks its leads by name, standardises with its training statistics, slides windows of its input length
over the record, aggregates them as it was validated, and returns one probability per class, named.
Bad input raises :class:`InvalidEcgInput` with a message that says what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.data.leads import STANDARD_LEADS, MissingLeadError, lead_index
from ecgml.data.signal import resample, standardize
from ecgml.data.windows import aggregate_windows, to_input_domain, window_starts

#: Longest record accepted, in seconds: a guard against payloads that would exhaust memory.
MAX_SECONDS = 600.0


def typical_amplitude(x: np.ndarray) -> float:
    """A record's size in its own units: the median, over the leads that move, of each lead's 1st-99th
    percentile range. Percentiles ignore pacemaker spikes and clipped samples; the median over leads
    ignores one detached electrode. 0.0 when every lead is constant."""
    low, high = np.percentile(x, [1.0, 99.0], axis=-1)
    spread = high - low
    moving = spread[spread > 0]
    return float(np.median(moving)) if moving.size else 0.0


def apply_temperatures(probs: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """The calibration map a version carries (artifact ``temperatures``): ``[2, classes]`` slope; bias (temperature
    or Platt scaling), or 1-D temperatures as older versions stored them. One pure transform in
    :func:`ecgml.evaluate.calibration.apply_calibration`, shared with ``ecgml calibrate``."""
    from ecgml.evaluate.calibration import apply_calibration

    return apply_calibration(probs, temperatures)


class InvalidEcgInput(ValueError):
    """A request the model cannot score; the message is meant for the caller."""


class EcgClassifier:
    """Inference around a loaded weights folder (plain Python, so it is testable without MLflow)."""

    def __init__(self, weights_dir: str | Path, temperatures: np.ndarray | None = None) -> None:
        import torch

        from ecgml.tracking.weights import load_model

        self.model, self.metadata = load_model(weights_dir)
        self.temperatures = temperatures
        self._torch = torch

    def _prepare(self, signal: Any, fs: Any, leads: Any, index: int) -> np.ndarray:
        meta = self.metadata
        try:
            x = np.asarray(signal, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidEcgInput(f"row {index}: signal is not a numeric [leads][samples] array") from None
        if x.ndim != 2:
            raise InvalidEcgInput(f"row {index}: signal must be 2-D [leads][samples], got shape {x.shape}")
        names = list(leads) if leads is not None else list(STANDARD_LEADS[: x.shape[0]])
        if len(names) != x.shape[0]:
            raise InvalidEcgInput(f"row {index}: {x.shape[0]} signal rows but {len(names)} lead names")
        try:
            fs = float(fs)
        except (TypeError, ValueError):
            raise InvalidEcgInput(f"row {index}: fs {fs!r} is not a number") from None
        if not 1 <= fs <= 10_000:
            raise InvalidEcgInput(f"row {index}: sampling rate {fs} Hz is out of range")
        if x.shape[1] / fs > MAX_SECONDS:
            raise InvalidEcgInput(
                f"row {index}: {x.shape[1] / fs:.0f} s is longer than the {MAX_SECONDS:.0f} s accepted")
        if not np.isfinite(x).all():
            raise InvalidEcgInput(f"row {index}: signal holds NaN or infinite values")
        try:
            x = x[lead_index(names, meta.leads, f"row {index}")]
        except MissingLeadError as exc:
            raise InvalidEcgInput(str(exc)) from None
        x = resample(x, fs, meta.fs)
        if x.shape[1] < meta.input_samples:
            raise InvalidEcgInput(f"row {index}: {x.shape[1] / meta.fs:.2f} s is shorter than the model's "
                                  f"{meta.input_samples / meta.fs:.2f} s input")
        return standardize(x, np.asarray(meta.norm_mean, np.float32), np.asarray(meta.norm_std, np.float32))

    def predict_proba(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """``float[rows, classes]`` probabilities."""
        torch = self._torch
        meta = self.metadata
        crop = meta.input_samples
        out = np.zeros((len(rows), len(meta.classes)))
        for i, row in enumerate(rows):
            if "signal" not in row or "fs" not in row:
                raise InvalidEcgInput(f"row {i}: needs 'signal' and 'fs' (and optionally 'leads')")
            x = self._prepare(row["signal"], row["fs"], row.get("leads"), i)
            starts = window_starts(x.shape[1], crop, max(1, crop // 2))
            windows = to_input_domain(np.stack([x[:, s:s + crop] for s in starts]), meta.input_domain)
            with torch.no_grad():
                logits = self.model(torch.from_numpy(windows)).numpy()
            probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            out[i] = aggregate_windows(probs, np.zeros(len(starts), dtype=np.int64), 1, meta.aggregate)[0]  # type: ignore[arg-type]
        if self.temperatures is not None:  # fitted on these same aggregated probabilities (ecgml calibrate)
            out = apply_temperatures(out, self.temperatures)
        return out


def _rows(model_input: Any) -> list[dict[str, Any]]:
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict("records")
    if isinstance(model_input, dict):
        return [model_input]
    if isinstance(model_input, list):
        return list(model_input)
    raise InvalidEcgInput(f"expected a DataFrame or records with 'signal' and 'fs', got {type(model_input).__name__}")


def make_python_model() -> Any:
    """The ``mlflow.pyfunc.PythonModel`` subclass (built lazily so importing ecgml does not import MLflow)."""
    import mlflow.pyfunc

    class EcgPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context: Any) -> None:
            temperatures = None
            path = context.artifacts.get("temperatures")
            if path:
                temperatures = np.load(path)
            self.classifier = EcgClassifier(context.artifacts["weights"], temperatures)

        # No type hints here on purpose: MLflow reads them as an input schema (and warns about ``Any``).
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            try:
                probs = self.classifier.predict_proba(_rows(model_input))
            except InvalidEcgInput as exc:  # the scoring server answers 400 with this message, no stack trace
                from mlflow.exceptions import MlflowException
                from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
            return pd.DataFrame(probs, columns=list(self.classifier.metadata.classes))

    return EcgPyfunc()


def log_pyfunc(weights_dir: Path, *, name: str = "model", temperatures: Path | None = None) -> Any:
    """Log the classifier as a pyfunc model of the active run; returns MLflow's model info."""
    import mlflow

    artifacts = {"weights": str(weights_dir)}
    if temperatures is not None:
        artifacts["temperatures"] = str(temperatures)
    code = Path(__file__).with_name("pyfunc_model.py")  # models from code: nothing is unpickled on load
    return mlflow.pyfunc.log_model(name=name, python_model=str(code), artifacts=artifacts,
                                   pip_requirements=["ecgml", "torch>=2.4", "numpy", "pandas", "scipy"])
