"""The report names the source and the target from their dataset registry entries, never by a typed name: a study
fine-tuned on a Challenge collection says so in its sentences, tables and plots, and never says G12EC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ecgml.data.sources import get_dataset_source
from ecgml.experiments import schema
from tests.experiments.test_report import EXPERIMENT, FAMILIES, Store


def _cinc_study(root: Path) -> Store:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    store = Store(root, client, client.create_experiment(EXPERIMENT, artifact_location=(root / "a").as_uri()))
    store.sweep("fraction", "standard")
    store.pretrain("fraction", "standard", {}, 0, 0.93)
    target = {schema.DATASET: "cinc"}
    for fraction in (0.1, 1.0):
        for seed in range(2):
            setting = {"target_fraction": fraction}
            store.training("fraction", "standard", "finetune", "xresnet", setting, seed, 1.0, extra_tags=target)
            for family in FAMILIES[:2]:
                store.training("fraction", "standard", "standalone", family, setting, seed, 0.8, extra_tags=target)
    return store


def _figure_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every axis label and title of the figures the report draws."""
    import ecgml.experiments.report_figures as figures

    texts: list[str] = []
    save = figures.save_figure

    def spy(fig: Any, path: Path) -> Path:
        for ax in fig.axes:
            texts.extend([ax.get_ylabel(), ax.get_xlabel(), ax.get_title()])
        return save(fig, path)

    monkeypatch.setattr(figures, "save_figure", spy)
    return texts


def test_a_report_on_a_cinc_target_names_it_and_never_g12ec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ecgml.experiments.collect import collect
    from ecgml.experiments.report import write_report

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    _cinc_study(tmp_path)
    texts = _figure_texts(monkeypatch)
    collected = collect(EXPERIMENT, log=lambda _: None)
    assert set(collected.runs.loc[collected.runs["arm"] != "pretrain", "dataset"]) == {"cinc"}
    report = write_report(collected, tmp_path / "report", n_rounds=50, progress=False, log=lambda _: None)
    text = report.read_text()
    cinc, ptbxl = get_dataset_source("cinc").title, get_dataset_source("ptbxl").title
    assert "G12EC" not in text and "g12ec" not in text
    assert f"12 {cinc} training runs (fine-tuned and standalone)" in text
    assert f"| {cinc} fine-tuned xresnet |" in text and f"| standalone resnet ({cinc}) |" in text
    assert f"| {ptbxl} pretraining xresnet ({ptbxl} test) |" in text
    assert f"not on {cinc}: they show what the backbone learned" in text
    drawn = " ".join(texts)
    assert f"{cinc} test macro AUC" in drawn and f"not {cinc}" in drawn and "G12EC" not in drawn


def test_a_store_without_the_dataset_tag_reads_as_the_default_study(tmp_path: Path) -> None:
    """Runs logged before the tag was read (or without it) are the study's default source and target."""
    import pandas as pd

    from ecgml.experiments.analysis import Datasets, datasets_of

    assert datasets_of(pd.DataFrame({"arm": ["finetune"], "dataset": [None]})) == Datasets("PTB-XL", "G12EC")
    assert datasets_of(pd.DataFrame()) == Datasets.of()
    mixed = pd.DataFrame({"arm": ["finetune", "standalone", "standalone", "pretrain"],
                          "dataset": ["cinc", "cinc", "g12ec", "ptbxl"]})
    assert datasets_of(mixed).target == f"{get_dataset_source('cinc').title} / G12EC"
