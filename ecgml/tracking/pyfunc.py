"""The MLflow pyfunc flavour: a logged classifier that takes a raw 12-lead signal and does the rest.

Input: a DataFrame (or a list of dicts) with one row per ECG and the columns ``signal`` (nested list
``[leads][samples]`` in millivolts), ``fs`` (its sampling rate) and optionally ``leads`` (the names of
the rows of ``signal``; default: the standard 12-lead order). The model resamples to its own rate,
picks its leads by name, standardises with its training statistics, slides windows of its input length
over the record every ``window_stride`` samples (as it was validated), aggregates them the same way, and
returns one probability per class, named.
Bad input raises :class:`InvalidEcgInput` with a message that says what is wrong.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.data.windows import aggregate_windows, to_input_domain, window_starts
from ecgml.tracking.batching import BatchedForward
from ecgml.tracking.ecg_input import (
    AMPLITUDE_BOUNDS_MV,
    BOUNDS_FIELD,
    MAX_SECONDS,
    InvalidEcgInput,
    SizeLimits,
    check_record_size,
    check_request_size,
    count_samples,
    parse_bounds,
    prepare_record,
    typical_amplitude,
)

__all__ = ["AMPLITUDE_BOUNDS_MV", "MAX_SECONDS", "EcgClassifier", "InvalidEcgInput", "apply_temperatures",
           "example_request", "log_pyfunc", "make_python_model", "model_signature", "typical_amplitude"]


def apply_temperatures(probs: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """The calibration map a version carries (artifact ``temperatures``): ``[2, classes]`` slope; bias (temperature
    or Platt scaling), or 1-D temperatures as older versions stored them. One pure transform in
    :func:`ecgml.evaluate.calibration.apply_calibration`, shared with ``ecgml calibrate``."""
    from ecgml.evaluate.calibration import apply_calibration

    return apply_calibration(probs, temperatures)


class EcgClassifier:
    """Inference around a loaded weights folder (plain Python, so it is testable without MLflow).

    ``amplitude_bounds`` replaces the unit check's :data:`AMPLITUDE_BOUNDS_MV` for every record (a
    request row's own ``amplitude_bounds_mv`` still wins for that row). ``combine`` lets concurrent callers
    (a scoring server's request threads) share forwards (:class:`~ecgml.tracking.batching.BatchedForward`).
    ``limits``: the samples a record and a request may hold (default: from the environment,
    :meth:`~ecgml.tracking.ecg_input.SizeLimits.from_env`).
    """

    def __init__(self, weights_dir: str | Path, temperatures: np.ndarray | None = None,
                 amplitude_bounds: tuple[float, float] = AMPLITUDE_BOUNDS_MV, *, combine: bool = True,
                 limits: SizeLimits | None = None) -> None:
        import torch

        from ecgml.tracking.weights import load_model

        self.model, self.metadata = load_model(weights_dir)
        self.temperatures = temperatures
        self.amplitude_bounds = parse_bounds(amplitude_bounds, f"{weights_dir}: model_config")
        self.limits = limits or SizeLimits.from_env()
        self._torch = torch
        #: Every request's windows in batched forwards; concurrent requests (server threads) share them.
        self.forward = BatchedForward(self._window_probabilities, combine=combine)

    def _window_probabilities(self, windows: np.ndarray) -> np.ndarray:
        """Sigmoid of the model's logits for ``windows`` (``[n, leads, samples]`` in the input domain)."""
        with self._torch.no_grad():
            logits = self.model(self._torch.from_numpy(np.ascontiguousarray(windows))).numpy()
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    def record_windows(self, signal: Any, fs: Any, leads: Any, where: str, bounds: Any = None) -> np.ndarray:
        """The model's input windows of one record, checked by
        :func:`~ecgml.tracking.ecg_input.prepare_record` (``where`` names it in a refusal: ``row 3`` or a file)."""
        meta = self.metadata
        crop = meta.input_samples
        x = prepare_record(signal, fs, leads, meta, where, parse_bounds(bounds, where, self.amplitude_bounds),
                           self.limits)
        starts = window_starts(x.shape[1], crop, meta.stride)
        return to_input_domain(np.stack([x[:, s:s + crop] for s in starts]), meta.input_domain)

    def predict_windows(self, per_record: list[np.ndarray]) -> np.ndarray:
        """``float[records, classes]`` from each record's windows: one batched forward for all of them,
        aggregated per record as the model was validated, then calibrated if the version carries a map."""
        owner = np.repeat(np.arange(len(per_record)), [len(w) for w in per_record])
        probs = self.forward(np.concatenate(per_record))
        out = aggregate_windows(probs, owner, len(per_record), self.metadata.aggregate)  # type: ignore[arg-type]
        if self.temperatures is not None:  # fitted on these same aggregated probabilities (ecgml calibrate)
            out = apply_temperatures(out, self.temperatures)
        return np.asarray(out, dtype=np.float64)

    def predict_record(self, signal: Any, fs: Any, leads: Any, where: str, bounds: Any = None) -> np.ndarray:
        """``float[classes]`` for one record (see :meth:`record_windows` for the checks)."""
        return self.predict_windows([self.record_windows(signal, fs, leads, where, bounds)])[0]

    def predict_proba(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """``float[rows, classes]`` probabilities, every row checked before any is scored, all of them in
        batched forwards; an empty request is refused, not answered with nothing, and one of more samples
        than ``limits.request`` before any signal is converted."""
        if not rows:
            raise InvalidEcgInput("the request holds no records: send one row per ECG with 'signal' and 'fs' "
                                  "(and optionally 'leads')")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or "signal" not in row or "fs" not in row:
                raise InvalidEcgInput(f"row {i}: needs 'signal' and 'fs' (and optionally 'leads')")
        counts = [count_samples(row["signal"]) for row in rows]
        for i, (row, n) in enumerate(zip(rows, counts, strict=True)):  # each record first: the more precise reason
            if n is not None:
                check_record_size(n, len(row["signal"]), None, f"row {i}", self.limits)
        check_request_size(counts, self.limits)
        windows = []
        for i, row in enumerate(rows):
            leads = row.get("leads")
            if isinstance(leads, float) and np.isnan(leads):  # a DataFrame fills a column some rows lack
                leads = None
            windows.append(self.record_windows(row["signal"], row["fs"], leads, f"row {i}", row.get(BOUNDS_FIELD)))
        return self.predict_windows(windows)


def _rows(model_input: Any) -> list[dict[str, Any]]:
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict("records")
    if isinstance(model_input, dict):
        return [model_input]
    if isinstance(model_input, list):
        return list(model_input)
    raise InvalidEcgInput(f"expected a DataFrame or records with 'signal' and 'fs', got {type(model_input).__name__}")


@cache
def _reason_first_error() -> type:
    """An ``MlflowException`` whose message stays ecgml's reason: MLflow's scoring server rewrites the
    message of any exception from ``predict`` to ``Failed to predict data '<the whole DataFrame>'. Error:
    ...``, which buries the one line a caller needs under a dump of their own signal."""
    from mlflow.exceptions import MlflowException

    class EcgRequestError(MlflowException):
        @property  # type: ignore[override]
        def message(self) -> str:
            return self._reason

        @message.setter
        def message(self, value: str) -> None:
            if not hasattr(self, "_reason"):  # set once, by MlflowException.__init__
                self._reason = value

    return EcgRequestError


def refusal(exc: InvalidEcgInput) -> Exception:
    """The exception the scoring server turns into HTTP 400 whose message is ``exc``'s, first and alone."""
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return _reason_first_error()(str(exc), error_code=INVALID_PARAMETER_VALUE)


def make_python_model() -> Any:
    """The ``mlflow.pyfunc.PythonModel`` subclass (built lazily so importing ecgml does not import MLflow)."""
    import mlflow.pyfunc

    class EcgPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context: Any) -> None:
            from ecgml.tracking.scoring_workers import apply_worker_share, batching_enabled

            apply_worker_share()  # before torch loads: this server worker's share of the cores
            temperatures = None
            path = context.artifacts.get("temperatures")
            if path:
                temperatures = np.load(path)
            config = context.model_config or {}
            self.classifier = EcgClassifier(context.artifacts["weights"], temperatures,
                                            config.get(BOUNDS_FIELD) or AMPLITUDE_BOUNDS_MV,
                                            combine=batching_enabled())

        # No type hints here on purpose: MLflow reads them as an input schema (and warns about ``Any``).
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            try:
                probs = self.classifier.predict_proba(_rows(model_input))
            except InvalidEcgInput as exc:  # the scoring server answers 400 with this message, no stack trace
                raise refusal(exc) from None
            return pd.DataFrame(probs, columns=list(self.classifier.metadata.classes))

    return EcgPyfunc()


#: The request columns the served model reads (``amplitude_bounds_mv``: :data:`BOUNDS_FIELD`).
REQUEST_COLUMNS: tuple[str, ...] = ("signal", "fs", "leads", BOUNDS_FIELD)


def model_signature(classes: tuple[str, ...] | list[str]) -> Any:
    """The logged signature: the request columns in, one probability column per class out, named.

    Why every input column is ``Any`` and optional: MLflow enforces a signature before ``predict`` runs and
    answers a mismatch with its own ``Failed to enforce schema of data '<the whole DataFrame>'``. Typed
    columns (``Array(Array(double))``) would refuse an integer ``amplitude_bounds_mv``, a row without
    ``leads`` beside one with them, and every malformed signal that way; ecgml checks each column itself
    (:func:`~ecgml.tracking.ecg_input.prepare_record`) and says what is wrong in one line. The input
    example shows the shapes and units.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    inputs = Schema([ColSpec(AnyType(), name, required=False) for name in REQUEST_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(DataType.double, str(c)) for c in classes]))


def example_request(weights_dir: Path) -> pd.DataFrame:
    """One ready request: a synthetic normal ECG as long as the model's input window, at its rate, written
    as a PTB-XL WFDB record (16-bit, 1000 units/mV, PTB-XL's lead spellings) and read back through the
    project's reader, so the example has exactly the form of a real record (µV resolution, mV, the 12
    standard leads by name). Built here, so it exists wherever a model is logged, real data or not."""
    import tempfile

    from ecgml.data.formats import write_wfdb_record
    from ecgml.data.leads import STANDARD_LEADS
    from ecgml.data.records import load_signal
    from ecgml.data.synth import simulate
    from ecgml.data.synth.writers import PTBXL_LEAD_NAMES
    from ecgml.tracking.weights import read_metadata

    meta = read_metadata(weights_dir)
    ecg = simulate(["NORM"], seed=0, fs=float(meta.fs), seconds=meta.input_samples / meta.fs)
    with tempfile.TemporaryDirectory(prefix="ecgml-example-") as folder:
        write_wfdb_record(folder, "example", ecg.signal, meta.fs, PTBXL_LEAD_NAMES)
        signal = load_signal(Path(folder) / "example", STANDARD_LEADS)
    # fs as a float: MLflow warns about an integer column in an example (it cannot hold a missing value).
    return pd.DataFrame([{"signal": np.round(signal.astype(np.float64), 3).tolist(), "fs": float(meta.fs),
                          "leads": list(STANDARD_LEADS)}])


def log_pyfunc(weights_dir: Path, *, name: str = "model", temperatures: Path | None = None) -> Any:
    """Log the classifier as a pyfunc model of the active run (or as a run-less logged model when none is
    active), with its signature and a one-record input example; returns MLflow's model info."""
    import mlflow

    from ecgml.tracking.weights import read_metadata

    artifacts = {"weights": str(weights_dir)}
    if temperatures is not None:
        artifacts["temperatures"] = str(temperatures)
    code = Path(__file__).with_name("pyfunc_model.py")  # models from code: nothing is unpickled on load
    # The bounds are logged as model_config so a loader can override them: MLflow only lets load_model's
    # model_config (or MLFLOW_PYFUNC_INFERENCE_CONFIG, e.g. for `mlflow models serve`) change logged keys.
    return mlflow.pyfunc.log_model(name=name, python_model=str(code), artifacts=artifacts,
                                   model_config={BOUNDS_FIELD: list(AMPLITUDE_BOUNDS_MV)},
                                   signature=model_signature(read_metadata(weights_dir).classes),
                                   input_example=example_request(weights_dir),
                                   pip_requirements=["ecgml", "torch>=2.4", "numpy", "pandas", "scipy"])
