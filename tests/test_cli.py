"""The click layer: options reach the library, bad input ends in one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ecgml.cli import main
from tests.data.trees import write_tiny_ptbxl


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_prepare_then_stats_on_a_ptbxl_tree(tmp_path: Path) -> None:
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=30)
    code, out = _run("data", "prepare", "--source", "ptbxl", "--root", str(root), "--task", "superdiagnostic",
                     "--cache-dir", str(tmp_path / "cache"), "--fs", "50", "--leads", "6")
    assert code == 0, out
    assert "cache ready" in out and "(30, 6, 500)" in out
    code, out = _run("data", "stats", "--source", "ptbxl", "--root", str(root), "--task", "superdiagnostic",
                     "--cache-dir", str(tmp_path / "cache"), "--fs", "50", "--leads", "6",
                     "--json", str(tmp_path / "stats.json"))
    assert code == 0, out
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["label_counts"]["train"]["records"] + stats["label_counts"]["val"]["records"] + \
        stats["label_counts"]["test"]["records"] == 30
    assert stats["cache_sampling_rate"] == 50
    assert "label counts per split" in out and "problems: none" in out


def test_shared18_stats_show_both_label_maps(tmp_path: Path) -> None:
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=30)
    code, out = _run("data", "stats", "--source", "ptbxl", "--root", str(root), "--cache-dir",
                     str(tmp_path / "cache"), "--json", str(tmp_path / "s.json"))
    assert code == 0, out
    maps = json.loads((tmp_path / "s.json").read_text())["label_maps"]
    assert set(maps) == {"challenge", "seed"} and maps["challenge"]["LVH"] == maps["seed"]["LVH"] == 10
    assert "records per shared class under each label map" in out


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    code, out = _run("data", "prepare", "--source", "ptbxl", "--root", str(tmp_path / "nothing"))
    assert code == 1 and "ptbxl_database.csv: not found" in out and "Traceback" not in out
    code, out = _run("data", "prepare", "--source", "g12ec", "--root", str(tmp_path), "--task", "rhythm")
    assert code == 2 and "G12EC is labelled on the shared classes only" in out
    code, out = _run("data", "prepare", "--source", "ptbxl", "--root", str(tmp_path), "--splits", "1-9/9/10")
    assert code == 2 and "more than one split" in out
    code, out = _run("data", "prepare", "--source", "ptbxl", "--root", str(tmp_path), "--leads", "I,V9")
    assert code == 2 and "unknown lead selection" in out
    code, out = _run("data", "prepare", "--source", "ptbxl", "--root", str(tmp_path), "--bandpass", "40")
    assert code == 2 and "LOW,HIGH" in out


def test_a_task_without_labels_is_refused(tmp_path: Path) -> None:
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=6)
    code, out = _run("data", "prepare", "--source", "ptbxl", "--root", str(root), "--task", "form",
                     "--cache-dir", str(tmp_path / "cache"))
    assert code == 1 and "no record has a label in task 'form'" in out


#: Every command that takes ``--backbone-kwargs``, with the arguments it needs before its options.
BACKBONE_KWARGS_COMMANDS = (("pretrain",), ("train-standalone",), ("finetune",), ("tune",),
                            ("experiment", "fraction"))


@pytest.mark.parametrize("command", BACKBONE_KWARGS_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(("value", "problem"), [("width=0.5", "is not JSON"),
                                                ('[{"width": 0.5}]', "is a JSON array, not an object")],
                         ids=["not-json", "json-list"])
def test_bad_backbone_kwargs_is_a_usage_error_before_anything_is_created(
        command: tuple[str, ...], value: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the tune journal and a default mlruns/ would land here
    monkeypatch.setenv("ECGML_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    code, out = _run(*command, "--backbone-kwargs", value)
    assert code == 2, out
    assert f"Invalid value for '--backbone-kwargs': {value!r} {problem}" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("depth", "problem"), [(5000, "nests arrays or objects too deeply to read"),
                                                (20, "nests more than 8 levels deep")], ids=["recursion", "depth"])
def test_deeply_nested_backbone_kwargs_is_a_usage_error(depth: int, problem: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 levels was a RecursionError traceback from the JSON reader."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    value = '{"width": ' + "[" * depth + "]" * depth + "}"
    code, out = _run("train-standalone", "--backbone-kwargs", value)
    assert code == 2, out[-500:]
    shown = repr(value) if len(value) <= 80 else f"{value[:80]!r}... ({len(value)} characters)"
    assert f"Invalid value for '--backbone-kwargs': {shown} {problem}" in out
    assert len(out) < 1000 and list(tmp_path.iterdir()) == []


def test_a_bad_register_as_name_is_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    code, out = _run("finetune", "--register-as", "team/clf", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "--register-as: registered model name 'team/clf': names cannot contain '/'" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()
