"""Splits, fractions and configuration checks of a training run; weights with their metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.prepare import prepare
from ecgml.models import create_backbone
from ecgml.tracking.store import TrackingError, check_tracking_uri
from ecgml.tracking.weights import WeightMetadata, WeightsError, load_model, read_metadata, save_weights
from ecgml.train.loop import OptimConfig
from ecgml.train.pipeline import ModelConfig, TrainConfig, build_splits, predictions_frame
from tests.data.trees import write_tiny_ptbxl


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    root = write_tiny_ptbxl(tmp_path_factory.mktemp("t") / "ptbxl", n=60)
    config = PrepareConfig(DataConfig("ptbxl", root, task="superdiagnostic"), cache_dir=tmp_path_factory.mktemp("c"))
    return prepare(config, progress=False)


def test_splits_follow_the_folds_and_the_fraction_is_stratified(prepared) -> None:
    full = build_splits(prepared, 1.0, seed=0)
    folds = prepared.cache.records["fold"].to_numpy()
    assert set(folds[full.train.rows]) <= set(range(1, 9))
    assert set(folds[full.val.rows]) == {9} and set(folds[full.test.rows]) == {10}
    half = build_splits(prepared, 0.5, seed=0)
    assert abs(len(half.train) - len(full.train) / 2) <= 2
    assert set(half.train.rows) <= set(full.train.rows)
    np.testing.assert_array_equal(half.train.rows, build_splits(prepared, 0.5, seed=0).train.rows)
    np.testing.assert_array_equal(half.val.rows, full.val.rows)  # evaluation never shrinks
    per_class_full = full.train.labels.sum(0)
    np.testing.assert_allclose(half.train.labels.sum(0), per_class_full / 2, atol=1.01)


def test_predictions_frame_names_every_column(prepared) -> None:
    splits = build_splits(prepared, 1.0, seed=0)
    probs = np.full((len(splits.test), len(splits.classes)), 0.25)
    frame = predictions_frame(splits.test, splits.tables["test"], splits.classes, probs)
    assert list(frame.columns[:2]) == ["record_id", "fold"]
    assert [c for c in frame.columns if c.startswith("prob_")] == [f"prob_{c}" for c in splits.classes]
    np.testing.assert_array_equal(frame[[f"true_{c}" for c in splits.classes]].to_numpy(), splits.test.labels)


def test_config_errors_before_any_work(tmp_path: Path) -> None:
    data = PrepareConfig(DataConfig("ptbxl", tmp_path, task="superdiagnostic"), cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        TrainConfig(kind="pretrain", data=data, fraction=0)
    with pytest.raises(ValueError, match=r"longer than the 10\.0 s records"):
        TrainConfig(kind="pretrain", data=data, crop_s=12)
    with pytest.raises(ValueError, match="lr > 0"):
        OptimConfig(lr=-1)
    a = TrainConfig(kind="pretrain", data=data, run_name="x", num_workers=3)
    b = TrainConfig(kind="pretrain", data=data, run_name="y")
    assert a.digest() == b.digest()  # names and worker counts do not change results
    assert a.digest() != TrainConfig(kind="pretrain", data=data, model=ModelConfig("inception1d")).digest()
    # where batches are cut and compilation are speed settings: a run may resume with others
    fast = TrainConfig(kind="pretrain", data=data, device_data="on", compile_model=True)
    assert fast.digest() == b.digest()
    with pytest.raises(ValueError, match="device data must be one of auto, on, off, not 'gpu'"):
        TrainConfig(kind="pretrain", data=data, device_data="gpu")


def test_data_path_options_reach_the_run_config(tmp_path: Path) -> None:
    from ecgml.cli.train import pretrain_command, train_config

    args = ["--root", str(tmp_path), "--cache-dir", str(tmp_path), "--device-data", "on", "--compile"]
    with pretrain_command.make_context("pretrain", args) as ctx:
        options = {k: v for k, v in ctx.params.items() if k not in ("resume", "resume_run_id")}
    config = train_config("pretrain", "ptbxl", options)
    assert (config.device_data, config.compile_model) == ("on", True)
    with pretrain_command.make_context("pretrain", ["--root", str(tmp_path)]) as ctx:
        assert (ctx.params["device_data"], ctx.params["compile_model"]) == ("auto", False)


def test_unreachable_tracking_server_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        check_tracking_uri("http://127.0.0.1:9", timeout=2)
    with pytest.raises(TrackingError, match="does not exist or is not writable"):
        check_tracking_uri(f"sqlite:///{tmp_path}/missing/dir/mlflow.db")
    assert check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db").endswith("mlflow.db")


def _metadata() -> WeightMetadata:
    return WeightMetadata(backbone="xresnet1d18", backbone_kwargs={"in_channels": 3, "num_classes": 2, "width": 0.25},
                          num_classes=2, fs=100, input_samples=250, leads=("I", "II", "V2"), classes=("A", "B"),
                          norm_mean=(0.0, 0.0, 0.0), norm_std=(1.0, 1.0, 1.0), source="ptbxl",
                          dataset_version="1.0.3", cache_digest="abc", task="superdiagnostic", label_map="challenge")


def test_weights_round_trip_with_metadata(tmp_path: Path) -> None:
    model = create_backbone("xresnet1d18", in_channels=3, num_classes=2, width=0.25).eval()
    save_weights(tmp_path / "w", model, _metadata())
    rebuilt, metadata = load_model(tmp_path / "w")
    x = torch.randn(2, 3, 250)
    torch.testing.assert_close(rebuilt(x), model(x))
    assert metadata == _metadata() == read_metadata(tmp_path / "w")
    assert (tmp_path / "w" / "classes.json").read_text().split() == ["[", '"A",', '"B"', "]"]


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    model = create_backbone("xresnet1d18", in_channels=3, num_classes=2, width=0.25)
    save_weights(tmp_path / "w", model, _metadata())

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "w" / "state_dict.pt")
    with pytest.raises(WeightsError, match="refused"):
        load_model(tmp_path / "w")


def test_frequency_domain_inputs_are_the_same_in_training_and_serving(prepared, tmp_path: Path) -> None:
    from ecgml.data.windows import to_input_domain
    from ecgml.tracking.pyfunc import EcgClassifier
    from ecgml.train.pipeline import make_datasets

    data = PrepareConfig(DataConfig("ptbxl", prepared.dataset.root, task="superdiagnostic"),
                         cache_dir=prepared.cache.path.parent)
    with pytest.raises(ValueError, match="unknown input domain 'wavelet'"):
        TrainConfig("pretrain", data, input_domain="wavelet")
    config = TrainConfig("pretrain", data, input_domain="fft_magnitude")
    splits = build_splits(prepared, 1.0, seed=0)
    train, _, test = make_datasets(prepared.cache, splits, config)
    x, _ = train[0]
    assert x.shape == (12, config.crop_samples // 2 + 1) and bool((x >= 0).all())  # magnitudes of the rFFT bins
    window, owner = test[0]
    mean, std = prepared.cache.stats
    row = int(splits.test.rows[owner])
    raw = (np.asarray(prepared.cache.signals[row, :, : config.crop_samples]) - mean[:, None]) / std[:, None]
    np.testing.assert_allclose(window.numpy(), to_input_domain(raw[None], "fft_magnitude")[0], rtol=1e-4, atol=1e-5)
    # Parseval, one-sided spectrum of an even-length window: the 1/sqrt(n) scaling keeps the energy.
    power = window.numpy().astype(np.float64) ** 2
    spectral = power[:, 0] + 2 * power[:, 1:-1].sum(axis=1) + power[:, -1]
    np.testing.assert_allclose(spectral, (raw.astype(np.float64) ** 2).sum(axis=1), rtol=1e-3)

    # A model trained on FFT inputs serves FFT inputs: the pyfunc reads the domain from the weights.
    model = create_backbone("xresnet1d18", in_channels=12, num_classes=5, width=0.25, layers=[1, 1])
    meta = WeightMetadata(backbone="xresnet1d18", backbone_kwargs=model.constructor["kwargs"], num_classes=5,
                          fs=100, input_samples=250, leads=prepared.cache.leads, classes=tuple("ABCDE"),
                          norm_mean=tuple(map(float, mean)), norm_std=tuple(map(float, std)), source="ptbxl",
                          dataset_version="x", cache_digest="x", task="superdiagnostic", label_map="challenge",
                          input_domain="fft_magnitude")
    folder = save_weights(tmp_path / "w", model, meta)
    signal = np.asarray(prepared.cache.signals[row, :, :250])
    served = EcgClassifier(folder).predict_proba([{"signal": signal, "fs": 100}])
    with torch.no_grad():
        direct = torch.sigmoid(model.eval()(torch.from_numpy(to_input_domain(
            ((signal - mean[:, None]) / std[:, None]).astype(np.float32)[None], "fft_magnitude")))).numpy()
    np.testing.assert_allclose(served, direct, rtol=1e-4, atol=1e-6)
