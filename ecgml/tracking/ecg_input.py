"""What a served model accepts: one raw ECG record checked and turned into the model's input, or refused.

The served pyfunc and ``ecgml predict`` both call :func:`prepare_record`, so a record is judged the same
way over HTTP and from files. Each refusal is an :class:`InvalidEcgInput` whose message is one line that
starts with where the record is (``row 3`` or a file) and says what to do.

Units: a signal must be in millivolts. The rate (``fs``) cannot be checked (a 500 Hz record declared as
250 Hz looks like a slow heart), but the amplitude can: :data:`AMPLITUDE_BOUNDS_MV` refuses a
:func:`typical_amplitude` outside 0.03-15 mV, which holds every real record with a wide margin and catches
volts (x 0.001), microvolts and raw ADC counts (x 1000, or x 200 at a 200/mV gain); the real records'
figures are in ``benchmarks/README.md`` (amplitude bounds). A device whose records really lie outside can
widen the bounds per request (``amplitude_bounds_mv``) or per loaded model (``model_config``).

Size: a request is bounded in samples (the numbers of its signals, over all leads) per record and per
request (:class:`SizeLimits`, raised with ``ECGML_MAX_RECORD_SAMPLES`` / ``ECGML_MAX_REQUEST_SAMPLES``),
counted from the lists' lengths before any signal is converted, so an oversized request costs no more work
than the scoring server already spent parsing it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgml.data.leads import STANDARD_LEADS, MissingLeadError, lead_index
from ecgml.data.signal import flat_leads, resample, standardize
from ecgml.runtime.env import env_count

if TYPE_CHECKING:
    from ecgml.tracking.weights import WeightMetadata

#: Longest record accepted, in seconds: a guard against payloads that would exhaust memory.
MAX_SECONDS = 600.0
#: Most samples (over all leads) of one record: 12 leads x 600 s at 1000 Hz. A 10 kHz record of 600 s
#: (72 million samples, about 700 MB of JSON) is refused; a 10 s record at 500 Hz has 60,000.
MAX_RECORD_SAMPLES = 12 * 600 * 1000
#: Most samples (over all records and leads) of one request: about 80 MB of JSON, which MLflow's scoring
#: server parses twice into Python lists (about 0.5 GB at its peak); 133 records of 12 leads x 10 s at
#: 500 Hz, four times what ``ecgml evaluate`` sends in one request (32 records).
MAX_REQUEST_SAMPLES = 8_000_000
#: The environment variables that raise the two limits (read when a model is loaded).
RECORD_SAMPLES_ENV = "ECGML_MAX_RECORD_SAMPLES"
REQUEST_SAMPLES_ENV = "ECGML_MAX_REQUEST_SAMPLES"
#: Accepted range of :func:`typical_amplitude`, in mV. Real records: 0.24-3.84 mV (PTB-XL, 19,701 records
#: at 100 and 500 Hz; Georgia 0.46-1.40 mV), 99.98% of them within 0.31-3.47 mV.
AMPLITUDE_BOUNDS_MV: tuple[float, float] = (0.03, 15.0)
#: The range real records span, quoted in refusals so a caller can judge an override.
REAL_RANGE_MV: tuple[float, float] = (0.24, 3.84)
#: Flat leads: a record is refused when more than a quarter of the model's leads are flat (3 of 12; 1 of 6;
#: none of 3 or fewer). Real records have at most one: of the 19,601 real PTB-XL records of folds 1-9 at
#: 100 Hz, 19,600 have no flat lead and one has one (``flat_leads``, 0.01 mV peak to peak). A 6-lead device
#: padded to 12 with zeros, or a record with most electrodes off, is outside anything the model was trained
#: on, and its answer would be a guess; up to 3 of 12 leaves room for a detached electrode or two.
FLAT_LEAD_SHARE = 0.25


def max_flat_leads(n_leads: int) -> int:
    """How many of a model's ``n_leads`` leads may be flat (see :data:`FLAT_LEAD_SHARE`)."""
    return int(n_leads * FLAT_LEAD_SHARE)


#: The request field (and ``model_config`` key) that replaces :data:`AMPLITUDE_BOUNDS_MV`.
BOUNDS_FIELD = "amplitude_bounds_mv"


class InvalidEcgInput(ValueError):
    """A request the model cannot score; the message is meant for the caller."""


@dataclass(frozen=True)
class SizeLimits:
    """How many samples (numbers of a signal, over all its leads) one record and one request may hold."""

    record: int = MAX_RECORD_SAMPLES
    request: int = MAX_REQUEST_SAMPLES

    @classmethod
    def from_env(cls) -> SizeLimits:
        """The defaults, or ``$ECGML_MAX_RECORD_SAMPLES`` / ``$ECGML_MAX_REQUEST_SAMPLES`` where set (a bad
        value raises ValueError naming the variable)."""
        return cls(env_count(RECORD_SAMPLES_ENV, MAX_RECORD_SAMPLES), env_count(REQUEST_SAMPLES_ENV,
                                                                                  MAX_REQUEST_SAMPLES))


#: The limits when no variable raises them.
DEFAULT_LIMITS = SizeLimits()


def count_samples(signal: Any) -> int | None:
    """The number of samples of a ``[leads][samples]`` signal from its lengths alone (nothing is converted);
    None when it is not a list of lists or an array (the full check then says what it is)."""
    if isinstance(signal, np.ndarray):
        if signal.dtype != object:
            return int(signal.size)
        if signal.ndim != 1:
            return None
    elif not isinstance(signal, list | tuple):
        return None
    total = 0
    for lead in signal:
        if not isinstance(lead, list | tuple | np.ndarray):
            return None
        total += np.size(lead) if isinstance(lead, np.ndarray) else len(lead)
    return total


def check_record_size(n_samples: int, n_leads: int, seconds: float | None, where: str, limits: SizeLimits) -> None:
    """Refuse a record of more than ``limits.record`` samples or longer than :data:`MAX_SECONDS`, naming the
    limit and how to raise it; called before its signal is converted (or, for a file, read)."""
    if n_samples > limits.record:
        raise InvalidEcgInput(f"{where}: {n_samples:,} samples ({n_leads} leads) are more than the {limits.record:,} "
                              f"accepted per record; send a shorter record, or raise the limit with "
                              f"{RECORD_SAMPLES_ENV} in the environment that loads the model")
    if seconds is not None and seconds > MAX_SECONDS:
        raise InvalidEcgInput(f"{where}: {seconds:.0f} s is longer than the {MAX_SECONDS:.0f} s accepted")


def check_request_size(per_record: Sequence[int | None], limits: SizeLimits) -> None:
    """Refuse a request whose records together hold more than ``limits.request`` samples."""
    total = sum(n for n in per_record if n is not None)
    if total > limits.request:
        raise InvalidEcgInput(f"the request holds {total:,} samples in {len(per_record)} record(s), more than the "
                              f"{limits.request:,} accepted per request; send fewer records per request, or raise "
                              f"the limit with {REQUEST_SAMPLES_ENV} in the environment that loads the model")


def typical_amplitude(x: np.ndarray) -> float:
    """A record's size in its own units: the median, over the leads that move, of each lead's 1st-99th
    percentile range. Percentiles ignore pacemaker spikes and clipped samples; the median over leads
    ignores one detached electrode. 0.0 when every lead is constant."""
    low, high = np.percentile(x, [1.0, 99.0], axis=-1)
    spread = high - low
    moving = spread[spread > 0]
    return float(np.median(moving)) if moving.size else 0.0


def parse_bounds(value: Any, where: str, default: tuple[float, float] = AMPLITUDE_BOUNDS_MV) -> tuple[float, float]:
    """An ``amplitude_bounds_mv`` override (``[low, high]`` in mV, 0 <= low < high); absent or null: default."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidEcgInput(f"{where}: {BOUNDS_FIELD} must be [low, high] in mV, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
        raise InvalidEcgInput(f"{where}: {BOUNDS_FIELD} must be [low, high] with 0 <= low < high, got {value!r}")
    return low, high


def unit_problem(amplitude: float, bounds: tuple[float, float]) -> str | None:
    """Why a signal of this :func:`typical_amplitude` cannot be an ECG in mV (and what it looks like), or None."""
    low, high = bounds
    if low <= amplitude <= high:
        return None
    size = (f"signal amplitude {amplitude:.3g} (median over leads of the 1st-99th percentile range) is outside "
            f"the {low:g}-{high:g} mV accepted")
    override = (f"real ECGs measure {REAL_RANGE_MV[0]:g}-{REAL_RANGE_MV[1]:g} mV; if your device's really lie "
                f"outside, send \"{BOUNDS_FIELD}\": [low, high]")
    if amplitude == 0:
        return "every lead is constant (a flat signal): not an ECG"
    if amplitude < low:
        if low <= amplitude * 1000 <= high:
            return f"{size}: it looks like volts; multiply by 1000 to send millivolts ({override})"
        return f"{size}, {low / amplitude:.0f} times too small: check the units and the gain ({override})"
    if low <= amplitude / 1000 <= high:
        return (f"{size}: it looks like microvolts or raw ADC counts at 1000 units/mV (PTB-XL's and Georgia's "
                f"gain); divide by 1000, or subtract the baseline and divide by the gain in the record's header "
                f"({override})")
    return (f"{size}, {amplitude / high:.0f} times too large: it looks like raw ADC counts; subtract the baseline "
            f"and divide by the gain (units per mV, the gain field of a WFDB header) ({override})")


def _as_array(signal: Any, leads: Sequence[str] | None, where: str) -> tuple[np.ndarray, list[str]]:
    try:
        x = np.asarray(signal, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidEcgInput(f"{where}: signal is not a numeric [leads][samples] array") from None
    if x.ndim != 2:
        raise InvalidEcgInput(f"{where}: signal must be 2-D [leads][samples], got shape {x.shape}")
    n_names = len(leads) if leads is not None else None
    rows, columns = x.shape
    transposed = (columns == n_names and rows != n_names) if n_names is not None else (
        rows > len(STANDARD_LEADS) and columns <= len(STANDARD_LEADS))
    if transposed:
        raise InvalidEcgInput(f"{where}: signal looks transposed ({rows} x {columns}, [samples][leads]); send "
                              f"[leads][samples], e.g. numpy's x.T.tolist()")
    if leads is not None and (isinstance(leads, str) or not all(isinstance(n, str) for n in leads)):
        raise InvalidEcgInput(f"{where}: leads must be a list of lead names (strings), one per signal row, e.g. "
                              f"{list(STANDARD_LEADS[:3])}")
    names = list(leads) if leads is not None else list(STANDARD_LEADS[:rows])
    if len(names) != rows:
        raise InvalidEcgInput(f"{where}: {rows} signal rows but {len(names)} lead names")
    return x, names


def _rate(fs: Any, meta: WeightMetadata, where: str) -> float:
    try:
        rate = float(fs)
    except (TypeError, ValueError):
        raise InvalidEcgInput(f"{where}: fs {fs!r} is not a number") from None
    if not 1 <= rate <= 10_000:
        raise InvalidEcgInput(f"{where}: sampling rate {rate:g} Hz is out of range (1-10000 Hz)")
    if rate < meta.fs:
        raise InvalidEcgInput(f"{where}: sampling rate {rate:g} Hz is below the model's {meta.fs} Hz; resampling "
                              f"up cannot restore what the model reads: send the record at {meta.fs} Hz or more")
    return rate


def prepare_record(signal: Any, fs: Any, leads: Sequence[str] | None, meta: WeightMetadata, where: str,
                   bounds: tuple[float, float] = AMPLITUDE_BOUNDS_MV, limits: SizeLimits = DEFAULT_LIMITS
                   ) -> np.ndarray:
    """Check one record and return it as the model reads it: its leads, its rate, standardised.

    Checks, in order: at most ``limits.record`` samples (counted before anything is converted), a numeric
    2-D array, not transposed, one name per row, a usable rate, at most :data:`MAX_SECONDS`, finite values,
    the model's leads present (each once), at least one input window long, an amplitude that can be
    millivolts (``bounds``), and no more flat leads than :func:`max_flat_leads`.
    """
    n_samples = count_samples(signal)
    if n_samples is not None:  # before the conversion: its cost is what the limit bounds
        check_record_size(n_samples, len(signal), None, where, limits)
    x, names = _as_array(signal, leads, where)
    rate = _rate(fs, meta, where)
    check_record_size(x.size, x.shape[0], x.shape[1] / rate, where, limits)
    if not np.isfinite(x).all():
        raise InvalidEcgInput(f"{where}: signal holds NaN or infinite values")
    try:
        x = x[lead_index(names, meta.leads, where)]
    except MissingLeadError as exc:
        raise InvalidEcgInput(str(exc)) from None
    x = resample(x, rate, meta.fs)
    if x.shape[1] < meta.input_samples:
        raise InvalidEcgInput(f"{where}: {x.shape[1] / meta.fs:.2f} s is shorter than the model's "
                              f"{meta.input_samples / meta.fs:.2f} s input")
    problem = unit_problem(typical_amplitude(x), bounds)
    if problem:
        raise InvalidEcgInput(f"{where}: {problem}")
    flat = [name for name, is_flat in zip(meta.leads, flat_leads(x), strict=True) if is_flat]
    if len(flat) > max_flat_leads(len(meta.leads)):
        raise InvalidEcgInput(f"{where}: {len(flat)} of the model's {len(meta.leads)} leads are flat "
                              f"({', '.join(flat)}); at most {max_flat_leads(len(meta.leads))} may be (real records "
                              "have at most one): check the electrodes, or whether the device records every lead")
    return standardize(x, np.asarray(meta.norm_mean, np.float32), np.asarray(meta.norm_std, np.float32))
