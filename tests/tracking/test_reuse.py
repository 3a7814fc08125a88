"""Reuse sees the data: a step's key holds the fingerprint of the tree it reads, so changed data is never served by
a run trained on the old one; main's synthetic trees are regenerated when their SYNTH.json differs from the request."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecgml.data.synth import generate_g12ec
from ecgml.tracking.reuse import data_fingerprint, get_or_run, step_key

COMMIT = "0123abcd"


def test_fingerprint_follows_content_not_path(tmp_path: Path) -> None:
    tree = tmp_path / "real"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "A1.hea").write_text("A1 12 500 5000\n")
    (tree / "A2.mat").write_bytes(b"\0" * 10)
    first = data_fingerprint(tree)
    assert first.startswith("files:") and data_fingerprint(tree) == first
    os.utime(tree / "A2.mat", ns=(1, 1))
    touched = data_fingerprint(tree)
    assert touched != first
    (tree / "A3.hea").write_text("A3\n")
    assert data_fingerprint(tree) != touched
    assert data_fingerprint(tmp_path / "nowhere") == "missing"


def test_synthetic_fingerprint_is_its_generator_config(tmp_path: Path) -> None:
    generate_g12ec(tmp_path / "a", 12, seed=1, workers=1, progress=False)
    generate_g12ec(tmp_path / "b", 12, seed=1, workers=1, progress=False)
    generate_g12ec(tmp_path / "c", 14, seed=1, workers=1, progress=False)
    a, b, c = (data_fingerprint(tmp_path / n) for n in "abc")
    assert a.startswith("synth:") and a == b != c  # same config at another path: same data


def test_a_step_on_changed_data_runs_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from ecgml.tracking.reuse import STEP_KEY
    from ecgml.workflow.main import _Steps

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("reuse")
    ran: list[str] = []

    def action(key: str) -> str:
        run = client.create_run(experiment, tags={STEP_KEY: key, "git_commit": COMMIT})
        client.set_terminated(run.info.run_id)
        ran.append(run.info.run_id)
        return run.info.run_id

    def steps(g12ec: str) -> _Steps:
        s = _Steps("reuse", "parent", COMMIT, lambda _: None)
        s.data = {"ptbxl": "synth:p", "g12ec": g12ec}
        return s

    first = steps("synth:g1").run("finetune", {"digest": "d"}, action, reads=("g12ec",))
    again = steps("synth:g1").run("finetune", {"digest": "d"}, action, reads=("g12ec",))
    assert not first.reused and again.reused and again.run_id == first.run_id
    changed = steps("synth:g2").run("finetune", {"digest": "d"}, action, reads=("g12ec",))
    assert not changed.reused and changed.run_id != first.run_id and len(ran) == 2
    # a step that does not read the changed tree is still reused
    pre = steps("synth:g1").run("pretrain", {"digest": "p"}, action, reads=("ptbxl",))
    assert steps("synth:g2").run("pretrain", {"digest": "p"}, action, reads=("ptbxl",)).run_id == pre.run_id
    # and a dirty checkout never reuses
    dirty = get_or_run("reuse", step_key("x", {}), "abc-dirty", lambda: "new")
    assert dirty.run_id == "new" and not dirty.reused


def test_main_regenerates_a_tree_of_other_options_and_refuses_foreign_files(tmp_path: Path) -> None:
    from ecgml.workflow.main import DataTreeError, _synthetic_tree

    root = tmp_path / "g12ec"
    said: list[str] = []
    _synthetic_tree("g12ec", root, 12, 1, 1, said.append)
    assert said == [f"data: writing 12 synthetic g12ec-shaped records to {root}"]
    before = data_fingerprint(root)
    _synthetic_tree("g12ec", root, 12, 1, 1, said.append)
    assert len(said) == 1 and data_fingerprint(root) == before  # the same request keeps the tree
    _synthetic_tree("g12ec", root, 10, 1, 1, said.append)
    assert said[1] == (f"data: {root} was generated with other options (n_records 12 -> 10): deleting it and "
                       "writing it again")
    assert len(list(root.rglob("*.hea"))) == 10 and data_fingerprint(root) != before  # no stale records left
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "E00001.hea").write_text("x")
    with pytest.raises(DataTreeError, match=r"mine is not empty but has no SYNTH\.json .*delete it"):
        _synthetic_tree("g12ec", foreign, 12, 1, 1, said.append)
    assert (foreign / "E00001.hea").is_file()
