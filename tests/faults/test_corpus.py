"""The bad-input corpus (tests/faults/corpus.py): for each broken record, the clear message, the count in
``ecgml data stats``, and proof that caches and the registry stay intact when a command fails."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.prepare import Prepared, prepare
from ecgml.data.stats import dataset_stats, format_stats
from tests.commands import run_ecgml
from tests.conftest import REAL_SAMPLE
from tests.faults.corpus import Corpus, build_corpus

CROP_SAMPLES = 250  # 2.5 s at 100 Hz, the default crop


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, real_ptbxl: Path, real_g12ec: Path) -> Corpus:
    return build_corpus(REAL_SAMPLE, tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cache_dir(corpus: Corpus) -> Path:
    return corpus.ptbxl.parent / "cache"


def _config(root: Path, source: str, cache_dir: Path, **data: object) -> PrepareConfig:
    task = "superdiagnostic" if source == "ptbxl" else "shared18"
    return PrepareConfig(DataConfig(source, root, task=task, **data), cache_dir=cache_dir)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def prepared(corpus: Corpus, cache_dir: Path) -> dict[str, Prepared]:
    return {source: prepare(_config(getattr(corpus, source), source, cache_dir), progress=False)
            for source in ("ptbxl", "g12ec")}


def _findings(p: Prepared) -> dict[str, list[tuple[str, str, bool]]]:
    """record id -> (kind, message, dropped) for everything the reader and the cache said about it."""
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for problem in p.dataset.problems:
        out.setdefault(problem.record_id, []).append((problem.kind, problem.message, problem.dropped))
    for dropped in p.cache.manifest["dropped"]:
        out.setdefault(str(dropped["record_id"]), []).append((dropped["kind"], dropped["reason"], True))
    return out


def _not_regular(folder: str, names: list[str]) -> list[str]:
    """The entries of ``folder`` that are neither folders nor regular files (for ``shutil.copytree``)."""
    return [n for n in names if not (os.path.isdir(os.path.join(folder, n)) or os.path.isfile(os.path.join(folder, n)))]


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


# The case list is static (the builder's order); tests look each case up by name in the built corpus.
_CASE_NAMES: dict[str, list[str]] = {
    "ptbxl": ["truncated .dat", "header lying about length", "header lying about lead count",
              "header lying about lead count (a lead line removed)", "header lying about gain (100x)", "negative gain",
              "NaN lead", "flat lead", "every lead flat", "corrupted samples", "a lead under an unknown name",
              "binary garbage for a header", "listed record missing on disk",
              "a lead twice (13 signals, a second II)", "11 of 12 leads flat",
              "gain 0 (uncalibrated, read at WFDB's 200/mV)", "a FIFO for a .dat", "unparsable scp_codes",
              "non-numeric scp likelihood", "unknown SCP statement", "'..' in a record path", "absolute record path",
              "non-numeric fold", "duplicate ecg_id"],
    "g12ec": ["duplicate record id", "the 2020 release's 4880/mV gain", "truncated .mat", "header lying about length",
              "header lying about lead count", "header lying about gain (1/100)", "corrupt .mat header", "missing .mat",
              "'..' in a signal file name", "empty header", "duplicate SNOMED codes", "unknown SNOMED code",
              "no Dx line", "NaN samples in a lead", "every sample NaN", "1 s record, shorter than a 2.5 s crop",
              "a record of 0 samples", "a PTB-XL record in G12EC"],
}


def test_the_corpus_is_what_the_tests_expect(corpus: Corpus) -> None:
    for source in ("ptbxl", "g12ec"):
        assert [c.name for c in corpus.of(source)] == _CASE_NAMES[source]


@pytest.mark.parametrize("source,name", [(s, n) for s in _CASE_NAMES for n in _CASE_NAMES[s]])
def test_each_broken_record_is_explained(corpus: Corpus, prepared: dict[str, Prepared], source: str,
                                         name: str) -> None:
    case = next(c for c in corpus.of(source) if c.name == name)
    p = prepared[source]
    cached = set(p.cache.records["record_id"])
    found = _findings(p).get(case.record_id, [])
    if case.kind is not None:
        matching = [f for f in found if f[0] == case.kind]
        assert matching, f"{name}: no {case.kind!r} problem for {case.record_id}; found {found}"
        assert any(case.message in message for _, message, _ in matching), (name, matching)
    assert (case.record_id not in cached) == case.dropped, (name, found)
    if not case.dropped:
        row = p.cache.records.set_index("record_id").loc[case.record_id]
        if "records_with_nan" in case.counted:
            assert row["nan_count"] > 0
            assert np.isfinite(p.cache.signals[p.cache.rows([case.record_id])[0]]).all()
        if "records_with_flat_leads" in case.counted:
            assert row["flat_leads"] != ""
        if "short" in case.counted:
            assert row["n_valid"] < CROP_SAMPLES


@pytest.mark.parametrize("source", ["ptbxl", "g12ec"])
def test_data_stats_counts_every_kind(corpus: Corpus, prepared: dict[str, Prepared], source: str) -> None:
    stats = dataset_stats(prepared[source])
    expected = Counter(c.kind for c in corpus.of(source) if c.kind is not None)
    got = {kind: entry["records"] for kind, entry in stats["problems"].items()}
    assert got == dict(expected)
    dropped = {c.record_id for c in corpus.of(source) if c.dropped}
    assert stats["records_cached"] == prepared[source].dataset.records.shape[0] - len(
        [d for d in prepared[source].cache.manifest["dropped"]])
    assert not dropped & set(prepared[source].cache.records["record_id"])
    kept_repaired = [c for c in corpus.of(source) if "records_with_nan" in c.counted]
    assert stats["records_with_nan"] == len(kept_repaired)
    text = format_stats(stats)
    for kind, count in expected.items():
        n_dropped = sum(1 for c in corpus.of(source) if c.kind == kind and c.dropped)
        assert f"  {kind}: {count} records ({n_dropped} dropped), e.g. " in text
    if source == "g12ec":
        assert stats["lengths_s"]["1.0"] == 1  # the short record is visible, not hidden by padding
    assert np.isfinite(np.asarray(prepared[source].cache.signals)).all()


def test_data_stats_command_reports_the_corpus(corpus: Corpus, prepared: dict[str, Prepared], cache_dir: Path,
                                               tmp_path: Path) -> None:
    before = _checksums(cache_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT_", "MLFLOW_RUN_ID"))}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", MLFLOW_TRACKING_URI="")
    done = run_ecgml(["data", "stats", "--source", "g12ec", "--root", str(corpus.g12ec), "--cache-dir",
                      str(cache_dir), "--json", str(tmp_path / "s.json")], timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["cache_digest"] == prepared["g12ec"].cache.digest  # the same cache, reused
    assert stats["problems"]["implausible_amplitude"]["records"] == 1
    assert "implausible_amplitude: 1 records (1 dropped), e.g. " in done.stdout
    assert "Traceback" not in done.stderr
    assert _checksums(cache_dir) == before


def test_a_record_broken_after_caching_never_changes_the_cache(corpus: Corpus, prepared: dict[str, Prepared],
                                                               cache_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "ptbxl"
    shutil.copytree(corpus.ptbxl, root, ignore=_not_regular)  # shutil refuses to copy the corpus's FIFO
    first = prepare(_config(root, "ptbxl", cache_dir), progress=False).cache
    snapshot = _checksums(first.path)
    dat = root / "records100" / "00000" / "00030_lr.dat"
    dat.write_bytes(dat.read_bytes()[:-2])  # broken in place, after the cache was built
    second = prepare(_config(root, "ptbxl", cache_dir), progress=False).cache
    assert second.path != first.path and _checksums(first.path) == snapshot
    assert any(d["record_id"] == "30" and "truncated" in d["reason"] for d in second.manifest["dropped"])


# -- dataset-level cases: each fails with a clear message and leaves every cache as it was -------------------


def _folders(cache_dir: Path) -> list[str]:
    """Everything in the cache folder but the (empty, reusable) lock files."""
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock"))


def _no_stray_build(cache_dir: Path) -> None:
    assert not list(cache_dir.glob(".*.building"))


def test_empty_after_filtering_fails_clearly_and_caches_stay(corpus: Corpus, prepared: dict[str, Prepared],
                                                             cache_dir: Path, tmp_path: Path) -> None:
    before = _checksums(cache_dir)
    folders = _folders(cache_dir)

    # G12EC: every record foreign or unlabelled
    g = tmp_path / "g"
    g.mkdir()
    for name in ("HR00001.hea", "HR00001.mat"):
        shutil.copy(corpus.g12ec / name, g / name)
    for name in ("E00003.hea", "E00003.mat"):
        shutil.copy(corpus.g12ec / "g1" / name, g / name)
    with pytest.raises(ValueError, match=r"no usable G12EC record among 2 header\(s\) \(2 problem\(s\): "
                                         r"1 foreign_record, 1 missing_dx; e\.g\. .*"):
        prepare(_config(g, "g12ec", cache_dir), progress=False)

    # PTB-XL: no record carries a label of the task
    p = tmp_path / "p"
    p.mkdir()
    (p / "records100").symlink_to(corpus.ptbxl / "records100")
    shutil.copy(corpus.ptbxl / "scp_statements.csv", p / "scp_statements.csv")
    table = pd.read_csv(corpus.ptbxl / "ptbxl_database.csv")
    table["scp_codes"] = "{'SR': 0.0}"
    table.to_csv(p / "ptbxl_database.csv", index=False)
    with pytest.raises(ValueError, match=r"no record has a label in task 'superdiagnostic'.*nothing to train on"):
        prepare(_config(p, "ptbxl", cache_dir), progress=False)

    # PTB-XL: every listed record is unreadable
    table = pd.read_csv(corpus.ptbxl / "ptbxl_database.csv")
    table[table["ecg_id"].isin([2, 3, 4])].to_csv(p / "ptbxl_database.csv", index=False)
    with pytest.raises(ValueError, match=r"every record failed to load, e\.g\. .*00002_lr\.dat: truncated"):
        prepare(_config(p, "ptbxl", cache_dir), progress=False)

    # PTB-XL: the chosen folds hold nothing (the split is empty after filtering)
    from ecgml.train.pipeline import build_splits

    odd = prepare(_config(corpus.ptbxl, "ptbxl", tmp_path / "other-cache", splits="1-8/9/11"), progress=False)
    with pytest.raises(ValueError, match=r"the test split \(folds \(11,\)\) has no labelled record"):
        build_splits(odd, 1.0, 0)

    # a training fraction that keeps no record names the option, its value and the records it had
    n_train = len(build_splits(prepared["ptbxl"], 1.0, 0).train.rows)
    with pytest.raises(ValueError, match=rf"--fraction 1e-09 of the {n_train} labelled training record\(s\) \(folds "
                                         rf"\(1, 2, 3, 4, 5, 6, 7, 8\)\) keeps none; give at least") as caught:
        build_splits(prepared["ptbxl"], 1e-9, 0)
    suggested = float(str(caught.value).split("give at least ")[1].split(",")[0])
    assert len(build_splits(prepared["ptbxl"], suggested, 0).train.rows) >= 1  # the suggestion is enough

    assert _checksums(cache_dir) == before
    assert _folders(cache_dir) == folders  # no new cache, no half-built one
    _no_stray_build(cache_dir)


# -- registry cases -------------------------------------------------------------------------------------------


@pytest.fixture
def registry_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from tests.tracking.test_registry import _pretrain_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # restored after the test (run_training sets it)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.chdir(tmp_path)
    from ecgml.tracking.registry import register_best

    _pretrain_run(tmp_path / "bb", 0.8)  # fs 100 Hz, 2.5 s input, 12 leads: fits the G12EC corpus at 100 Hz
    register_best("pre", "bb")
    yield tmp_path


def _finetune(corpus: Corpus, cache_dir: Path, runs: Path, uri: str, **data: object):
    from ecgml.train.pipeline import ModelConfig, TrainConfig
    from ecgml.train.runner import run_training

    leads = data.pop("leads", "12")
    config = TrainConfig(kind="finetune", data=PrepareConfig(DataConfig("g12ec", corpus.g12ec, **data),  # type: ignore[arg-type]
                                                             leads=str(leads), cache_dir=cache_dir),
                         model=ModelConfig("xresnet1d18", {"width": 0.25}), runs_dir=runs, init_uri=uri,
                         register_as="clf", experiment="ft", device="cpu")
    return run_training(config, progress=False)


def _registry_state() -> dict[str, list[str]]:
    import mlflow

    client = mlflow.MlflowClient()
    return {m.name: sorted(str(v.version) for v in client.search_model_versions(f"name = '{m.name}'"))
            for m in client.search_registered_models()}


def test_registry_errors_leave_registry_and_caches_intact(corpus: Corpus, prepared: dict[str, Prepared],
                                                          cache_dir: Path, registry_store: Path) -> None:
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.weights import WeightsError

    before, registry = _checksums(cache_dir), _registry_state()
    assert registry == {"bb": ["1"]}
    runs = registry_store / "runs"

    with pytest.raises(RegistryError, match="has no version 9"):
        _finetune(corpus, cache_dir, runs, "models:/bb/9")
    with pytest.raises(RegistryError, match="no registered model named 'nothing'; registered models: bb"):
        _finetune(corpus, cache_dir, runs, "models:/nothing/1")
    with pytest.raises(ValueError, match=r"models:/bb/1 does not fit the target data: it was trained at 100 Hz, the "
                                         r"target is prepared at 50 Hz \(pass --fs 100.*it expects leads I,II"):
        _finetune(corpus, cache_dir, runs, "models:/bb/1", fs=50, leads="6")

    # a registered version whose weights were tampered with on the store: refused, never unpickled
    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("touch pwned",))

    stored = [p for p in registry_store.rglob("state_dict.pt") if "runs" not in p.parts]
    assert stored
    for path in stored:
        torch.save({"x": Evil()}, path)
    with pytest.raises(WeightsError, match=r"state_dict\.pt: refused, holds objects other than tensors"):
        _finetune(corpus, cache_dir, runs, "models:/bb/1")
    assert not (registry_store / "pwned").exists()

    assert _registry_state() == registry  # no classifier registered, no backbone version added
    after = _checksums(cache_dir)  # a mismatched target may have got its own new cache; the old ones are untouched
    assert {k: after[k] for k in before} == before
    _no_stray_build(cache_dir)
