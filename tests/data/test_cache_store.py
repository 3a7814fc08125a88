"""``ecgml data cache list`` / ``prune``: what each cache is, its last use, and pruning that spares builds."""

from __future__ import annotations

import fcntl
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from ecgml.cli import main
from ecgml.data.cache.cache import Cache, build_cache
from ecgml.data.cache.store import LAST_USED, list_caches, remove_cache, select_for_prune
from ecgml.data.signal import Preprocessing
from ecgml.data.sources.ptbxl import read_ptbxl
from tests.data.trees import write_tiny_ptbxl


def _two_caches(tmp_path: Path) -> tuple[Path, Cache, Cache]:
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=12)
    folder = tmp_path / "cache"
    dataset = read_ptbxl(root, fs=100, task="superdiagnostic")
    old = build_cache(dataset, Preprocessing(fs=100), folder, progress=False)
    old.write_labels(dataset)
    new = build_cache(dataset, Preprocessing(fs=50, leads=("I", "II")), folder, progress=False)
    week_ago = time.time() - 7 * 86400
    os.utime(old.path / LAST_USED, (week_ago, week_ago))
    return folder, old, new


def test_list_says_what_each_cache_is_and_when_it_was_used(tmp_path: Path) -> None:
    folder, old, new = _two_caches(tmp_path)
    infos = list_caches(folder)
    assert [i.path for i in infos] == [old.path, new.path]  # least recently used first
    first, second = infos
    assert (first.dataset, first.fs, first.leads, first.records) == ("ptbxl", 100, 12, 12)
    assert (second.fs, second.leads) == (50, 2)
    assert first.size_bytes >= 12 * 12 * 1000 * 4 and first.uses == ("superdiagnostic--challenge",)
    assert second.uses == () and first.root.endswith("ptbxl")
    assert datetime.now(UTC) - first.last_used > timedelta(days=6)  # type: ignore[operator]
    Cache(old.path)  # opening it is a use
    assert datetime.now(UTC) - list_caches(folder)[-1].last_used < timedelta(minutes=5)  # type: ignore[operator]
    out = CliRunner().invoke(main, ["data", "cache", "list", "--cache-dir", str(folder)])
    assert out.exit_code == 0, out.output
    assert old.path.name in out.output and "superdiagnostic--challenge" in out.output
    assert "2 cache(s)" in out.output


def test_prune_is_a_dry_run_unless_told_yes(tmp_path: Path) -> None:
    folder, old, new = _two_caches(tmp_path)
    runner = CliRunner()
    dry = runner.invoke(main, ["data", "cache", "prune", "--older-than", "3", "--cache-dir", str(folder)])
    assert dry.exit_code == 0 and f"would remove {old.path}" in dry.output and str(new.path) not in dry.output
    assert old.path.is_dir()
    done = runner.invoke(main, ["data", "cache", "prune", "--older-than", "3", "--yes", "--cache-dir", str(folder)])
    assert done.exit_code == 0 and f"removed {old.path}" in done.output
    assert not old.path.exists() and new.path.is_dir()
    assert [p.name for p in folder.iterdir() if p.name.endswith(".deleting")] == []
    everything = runner.invoke(main, ["data", "cache", "prune", "--all", "--yes", "--cache-dir", str(folder)])
    assert everything.exit_code == 0 and not new.path.exists()


def test_prune_needs_a_criterion(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["data", "cache", "prune", "--cache-dir", str(tmp_path)])
    assert out.exit_code != 0 and "--older-than DAYS, --unused or --all" in out.output


def test_unused_means_never_opened_since_built(tmp_path: Path) -> None:
    folder, _, new = _two_caches(tmp_path)
    (new.path / LAST_USED).unlink()
    chosen = select_for_prune(list_caches(folder), unused=True)
    assert [c.path for c in chosen] == [new.path]
    later = datetime.now(UTC) + timedelta(days=30)
    assert len(select_for_prune(list_caches(folder), older_than=timedelta(days=10), now=later)) == 2


def test_a_cache_whose_build_lock_is_held_is_never_removed(tmp_path: Path) -> None:
    folder, old, _ = _two_caches(tmp_path)
    info = next(i for i in list_caches(folder) if i.path == old.path)
    with open(info.lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # as build_cache holds it while (re)building
        assert remove_cache(info) is False
        out = CliRunner().invoke(main, ["data", "cache", "prune", "--all", "--yes", "--cache-dir", str(folder)])
        assert f"kept {old.path}: it is being built right now" in out.output
    assert old.path.is_dir()
    np.testing.assert_array_equal(Cache(old.path).signals.shape, (12, 12, 1000))
    assert remove_cache(info) is True and not old.path.exists()
