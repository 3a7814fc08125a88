"""Signal cache: equal values, reuse, rebuild on change, concurrency, crash safety."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import signal as signals
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecgml.data.cache import cache as cache_module
from ecgml.data.cache.cache import Cache, build_cache
from ecgml.data.formats import write_wfdb_record
from ecgml.data.signal import Preprocessing
from ecgml.data.sources.ptbxl import read_ptbxl
from tests.data.trees import PTBXL_LEAD_NAMES, write_tiny_ptbxl


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tiny_ptbxl(tmp_path / "ptbxl", n=30, rates=(100, 500))


def test_cache_equals_wfdb_and_is_reused(tree: Path, tmp_path: Path) -> None:
    dataset = read_ptbxl(tree, fs=100, task="superdiagnostic")
    cache = build_cache(dataset, Preprocessing(fs=100), tmp_path / "cache", progress=False)
    assert cache.signals.shape == (30, 12, 1000)
    for record_id in ("1", "17", "30"):
        expected, _ = wfdb.rdsamp(str(tree / "records100" / "00000" / f"{int(record_id):05d}_lr"))
        np.testing.assert_allclose(cache.signals[cache.rows([record_id])[0]], expected.T, atol=1e-6)
    assert (cache.path / "leads.json").read_text().strip() == (
        '["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]')
    mtime = (cache.path / "signals.f32").stat().st_mtime_ns
    again = build_cache(dataset, Preprocessing(fs=100), tmp_path / "cache", progress=False, workers=2)
    assert again.path == cache.path and (again.path / "signals.f32").stat().st_mtime_ns == mtime
    train = dataset.split("train")
    mean, std = cache.stats
    rows = cache.signals[cache.rows(train["record_id"].tolist())]
    np.testing.assert_allclose(mean, rows.mean(axis=(0, 2)), atol=1e-5)
    np.testing.assert_allclose(std, rows.std(axis=(0, 2)), rtol=1e-4)
    assert cache.manifest["train_stats"]["n_records"] == len(train)


def test_parallel_build_equals_serial(tree: Path, tmp_path: Path) -> None:
    dataset = read_ptbxl(tree, fs=500, task="all")
    pre = Preprocessing(fs=250, leads=("II", "V1", "aVR"), seconds=8)
    serial = build_cache(dataset, pre, tmp_path / "a", progress=False)
    parallel = build_cache(dataset, pre, tmp_path / "b", progress=False, workers=2)
    assert serial.signals.shape == (30, 3, 2000)
    np.testing.assert_array_equal(serial.signals, parallel.signals)
    assert serial.digest == parallel.digest


def test_any_input_change_gives_a_new_cache(tree: Path, tmp_path: Path) -> None:
    dataset = read_ptbxl(tree, fs=100, task="superdiagnostic")
    first = build_cache(dataset, Preprocessing(fs=100), tmp_path / "cache", progress=False)
    other_rate = build_cache(dataset, Preprocessing(fs=50), tmp_path / "cache", progress=False)
    other_leads = build_cache(dataset, Preprocessing(fs=100, leads=("I",)), tmp_path / "cache", progress=False)
    filtered = build_cache(dataset, Preprocessing(fs=100, bandpass_low=0.5), tmp_path / "cache", progress=False)
    assert len({first.digest, other_rate.digest, other_leads.digest, filtered.digest}) == 4
    time.sleep(0.01)
    new_signal = np.tile(np.sin(np.arange(1000) / 10.0).astype(np.float32), (12, 1)) * 0.25
    write_wfdb_record(tree / "records100" / "00000", "00003_lr", new_signal, 100, PTBXL_LEAD_NAMES)
    changed = build_cache(read_ptbxl(tree, fs=100, task="superdiagnostic"), Preprocessing(fs=100),
                          tmp_path / "cache", progress=False)
    assert changed.digest != first.digest
    np.testing.assert_allclose(changed.signals[changed.rows(["3"])[0]], new_signal, atol=6e-4)
    assert not np.allclose(first.signals[first.rows(["3"])[0]], new_signal, atol=0.01)  # old cache untouched


def test_unreadable_records_are_dropped_and_listed(tree: Path, tmp_path: Path) -> None:
    folder = tree / "records100" / "00000"
    (folder / "00004_lr.dat").write_bytes((folder / "00004_lr.dat").read_bytes()[:100])
    write_wfdb_record(folder, "00005_lr", np.zeros((12, 1000), np.float32), 100, PTBXL_LEAD_NAMES)
    nan = np.random.default_rng(0).normal(size=(12, 1000)).astype(np.float32)
    nan[2, :10] = np.nan
    write_wfdb_record(folder, "00006_lr", nan, 100, PTBXL_LEAD_NAMES)
    dataset = read_ptbxl(tree, fs=100, task="superdiagnostic")
    cache = build_cache(dataset, Preprocessing(fs=100), tmp_path / "cache", progress=False, workers=2)
    dropped = {d["record_id"]: d["reason"] for d in cache.manifest["dropped"]}
    assert set(dropped) == {"4", "5"}
    assert "00004_lr.dat: truncated" in dropped["4"] and "every lead is flat" in dropped["5"]
    assert cache.signals.shape[0] == 28 and "4" not in set(cache.records["record_id"])
    assert cache.manifest["nan_samples"] == 10 and cache.manifest["records_with_nan"] == 1
    row = cache.rows(["6"])[0]
    assert not np.isnan(cache.signals[row]).any()
    kept = [r for r in dataset.records["record_id"] if r not in dropped]
    ids = cache.records["record_id"].tolist()
    assert sorted(ids) == sorted(kept) and cache.records["row"].tolist() == list(range(28))
    built = sorted(dataset.records["record_id"])  # the build's order, before the drops
    holes = [built.index("4"), built.index("5")]
    assert [ids[h] for h in holes] == built[-2:]  # the last two rows filled the dropped records' places
    for record_id in kept:  # every row holds the record records.csv says it does
        np.testing.assert_allclose(cache.signals[cache.rows([record_id])[0]],
                                   np.nan_to_num(dataset.load_signal(record_id)), atol=1e-6)


def test_labels_live_beside_the_cache(tree: Path, tmp_path: Path) -> None:
    dataset = read_ptbxl(tree, fs=100, task="superdiagnostic")
    cache = build_cache(dataset, Preprocessing(fs=100), tmp_path / "cache", progress=False)
    cache.write_labels(dataset)
    classes, labels = cache.load_labels("superdiagnostic", "challenge")
    assert classes == ("CD", "HYP", "NORM")
    expected = dataset.label_matrix(dataset.records.set_index("record_id").loc[cache.records["record_id"]]
                                    .reset_index())
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(FileNotFoundError, match="no labels for task 'rhythm'"):
        cache.load_labels("rhythm", "challenge")


def _build_in_child(tree: str, cache_dir: str, queue: mp.Queue) -> None:
    dataset = read_ptbxl(tree, fs=500, task="all")
    cache = build_cache(dataset, Preprocessing(fs=500), cache_dir, progress=False)
    queue.put((str(cache.path), cache.manifest["created"]))


def test_two_processes_building_the_same_cache(tree: Path, tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(str(tree), str(tmp_path / "c"), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert results[0] == results[1]  # same folder, built once (same creation stamp)
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if not p.name.endswith(".lock")) == [
        Path(results[0][0]).name]


def test_a_killed_build_leaves_nothing_that_looks_finished(tree: Path, tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from ecgml.data.cache import cache\n"
        "from ecgml.data.sources.ptbxl import read_ptbxl\n"
        "from ecgml.data.signal import Preprocessing\n"
        "slow = cache._load_rows\n"
        "def crawl(job):\n"
        "    print('building', flush=True); time.sleep(30); return slow(job)\n"
        "cache._load_rows = crawl\n"
        f"cache.build_cache(read_ptbxl({str(tree)!r}, fs=100), Preprocessing(fs=100), {str(tmp_path / 'c')!r},"
        " progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "building"
    os.kill(proc.pid, signals.SIGKILL)
    proc.wait()
    leftovers = list((tmp_path / "c").glob(".*.building"))
    assert leftovers and not [p for p in (tmp_path / "c").iterdir() if not p.name.startswith(".")]
    cache = build_cache(read_ptbxl(tree, fs=100), Preprocessing(fs=100), tmp_path / "c", progress=False)
    assert cache.signals.shape[0] == 30
    assert not list((tmp_path / "c").glob(".*.building"))  # the stale half-build was cleared


def test_a_failing_build_keeps_the_previous_cache(tree: Path, tmp_path: Path, monkeypatch) -> None:
    dataset = read_ptbxl(tree, fs=100)
    good = build_cache(dataset, Preprocessing(fs=100), tmp_path / "c", progress=False)
    before = np.array(good.signals)

    def disk_full(job):
        raise OSError(28, f"cannot write {job.signals_path}: No space left on device")

    monkeypatch.setattr(cache_module, "_load_rows", disk_full)
    with pytest.raises(OSError, match=r"signals\.f32: No space left"):
        build_cache(dataset, Preprocessing(fs=100, seconds=5), tmp_path / "c", progress=False)
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if not p.name.startswith(".")) == [good.path.name]
    np.testing.assert_array_equal(Cache(good.path).signals, before)


def test_truncated_cache_is_refused(tree: Path, tmp_path: Path) -> None:
    cache = build_cache(read_ptbxl(tree, fs=100), Preprocessing(fs=100), tmp_path / "c", progress=False)
    with open(cache.path / "signals.f32", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(ValueError, match=r"signals\.f32: has 1000 bytes, manifest promises"):
        Cache(cache.path)


def test_direct_io_or_not_the_bytes_are_the_same(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ecgml.data.cache import rows as cache_rows

    dataset = read_ptbxl(tree, fs=500, task="all")
    pre = Preprocessing(fs=500)
    direct = (build_cache(dataset, pre, tmp_path / "a", progress=False).path / "signals.f32").read_bytes()
    refused: list[int] = []
    real_pwrite_all = cache_rows._pwrite_all

    def no_direct_io(path: str, view: memoryview, offset: int, flags: int) -> None:
        if flags:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        real_pwrite_all(path, view, offset, flags)

    monkeypatch.setattr(cache_rows, "_pwrite_all", no_direct_io)
    refused_build = build_cache(dataset, pre, tmp_path / "b", progress=False)
    assert (refused_build.path / "signals.f32").read_bytes() == direct
    assert len(refused) == bool(cache_rows._O_DIRECT)  # 30 rows of 240,000 bytes: one aligned part, refused
    monkeypatch.setattr(cache_rows, "_O_DIRECT", 0)
    buffered = build_cache(dataset, pre, tmp_path / "c", progress=False, workers=2)
    assert (buffered.path / "signals.f32").read_bytes() == direct


@pytest.mark.parametrize("shape", [(100, 12, 1000), (100, 12, 5000), (10, 1, 1000), (1000, 3, 250), (50, 7, 333)])
def test_every_slice_but_the_last_starts_on_a_direct_io_block(shape: tuple[int, int, int]) -> None:
    from ecgml.data.cache.rows import ALIGN

    rows = cache_module.chunk_rows(shape)
    assert rows >= 1 and (rows * shape[1] * shape[2] * 4) % ALIGN == 0


def test_workers_forked_after_a_serial_build_never_share_a_block(tree: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "_CHUNK", 4)  # 1024 samples x 12 leads fill whole blocks: 8 jobs
    dataset = read_ptbxl(tree, fs=500, task="all")
    pre = Preprocessing(fs=128, seconds=8)
    serial = build_cache(dataset, pre, tmp_path / "a", progress=False)
    parallel = build_cache(dataset, pre, tmp_path / "b", progress=False, workers=2)
    np.testing.assert_array_equal(np.asarray(parallel.signals), np.asarray(serial.signals))
