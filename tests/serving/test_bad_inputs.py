"""The smaller bad inputs of serving and ``ecgml predict`` (issue 23, item 9), each refused or reported by
name: nested JSON, requests too large, symlinked folders and loops, FIFOs, upper-case endings, signal files
without a header, uncalibrated gains."""

from __future__ import annotations

import json
import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ecgml
from ecgml.data.formats import format_header, parse_header, read_header, write_wfdb_record
from ecgml.data.leads import STANDARD_LEADS
from ecgml.predict import PredictSummary, find_records, predict_files
from ecgml.tracking.ecg_input import (
    MAX_RECORD_SAMPLES,
    RECORD_SAMPLES_ENV,
    REQUEST_SAMPLES_ENV,
    SizeLimits,
    count_samples,
)
from ecgml.tracking.pyfunc import EcgClassifier, InvalidEcgInput
from tests.serving.conftest import ecg as _ecg


def _refusal(weights: Path, rows: list[dict[str, Any]], **kwargs: Any) -> str:
    with pytest.raises(InvalidEcgInput) as caught:
        EcgClassifier(weights, **kwargs).predict_proba(rows)
    return str(caught.value)


def _nested(depth: int) -> Any:
    value: Any = 1.0
    for _ in range(depth):
        value = [value]
    return value


# -- nested JSON ----------------------------------------------------------------------------------------------


def test_nested_signals_and_leads_that_are_not_names_get_one_line(weights: Path) -> None:
    x = _ecg().tolist()
    message = _refusal(weights, [{"signal": _nested(500), "fs": 100}])
    assert message == "row 0: signal is not a numeric [leads][samples] array"
    nested_leads = [[name] for name in STANDARD_LEADS]  # was an AttributeError (a stack trace over HTTP)
    assert _refusal(weights, [{"signal": x, "fs": 100, "leads": nested_leads}]).startswith(
        "row 0: leads must be a list of lead names (strings), one per signal row")
    joined = ",".join(STANDARD_LEADS)  # was read letter by letter as 34 lead names
    assert _refusal(weights, [{"signal": x, "fs": 100, "leads": joined}]).startswith("row 0: leads must be a list")


@pytest.fixture(scope="module")
def logged_model(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    import mlflow

    from ecgml.tracking.pyfunc import log_pyfunc

    root = tmp_path_factory.mktemp("logged")
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_experiment("bad-inputs")
    with mlflow.start_run():
        return str(log_pyfunc(weights).model_uri)


def _invoke(model_uri: str, body: str) -> Any:
    """MLflow's scoring server's own handler of ``/invocations`` (what ``mlflow models serve`` runs), in process."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(model_uri)
    return scoring_server.invocations(body, "application/json", model, model.metadata.get_input_schema())


def _status_and_message(call: Callable[[], Any]) -> tuple[int, str]:
    from mlflow.exceptions import MlflowException

    try:
        result = call()
    except MlflowException as exc:
        return exc.get_http_status_code(), exc.message
    return result.status, ""


def test_the_scoring_server_hands_nested_json_to_ecgml_until_its_own_parser_gives_up(logged_model: str) -> None:
    """Up to Python's recursion limit the body reaches ecgml and is refused in one line (400). Deeper, the
    RecursionError is raised by MLflow's ``_decode_json_input`` (its ``json.loads``), before any ecgml code
    runs, and the server answers 500: docs/serving.md says so. When this test fails, MLflow has fixed it;
    update that page."""
    body = json.dumps({"dataframe_records": [{"signal": _nested(500), "fs": 100}]})
    status, message = _status_and_message(lambda: _invoke(logged_model, body))
    assert (status, message) == (400, "row 0: signal is not a numeric [leads][samples] array")

    deep = '{"dataframe_records": [{"fs": 100, "signal": ' + "[" * 5000 + "]" * 5000 + "}]}"
    with pytest.raises(RecursionError) as caught:
        _invoke(logged_model, deep)
    frames = traceback.extract_tb(caught.value.__traceback__)
    last_mlflow = max(i for i, f in enumerate(frames) if f"{os.sep}mlflow{os.sep}" in f.filename)
    assert frames[last_mlflow].name == "_decode_json_input" and frames[last_mlflow].filename.endswith(
        os.path.join("mlflow", "pyfunc", "scoring_server", "__init__.py"))
    assert all(f"{os.sep}json{os.sep}" in f.filename for f in frames[last_mlflow + 1:])  # json.loads, then C
    package = str(Path(ecgml.__file__).parent)
    assert not any(f.filename.startswith(package) for f in frames)  # no ecgml code on the way


# -- request size ---------------------------------------------------------------------------------------------


def test_a_request_is_bounded_in_samples_per_record_and_per_request(weights: Path) -> None:
    x = _ecg().tolist()  # 12 x 1000 samples
    limits = SizeLimits(record=12 * 1000, request=3 * 12 * 1000)
    assert EcgClassifier(weights, limits=limits).predict_proba([{"signal": x, "fs": 100}] * 3).shape == (3, 5)
    message = _refusal(weights, [{"signal": x, "fs": 100}] * 4, limits=limits)
    assert message == ("the request holds 48,000 samples in 4 record(s), more than the 36,000 accepted per request; "
                       f"send fewer records per request, or raise the limit with {REQUEST_SAMPLES_ENV} in the "
                       "environment that loads the model")
    longer = _ecg(100, 11.0).tolist()
    message = _refusal(weights, [{"signal": longer, "fs": 100}], limits=limits)
    assert message.startswith("row 0: 13,200 samples (12 leads) are more than the 12,000 accepted per record")
    assert RECORD_SAMPLES_ENV in message

    # counted from the lengths, before anything is converted: a non-numeric oversized signal is refused for size
    junk = [["x"] * 1001] * 12
    assert "more than the 12,000 accepted per record" in _refusal(weights, [{"signal": junk, "fs": 100}],
                                                                   limits=limits)


def test_the_default_limit_refuses_ten_minutes_at_10_khz_unconverted(weights: Path) -> None:
    huge = np.broadcast_to(np.float32(0.5), (12, 600 * 10_000))  # 72 million samples, a view of one number
    assert count_samples(huge) == 72_000_000 > MAX_RECORD_SAMPLES
    message = _refusal(weights, [{"signal": huge, "fs": 10_000}])
    assert message.startswith(f"row 0: 72,000,000 samples (12 leads) are more than the {MAX_RECORD_SAMPLES:,} "
                              "accepted per record")


def test_the_limits_come_from_the_environment(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUEST_SAMPLES_ENV, "20_000")
    monkeypatch.setenv(RECORD_SAMPLES_ENV, "1e6")
    assert SizeLimits.from_env() == SizeLimits(record=1_000_000, request=20_000)
    two = [{"signal": _ecg().tolist(), "fs": 100}] * 2
    assert "more than the 20,000 accepted per request" in _refusal(weights, two)
    monkeypatch.setenv(REQUEST_SAMPLES_ENV, "lots")
    with pytest.raises(ValueError, match=f"{REQUEST_SAMPLES_ENV}='lots' is not a number"):
        EcgClassifier(weights)
    monkeypatch.setenv(REQUEST_SAMPLES_ENV, "0.5")
    with pytest.raises(ValueError, match="must be a whole number of at least 1"):
        SizeLimits.from_env()


def test_the_served_model_reads_the_limit_where_it_is_loaded(logged_model: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUEST_SAMPLES_ENV, "20000")
    body = json.dumps({"dataframe_records": [{"signal": _ecg().tolist(), "fs": 100}] * 2})
    status, message = _status_and_message(lambda: _invoke(logged_model, body))
    assert status == 400 and message.startswith("the request holds 24,000 samples in 2 record(s), more than the "
                                                "20,000 accepted per request"), message


def test_predict_refuses_a_record_too_large_from_its_header_before_reading_it(weights: Path, tmp_path: Path) -> None:
    write_wfdb_record(tmp_path, "holter", _ecg(), 100, list(STANDARD_LEADS))
    header = (tmp_path / "holter.hea").read_text()
    (tmp_path / "holter.hea").write_text(header.replace("holter 12 100 1000", "holter 12 10000 6000000", 1))
    (tmp_path / "holter.dat").unlink()  # never opened: the header alone decides
    (outcome,) = predict_files(EcgClassifier(weights), [tmp_path / "holter.hea"])
    assert outcome.status == "refused" and outcome.seconds == 600.0
    assert outcome.problems[-1].startswith(f"{tmp_path / 'holter'}: 72,000,000 samples (12 leads) are more than")


# -- files: FIFOs, symlinks, loops, upper case, headerless signals --------------------------------------------


def _within(seconds: float, work: Callable[[], Any]) -> Any:
    """``work()``'s result, or a failure (not a hung test) when it has not returned after ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # handed to the test below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (blocked on a FIFO?)"
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_a_fifo_is_refused_by_name_without_being_opened(weights: Path, tmp_path: Path) -> None:
    write_wfdb_record(tmp_path, "pipe", _ecg(), 100, list(STANDARD_LEADS))
    (tmp_path / "pipe.dat").unlink()
    os.mkfifo(tmp_path / "pipe.dat")
    os.mkfifo(tmp_path / "alone.hea")
    outcomes = _within(20, lambda: predict_files(EcgClassifier(weights), find_records([tmp_path])[0]))
    by_id = {o.record_id: o for o in outcomes}
    assert by_id["pipe"].status == "unreadable"
    assert by_id["pipe"].problems[-1] == (f"{tmp_path / 'pipe.dat'}: is a named pipe (FIFO), not a regular file; "
                                          "refused without opening it")
    assert by_id["alone"].status == "unreadable" and "alone.hea: is a named pipe (FIFO)" in by_id["alone"].problems[-1]


def test_symlinked_folders_are_followed_once_and_loops_named(weights: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "ward"
    real.mkdir(parents=True)
    write_wfdb_record(real, "r1", _ecg(), 100, list(STANDARD_LEADS))
    given = tmp_path / "given"
    given.mkdir()
    write_wfdb_record(given, "r0", _ecg(), 100, list(STANDARD_LEADS))
    (given / "ward").symlink_to(real, target_is_directory=True)  # was skipped silently
    (real / "back").symlink_to(given, target_is_directory=True)  # a loop: given/ward/back is given
    headers, skipped = _within(20, lambda: find_records([given]))
    assert headers == [given / "r0.hea", given / "ward" / "r1.hea"]
    assert skipped == [f"{given / 'ward' / 'back'}: a link to {given}, a folder already searched (a loop, or a "
                       "second link to it); not searched again"]


def test_upper_case_endings_and_headerless_signal_files_are_named(weights: Path, tmp_path: Path) -> None:
    write_wfdb_record(tmp_path, "good", _ecg(), 100, list(STANDARD_LEADS))
    write_wfdb_record(tmp_path, "loud", _ecg(), 100, list(STANDARD_LEADS))
    (tmp_path / "loud.hea").rename(tmp_path / "loud.HEA")
    (tmp_path / "loud.dat").rename(tmp_path / "loud.DAT")
    (tmp_path / "orphan.mat").write_bytes(b"\0" * 64)
    (tmp_path / "notes.txt").write_text("not a record")
    headers, skipped = find_records([tmp_path])
    assert headers == [tmp_path / "good.hea"]
    assert skipped == [
        f"{tmp_path / 'loud.HEA'}: upper-case ending .HEA; ecgml reads the endings .hea, .dat and .mat in lower "
        "case (rename the record's files, e.g. loud.hea)",
        f"{tmp_path / 'orphan.mat'}: a signal file without its header orphan.hea; a record needs both",
    ]
    assert find_records([tmp_path / "orphan.mat", tmp_path / "loud.HEA"])[1] == skipped[::-1]
    summary = PredictSummary(tmp_path / "out.csv", ("NORM",), [], skipped)
    assert [line for line in summary.lines() if line.startswith("  skipped: ")] == [f"  skipped: {s}" for s in skipped]


# -- gain 0 ---------------------------------------------------------------------------------------------------


def test_a_zero_gain_is_read_as_wfdbs_uncalibrated_200_with_a_warning_per_file(weights: Path, tmp_path: Path) -> None:
    x = _ecg() / 5  # what a device at 1000 units/mV writes, read at WFDB's default 200 units/mV: about 1 mV
    write_wfdb_record(tmp_path, "zero", x, 100, list(STANDARD_LEADS), gain=1000.0)
    text = (tmp_path / "zero.hea").read_text()
    (tmp_path / "zero.hea").write_text(text.replace(" 1000.0(0)/mV ", " 0(0)/mV "))
    write_wfdb_record(tmp_path, "fine", _ecg(), 100, list(STANDARD_LEADS))
    header = read_header(tmp_path / "zero.hea")
    assert header.uncalibrated_leads == list(STANDARD_LEADS) and {s.gain for s in header.signals} == {200.0}
    assert parse_header(format_header(header)).uncalibrated_leads == list(STANDARD_LEADS)  # stays uncalibrated
    assert read_header(tmp_path / "fine.hea").uncalibrated_leads == []

    outcomes = predict_files(EcgClassifier(weights), [tmp_path / "zero.hea", tmp_path / "fine.hea"])
    assert [o.status for o in outcomes] == ["ok", "ok"]
    note = (f"{tmp_path / 'zero.hea'}: every lead declares an ADC gain of 0 or none, which WFDB reads as "
            "uncalibrated at its default 200 units/mV")
    assert outcomes[0].warnings[0].startswith(note) and note in outcomes[0].problems[0]
    assert outcomes[1].warnings == ()
    lines = PredictSummary(tmp_path / "out.csv", ("NORM",), outcomes).lines()
    assert [line for line in lines if line.startswith("  warning: ")] == [f"  warning: {outcomes[0].warnings[0]}"]
