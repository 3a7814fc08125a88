"""The pyfunc flavour: raw signal in, named probabilities out, bad input refused with a message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.signal import resample
from ecgml.models import create_backbone
from ecgml.tracking.pyfunc import EcgClassifier, InvalidEcgInput, log_pyfunc
from ecgml.tracking.weights import WeightMetadata, save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_backbone("xresnet1d18", in_channels=3, num_classes=2, width=0.25).eval()
    metadata = WeightMetadata(
        backbone="xresnet1d18", backbone_kwargs=model.constructor["kwargs"], num_classes=2, fs=100,
        input_samples=250, leads=("II", "V1", "aVR"), classes=("LVH", "NDT"), norm_mean=(0.1, 0.0, -0.1),
        norm_std=(0.5, 0.4, 0.3), source="ptbxl", dataset_version="test", cache_digest="d", task="shared18",
        label_map="challenge", aggregate="mean")
    return save_weights(tmp_path_factory.mktemp("w") / "weights", model, metadata)


def _signal(fs: int = 500, seconds: float = 10.0) -> np.ndarray:
    t = np.arange(int(fs * seconds)) / fs
    return np.stack([np.sin(2 * np.pi * (1 + i / 3) * t) * 0.5 for i in range(12)]).astype(np.float32)


def test_classifier_does_the_preprocessing_itself(weights: Path) -> None:
    clf = EcgClassifier(weights)
    x500 = _signal(500)
    probs = clf.predict_proba([{"signal": x500.tolist(), "fs": 500}])
    assert probs.shape == (1, 2) and ((probs > 0) & (probs < 1)).all()
    # Same ECG handed over at 100 Hz with its leads in another order: the model picks leads by name.
    x100 = resample(x500, 500, 100)
    order = list(reversed(STANDARD_LEADS))
    shuffled = x100[[STANDARD_LEADS.index(n) for n in order]]
    again = clf.predict_proba([{"signal": shuffled.tolist(), "fs": 100, "leads": order}])
    np.testing.assert_allclose(again, probs, atol=1e-4)
    # By hand: select, standardise, windows of 250 every 125 samples, sigmoid, mean.
    meta = clf.metadata
    x = (x100[[1, 6, 3]] - np.array(meta.norm_mean, np.float32)[:, None]) / np.array(meta.norm_std, np.float32)[:, None]
    windows = torch.from_numpy(np.stack([x[:, s:s + 250] for s in range(0, 751, 125)]))
    with torch.no_grad():
        expected = torch.sigmoid(clf.model(windows)).mean(0).numpy()
    np.testing.assert_allclose(probs[0], expected, atol=1e-4)


@pytest.mark.parametrize(("row", "message"), [
    ({"signal": np.zeros((12, 100)).tolist(), "fs": 500}, "shorter than the model's 2.50 s input"),
    ({"signal": np.full((12, 5000), np.nan).tolist(), "fs": 500}, "NaN"),
    ({"signal": np.zeros((5000,)).tolist(), "fs": 500}, "must be 2-D"),
    ({"signal": np.zeros((2, 5000)).tolist(), "fs": 500, "leads": ["I", "II"]}, r"missing lead\(s\) V1, aVR"),
    ({"signal": np.zeros((12, 5000)).tolist(), "fs": 500, "leads": ["I"]}, "12 signal rows but 1 lead names"),
    ({"signal": "abc", "fs": 500}, "not a numeric"),
    ({"signal": np.zeros((12, 5000)).tolist(), "fs": "fast"}, "not a number"),
    ({"fs": 500}, "needs 'signal' and 'fs'"),
])
def test_bad_requests_get_a_message(weights: Path, row: dict, message: str) -> None:
    with pytest.raises(InvalidEcgInput, match=message):
        EcgClassifier(weights).predict_proba([row])


def test_logged_model_loads_through_mlflow(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run():
        info = log_pyfunc(weights)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    frame = loaded.predict(pd.DataFrame([{"signal": _signal(500).tolist(), "fs": 500}]))
    assert list(frame.columns) == ["LVH", "NDT"]
    np.testing.assert_allclose(frame.to_numpy(), EcgClassifier(weights).predict_proba(
        [{"signal": _signal(500).tolist(), "fs": 500}]), atol=1e-6)


def test_logged_model_has_a_signature_and_a_ready_example(weights: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's model page shows the request columns, the class columns and an example request that works."""
    import json

    import mlflow
    from mlflow.models import Model

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run():
        info = log_pyfunc(weights)
    meta = Model.load(info.model_uri)
    assert meta.signature.inputs.input_names() == ["signal", "fs", "leads", "amplitude_bounds_mv"]
    assert meta.signature.outputs.input_names() == ["LVH", "NDT"]
    example = meta.load_input_example(mlflow.artifacts.download_artifacts(info.model_uri))
    assert len(example) == 1 and example["fs"][0] == 100 and example["leads"][0] == list(STANDARD_LEADS)
    signal = np.asarray(example["signal"][0])
    assert signal.shape == (12, 250)  # the model's input window at its own rate
    np.testing.assert_array_equal(signal, np.round(signal, 3))  # read from 16-bit WFDB at 1000 units/mV
    frame = mlflow.pyfunc.load_model(info.model_uri).predict(example)
    assert frame.shape == (1, 2) and list(frame.columns) == ["LVH", "NDT"]
    assert ((frame.to_numpy() > 0) & (frame.to_numpy() < 1)).all()
    # The ready request MLflow shows on the model page is that same record, in the scoring server's format.
    served = json.loads(Path(mlflow.artifacts.download_artifacts(info.model_uri), "serving_input_example.json")
                        .read_text())
    assert served["dataframe_split"]["columns"] == ["signal", "fs", "leads"]
