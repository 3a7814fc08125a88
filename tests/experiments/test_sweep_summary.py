"""The sweep run's comparison: mean and spread of test AUC over seeds per setting and model, and its chart."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgml.experiments.sweep_summary import comparison_table, plot_comparison


def _row(arm: str, backbone: str, fraction: float, seed: int, auc: float) -> dict:
    return {"arm": arm, "backbone": backbone, "setting": {"target_fraction": fraction}, "seed": seed,
            "test_macro_auc": auc}


def test_table_has_mean_and_spread_per_setting_and_model(tmp_path: Path) -> None:
    rows = [_row("finetune", "x", 0.1, 0, 0.80), _row("finetune", "x", 0.1, 1, 0.90),
            _row("standalone", "x", 0.1, 0, 0.60), _row("standalone", "x", 0.1, 1, float("nan")),
            _row("finetune", "x", 1.0, 0, 0.95), _row("pretrain", "x", 1.0, 0, 0.99)]
    table = comparison_table(rows)
    assert list(table["model"]) == ["finetune x", "standalone x", "finetune x"]
    first = table.iloc[0]
    assert first["setting"] == "target_fraction=0.1" and first["mean"] == pytest.approx(0.85)
    assert first["std"] == pytest.approx(0.0707, abs=1e-4) and first["seeds"] == 2
    assert table.iloc[1]["seeds"] == 1  # a failed seed (NaN) is left out, not averaged in
    path = plot_comparison(table, tmp_path / "c.png", "sweep fraction")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert comparison_table([]).empty
