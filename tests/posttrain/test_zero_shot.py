"""Zero-shot: a PTB-XL model's own classes scored on a Challenge target through SNOMED CT, with no training.

The map of SCP statements to SNOMED CT codes is checked against the Challenge's own published counts (real
metadata, skipped without it); ``ecgml evaluate --zero-shot`` scores the shipped PTB-XL backbone as registered,
on the synthetic Georgia tree read as a Challenge collection and on the real first-release CPSC records, in a
SQLite store and on a real ``mlflow server`` over HTTP.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ecgml.cli import main
from ecgml.data.dx_mapping import DX_MAPPING_FILES, dx_code
from ecgml.data.labels import load_label_map, scp_snomed_codes
from ecgml.evaluate.zero_shot import ZeroShotError, class_codes, zero_shot_map
from tests.conftest import REAL_SAMPLE

SHIPPED_CLASSES = json.loads((Path(__file__).resolve().parents[2] / "ecgml" / "pretrained" / "models" / "ptbxl-all"
                              / "classes.json").read_text())
#: The nine classes of CPSC 2018 as its first release spells them.
CPSC = ("AF", "I-AVB", "LBBB", "Normal", "PAC", "PVC", "RBBB", "STD", "STE")
FIRST_RELEASE = REAL_SAMPLE / "cinc" / "challenge-2020" / "Training_WFDB"


def test_every_ptbxl_statement_has_its_snomed_ct_code() -> None:
    """The 71 statements of the shipped PTB-XL model: each has a code, from one file only."""
    codes = scp_snomed_codes()
    assert sorted(codes) == sorted(SHIPPED_CLASSES)
    lmap = load_label_map("challenge")
    assert codes["CRBBB"] == lmap.snomed_codes["CRBBB"] and codes["NT_"] == lmap.snomed_codes["NDT"]
    assert codes["AFIB"] == ("164889003",) and codes["STD_"] == ("429622005",)


def test_the_map_reproduces_the_challenges_ptbxl_counts(real_ptbxl_metadata: Path) -> None:
    """For every code the Challenge gave PTB-XL records, the records whose statements map to it are exactly as many
    as its table's PTB_XL column says (the heart-axis codes come from another column of PTB-XL, not statements)."""
    database = pd.read_csv(real_ptbxl_metadata / "ptbxl_database.csv")
    statements = database["scp_codes"].map(lambda text: set(ast.literal_eval(text)))
    mapping = scp_snomed_codes()
    published: dict[str, int] = {}
    for name in DX_MAPPING_FILES[:2]:  # 2021, the year of the PTB-XL tranche
        table = pd.read_csv(Path(__file__).resolve().parents[2] / "ecgml" / "data" / "resources" / name)
        published.update({str(c): int(n) for c, n in zip(table["SNOMEDCTCode"], table["PTB_XL"], strict=True)
                          if n > 0})
    axis = {"39732003", "47665007", "251200008"}  # LAD, RAD, indeterminate axis
    counts = {code: int(statements.map(lambda s, code=code: any(code in mapping.get(x, ()) for x in s)).sum())
              for code in published}
    differ = {code: (counts[code], n) for code, n in published.items() if code not in axis and counts[code] != n}
    assert differ == {}


def test_cpsc_classes_are_each_met_by_the_shipped_models_statements() -> None:
    targets = class_codes("own", "challenge", [str(dx_code(c)) for c in CPSC])
    mapping = zero_shot_map(class_codes("all", "challenge", SHIPPED_CLASSES), targets)
    assert mapping.unmatched == ()
    by_code = {dx_code(c): c for c in CPSC}
    sources = {by_code[c]: mapping.sources[c] for c in mapping.classes}
    assert sources["AF"] == ("AFIB",) and sources["I-AVB"] == ("1AVB",)
    assert sources["RBBB"] == ("CRBBB",)  # RBBB 59118001 and complete RBBB 713427006 score as one diagnosis
    assert set(sources["Normal"]) == {"NORM", "SR"}  # both converted to sinus rhythm by the Challenge
    assert sources["PVC"] == ("PVC",)
    probs = np.random.default_rng(0).random((5, len(SHIPPED_CLASSES)))
    out = mapping.probabilities(probs)
    normal = mapping.classes.index(str(dx_code("Normal")))
    assert np.allclose(out[:, normal], probs[:, [SHIPPED_CLASSES.index("NORM"), SHIPPED_CLASSES.index("SR")]].max(1))


def test_classes_without_an_equivalent_are_listed_and_grouped_tasks_refused() -> None:
    mapping = zero_shot_map(class_codes("rhythm", "challenge", ["AFIB", "SR"]),
                            class_codes("own", "challenge", ["164889003", "59118001"]))
    assert mapping.classes == ("164889003",) and mapping.unmatched == ("59118001",)
    assert mapping.to_dict()["no_equivalent"][0]["description"] == "RBBB (right bundle branch block)"
    with pytest.raises(ZeroShotError, match="task 'superdiagnostic' groups PTB-XL statements"):
        class_codes("superdiagnostic", "challenge", ["CD", "HYP", "MI", "NORM", "STTC"])


def _evaluate(*args: str) -> str:
    result = CliRunner().invoke(main, ["evaluate", "--model", "models:/ecgml-ptbxl-backbone/1", "--zero-shot",
                                       "--source", "cinc", "--split", "all", "--bootstrap", "50", *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_zero_shot_evaluation_of_the_shipped_backbone(store: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from ecgml.data.synth import generate_g12ec

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("ECGML_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    done = CliRunner().invoke(main, ["pretrained", "register", "ptbxl-all"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    tree = tmp_path / "g12ec"
    generate_g12ec(tree, 100, seed=3, workers=1, progress=False)
    out = _evaluate("--root", str(tree), "--min-positives", "5")
    run_id = re.search(r"^run ([0-9a-f]{32}): all macro AUC", out, flags=re.MULTILINE)
    assert run_id, out
    assert "426783006 <- NORM, SR" in out  # sinus rhythm, as the Challenge converted both
    client = mlflow.MlflowClient(store)
    run = client.get_run(run_id.group(1))
    assert run.data.tags["ecgml.zero_shot"] == "true" and run.data.tags["ecgml.model_dataset"] == "ptbxl"
    metrics = run.data.metrics
    assert metrics["test_macro_auc_low"] <= metrics["test_macro_auc"] <= metrics["test_macro_auc_high"]
    assert "test_auc_426783006" in metrics
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="zero_shot.json",
                                                tracking_uri=store)
    doc = json.loads(Path(local).read_text())
    assert doc["from"]["426783006"] == ["NORM", "SR"] and doc["combined_by"] == "max"
    assert "426783006" in doc["classes"] and len(doc["model_classes"]) == len(SHIPPED_CLASSES)

    if store.startswith("http"):
        return  # the real records' formats are the reader's business: once, on SQLite, is enough
    if not FIRST_RELEASE.is_dir():
        pytest.skip(f"real Challenge sample {FIRST_RELEASE} is absent (set ECGML_REAL_SAMPLE)")
    root = tmp_path / "cpsc"
    shutil.copytree(FIRST_RELEASE, root)
    out = _evaluate("--root", str(root), "--min-positives", "3")
    assert re.search(r"^run [0-9a-f]{32}: all macro AUC \d\.\d{4}", out, flags=re.MULTILINE), out


def test_zero_shot_refuses_what_it_cannot_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ECGML_DATA", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["evaluate", "--model", "models:/ecgml-ptbxl-backbone/1", "--split", "all"])
    assert result.exit_code == 1 and "split 'all' scores every record" in result.output
