"""`ecgml pretrained list`: an `all` model's statement families are printed apart from its own figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ecgml.evaluate.families import family_metric
from tests.pretrained.conftest import tiny_weights


def test_list_prints_the_families_scored_from_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ecgml.pretrained.shipped as shipped
    from ecgml.cli import main
    from ecgml.pretrained.export import export_pretrained

    metrics = {"val_macro_auc": 0.91, family_metric("diagnostic"): 0.925, family_metric("form"): 0.85,
               family_metric("rhythm"): 0.95}
    export_pretrained(tiny_weights(tmp_path / "run" / "weights"), "tiny-all", metrics=metrics,
                      command="python benchmarks/real_ptbxl.py --root ROOT --tasks all", commit="0123456789abcdef",
                      out_dir=tmp_path / "shipped", training={"epochs": 1})
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "shipped")
    listed = CliRunner().invoke(main, ["pretrained", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert any(line.strip().endswith(": val_macro_auc 0.910") for line in lines), listed.output
    assert ("  statement families scored from this model (fold 9 macro AUC): diagnostic 0.925, form 0.850, "
            "rhythm 0.950") in lines
