"""`ecgml pretrained register`: a shipped backbone becomes a registered version that serves and that
fine-tuning can download; bad cards, tasks and aliases register nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ecgml.pretrained.shipped import PretrainedError
from tests.pretrained.conftest import CLASSES


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the logged model's artifacts land under ./mlruns here
    return uri


def _versions(uri: str) -> list:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri).search_model_versions("name = 'ecgml-ptbxl-backbone'")


def _ecg(fs: int = 500, seconds: float = 10.0) -> np.ndarray:
    t = np.arange(int(fs * seconds)) / fs
    beat = np.exp(-(((t % 0.8) - 0.3) ** 2) / (2 * 0.01**2))
    return np.stack([(0.5 + 0.1 * k) * beat for k in range(12)]).astype(np.float32)


def test_registered_shipped_backbone_serves_and_downloads(shipped_root: Path, store: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    import ecgml.pretrained.shipped as shipped
    from ecgml.cli import main
    from ecgml.tracking.registry import download_weights, resolve
    from ecgml.tracking.weights import load_model

    monkeypatch.setattr(shipped, "SHIPPED_DIR", shipped_root)
    listed = CliRunner().invoke(main, ["pretrained", "list"])
    assert listed.exit_code == 0 and "tiny-superdiagnostic  task superdiagnostic (5 classes)" in listed.output
    done = CliRunner().invoke(main, ["pretrained", "register", "tiny-superdiagnostic", "--alias", "production"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[-1] == "models:/ecgml-ptbxl-backbone@production"

    (version,) = _versions(store)
    assert version.run_id is None  # nothing here trained it
    assert version.tags["ecgml.source"] == "shipped-card" and version.tags["task"] == "superdiagnostic"
    assert version.tags["ecgml.card_weights_sha256"] == shipped.find_shipped(
        "tiny-superdiagnostic", shipped_root).card.files["state_dict.pt"]
    assert version.tags["git_commit"] == "0123456789abcdef"

    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model("models:/ecgml-ptbxl-backbone@production")
    frame = model.predict(pd.DataFrame([{"signal": _ecg(500).tolist(), "fs": 500}]))  # raw mV at 500 Hz
    assert list(frame.columns) == list(CLASSES) and ((frame > 0) & (frame < 1)).all().all()
    net, meta = load_model(download_weights(resolve("models:/ecgml-ptbxl-backbone/1")))  # what finetune does
    assert meta.classes == CLASSES
    assert all(str(p.dtype) == "torch.float32" for p in net.parameters())


def test_nothing_is_registered_half_way(shipped_root: Path, store: str) -> None:
    from ecgml.pretrained.register import register_shipped

    with pytest.raises(PretrainedError, match="not 'rhythm'"):
        register_shipped("tiny-superdiagnostic", task="rhythm", root=shipped_root)
    with pytest.raises(PretrainedError, match="alias 'v3'"):
        register_shipped("tiny-superdiagnostic", alias="v3", root=shipped_root)
    weights = shipped_root / "tiny-superdiagnostic" / "state_dict.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(PretrainedError, match=r"state_dict\.pt: SHA-256 .* does not match"):
        register_shipped("tiny-superdiagnostic", alias="production", root=shipped_root)
    assert _versions(store) == []


def test_bad_aliases_and_names_are_refused_before_anything_is_logged(shipped_root: Path, store: str,
                                                                     tmp_path: Path) -> None:
    from ecgml.cli import main

    for args, says in ((["--alias", "my alias"], "alias 'my alias': an alias is lower case letters"),
                       (["--alias", "Production"], "use 'production'"),
                       (["--alias", "a" * 300], "(300 characters)"),
                       (["--registered-name", "bad name/x"], "--registered-name: registered model name 'bad name/x': "
                                                             "names cannot contain '/' or ':'")):
        import ecgml.pretrained.shipped as shipped

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(shipped, "SHIPPED_DIR", shipped_root)
            done = CliRunner().invoke(main, ["pretrained", "register", "tiny-superdiagnostic", *args])
        assert done.exit_code == 1 and says in done.output, (args, done.output)
        assert "Traceback" not in done.output
    assert _versions(store) == [] and not (tmp_path / "mlruns").exists()  # no orphan logged model


def test_registry_list_says_a_shipped_version_came_with_ecgml(shipped_root: Path, store: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import ecgml.pretrained.shipped as shipped
    from ecgml.cli import main

    monkeypatch.setattr(shipped, "SHIPPED_DIR", shipped_root)
    assert CliRunner().invoke(main, ["pretrained", "register", "tiny-superdiagnostic"]).exit_code == 0
    listed = CliRunner().invoke(main, ["registry", "list", "ecgml-ptbxl-backbone"])
    assert listed.exit_code == 0, listed.output
    assert "shipped with ecgml (ecgml/pretrained/models/tiny-superdiagnostic/" in listed.output
    assert "run None" not in listed.output and "val_macro_auc 0.500" in listed.output
    assert "AUC ?" not in listed.output
    assert "no test macro AUC (shipped with ecgml: its card's validation figures), val_macro_auc 0.500" in listed.output
