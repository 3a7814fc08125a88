"""Exporting, checking and loading shipped backbones: float16 on disk, float32 back, hashes enforced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgml.pretrained.card import CARD_FILE, CARD_MARKDOWN, CITATIONS, ModelCard
from ecgml.pretrained.export import export_pretrained
from ecgml.pretrained.shipped import PretrainedError, find_shipped, list_shipped, load_shipped, verify
from ecgml.tracking.weights import load_model, load_state_dict
from tests.pretrained.conftest import CLASSES, export_tiny, tiny_weights


def test_export_writes_a_card_that_describes_the_weights(tmp_path: Path) -> None:
    folder = export_tiny(tmp_path)
    card = ModelCard.read(folder / CARD_FILE)
    assert card.task == "superdiagnostic" and card.classes == CLASSES and card.fs == 100
    assert card.train_folds == (1, 2, 3, 4, 5, 6, 7, 8) and card.selection_folds == (9,)
    assert card.data_release == "1.0.3" and "CC BY 4.0" in card.licence and card.citations == CITATIONS
    assert card.commit == "0123456789abcdef" and "--task superdiagnostic" in card.command
    assert set(card.files) == {"state_dict.pt", "metadata.json", "classes.json", "leads.json"}
    markdown = (folder / CARD_MARKDOWN).read_text()
    for fact in ("1.0.3", "folds 1, 2, 3, 4, 5, 6, 7, 8", "Wagner", "Goldberger", card.files["state_dict.pt"],
                 "val_macro_auc | 0.5000", "2.5 s"):
        assert fact in markdown, fact
    assert {m.name for m in list_shipped(tmp_path / "shipped")} == {"tiny-superdiagnostic"}
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}


def test_float16_weights_come_back_as_float32_within_half_an_ulp(tmp_path: Path) -> None:
    original = tiny_weights(tmp_path / "w")
    export_tiny(tmp_path)
    model, meta, card = load_shipped("tiny-superdiagnostic", tmp_path / "shipped")
    reference, _ = load_model(original)
    ours = model.state_dict()
    for key, value in load_state_dict(original).items():
        restored = ours[key]
        assert restored.dtype == value.dtype
        if value.is_floating_point():  # float16 keeps 11 significant bits: relative error <= 2**-11
            assert bool((restored - value).abs().le(value.abs() * 2.0**-11 + 2.0**-24).all()), key
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (4, 12, 250)).astype(np.float32))
    with torch.no_grad():
        gap = (torch.sigmoid(model(x)) - torch.sigmoid(reference(x))).abs().max().item()
    assert gap < 5e-3
    assert meta.classes == card.classes == CLASSES


def test_a_changed_file_is_refused_by_name(shipped_root: Path) -> None:
    model = find_shipped("tiny-superdiagnostic", shipped_root)
    verify(model)
    weights = model.folder / "state_dict.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match=r"state_dict\.pt: SHA-256 .* does not match .*card\.json"):
        load_shipped("tiny-superdiagnostic", shipped_root)


def test_metadata_that_contradicts_the_card_is_refused(shipped_root: Path) -> None:
    folder = shipped_root / "tiny-superdiagnostic"
    card = json.loads((folder / CARD_FILE).read_text())
    card["classes"] = ["A", "B", "C", "D", "E"]
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(PretrainedError, match=r"metadata.json disagrees with .*card.json: classes"):
        load_shipped("tiny-superdiagnostic", shipped_root)


def test_unknown_name_and_wrong_task_are_clear(shipped_root: Path, tmp_path: Path) -> None:
    with pytest.raises(PretrainedError, match=r"no shipped backbone named 'nope'.*shipped: tiny-superdiagnostic"):
        find_shipped("nope", shipped_root)
    with pytest.raises(PretrainedError, match=r"trained on task 'superdiagnostic' .*not 'rhythm'; none is shipped"):
        find_shipped("tiny-superdiagnostic", shipped_root, task="rhythm")
    with pytest.raises(PretrainedError, match="ships no pretrained backbone"):
        find_shipped("x", tmp_path / "empty")


def test_export_refuses_bad_names_and_existing_folders(tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path / "w")
    args = {"metrics": {"val_macro_auc": 0.5}, "command": "c", "commit": "abc", "out_dir": tmp_path / "out"}
    with pytest.raises(PretrainedError, match="use lower-case"):
        export_pretrained(weights, "Bad Name", **args)
    export_pretrained(weights, "ok", **args)
    with pytest.raises(PretrainedError, match="exists; pass overwrite=True"):
        export_pretrained(weights, "ok", **args)
    assert export_pretrained(weights, "ok", **args, overwrite=True).is_dir()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok"]  # no scratch folder left behind
    with pytest.raises(PretrainedError, match="missing: not a weights folder"):
        export_pretrained(tmp_path / "missing", "other", **args)
