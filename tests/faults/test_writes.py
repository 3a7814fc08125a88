"""A full disk, a file-size limit or a permission error while writing a cache, a checkpoint or weights:
the previous good file stays intact (atomic writes), nothing half-written is left, and the error names the
path. Two processes building the same cache: one builds, the other says it waits and reuses it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgml import io as ecgml_io
from ecgml.data.cache import cache as cache_module
from ecgml.data.cache.cache import Cache, build_cache
from ecgml.data.signal import Preprocessing
from ecgml.data.sources.ptbxl import read_ptbxl
from ecgml.models import create_backbone
from ecgml.tracking.weights import WeightMetadata, load_model, save_weights
from ecgml.train.checkpoint import load_checkpoint, save_checkpoint
from tests.data.trees import write_tiny_ptbxl


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tiny_ptbxl(tmp_path / "ptbxl", n=30)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _visible(folder: Path) -> list[str]:
    """Entries a user or a reader would take for results (not lock files, not half-builds)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".building")))


# -- the signal cache ---------------------------------------------------------------------------------------------


def test_disk_full_while_writing_signals_keeps_the_previous_cache(tree: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = read_ptbxl(tree, fs=100)
    good = build_cache(dataset, Preprocessing(fs=100), tmp_path / "c", progress=False)
    snapshot = _digests(good.path)
    real_pwrite = os.pwrite

    def half_then_full(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, bytes(data)[: len(data) // 2], offset)  # the disk fills half-way through the slice
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_module.os, "pwrite", half_then_full)
    with pytest.raises(OSError, match=r"cannot write .*/\.ptbxl-100hz-12leads-\w+\.\w+\.building/signals\.f32: "
                                      "No space left on device") as info:
        build_cache(dataset, Preprocessing(fs=100, seconds=5), tmp_path / "c", progress=False)
    assert info.value.errno == errno.ENOSPC
    assert _visible(tmp_path / "c") == [good.path.name] and not _leftovers(tmp_path / "c")
    assert _digests(good.path) == snapshot
    monkeypatch.undo()
    again = build_cache(dataset, Preprocessing(fs=100, seconds=5), tmp_path / "c", progress=False)  # space is back
    assert again.signals.shape == (30, 12, 500)


def test_disk_full_while_writing_the_records_table(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    """pandas says "No space left on device" without a path; the cache names the file."""
    dataset = read_ptbxl(tree, fs=100)

    def full(self: object, path: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_module.pd.DataFrame, "to_csv", full)
    with pytest.raises(OSError, match=r"cannot write .*\.building/records\.csv: No space left on device"):
        build_cache(dataset, Preprocessing(fs=100), tmp_path / "c", progress=False)
    assert _visible(tmp_path / "c") == [] and not _leftovers(tmp_path / "c")


def test_permission_denied_when_publishing_the_cache(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    """The rename into place is refused (a read-only folder; chmod does not stop root, so it is simulated)."""
    dataset = read_ptbxl(tree, fs=100)
    good = build_cache(dataset, Preprocessing(fs=100), tmp_path / "c", progress=False)
    snapshot = _digests(good.path)

    real_replace = os.replace

    def refuse(src: str, dst: str) -> None:  # only the final rename into the cache folder is refused
        if Path(dst).parent != tmp_path / "c":
            return real_replace(src, dst)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError, match=r"cannot write .*/c/ptbxl-50hz-12leads-\w+: Permission denied"):
        build_cache(dataset, Preprocessing(fs=50), tmp_path / "c", progress=False)
    assert _visible(tmp_path / "c") == [good.path.name] and not _leftovers(tmp_path / "c")
    assert _digests(good.path) == snapshot


_CONCURRENT = textwrap.dedent("""
    import json, sys, time
    from ecgml.data.cache import cache
    from ecgml.data.sources.ptbxl import read_ptbxl
    from ecgml.data.signal import Preprocessing
    slow = cache._load_rows
    def crawl(job):
        time.sleep(4)  # long enough for the other process to arrive while this one builds
        return slow(job)
    cache._load_rows = crawl
    built = cache.build_cache(read_ptbxl(sys.argv[1], fs=100), Preprocessing(fs=100), sys.argv[2], progress=False)
    print(json.dumps([str(built.path), built.manifest["created"]]))
""")


def test_two_processes_building_the_same_cache_one_builds_the_other_waits(tree: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(tree), str(tmp_path / "c")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    (path_a, created_a), (path_b, created_b) = (json.loads(out) for out, _ in results)
    assert path_a == path_b and created_a == created_b  # one build, reused by the other
    waited = [err for _, err in results if "waiting for another process to finish building the cache" in err]
    assert len(waited) == 1 and path_a in waited[0]
    assert _visible(tmp_path / "c") == [Path(path_a).name] and not _leftovers(tmp_path / "c")
    cache = Cache(Path(path_a))  # whole: sizes agree with the manifest, values equal a fresh read
    row = cache.rows(["7"])[0]
    np.testing.assert_allclose(cache.signals[row], read_ptbxl(tree, fs=100).load_signal("7"), atol=1e-6)


# -- checkpoints and weights --------------------------------------------------------------------------------------


def _state(epoch: int) -> dict[str, object]:
    return {"epoch": epoch, "model": {"w": torch.full((64, 64), float(epoch))}, "history": [{"epoch": epoch}]}


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, _state(3))
    real_save = torch.save

    def full_disk(obj: object, handle: object, *args: object, **kwargs: object) -> None:
        handle.write(b"PK\x03\x04" + b"\0" * 4096)  # type: ignore[attr-defined]  # part of the zip got out
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=rf"cannot write {path}: No space left on device"):
        save_checkpoint(path, _state(4))
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 3  # the previous checkpoint, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]  # no temp file left


def test_permission_denied_while_replacing_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(1))

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(ecgml_io.os, "replace", refuse)
    with pytest.raises(PermissionError, match=rf"cannot write {path}: Permission denied"):
        save_checkpoint(path, _state(2))
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


_UNPRIVILEGED = 65534  # "nobody": root ignores directory permissions, so as root the write runs as nobody


def _save_as_unprivileged(path: Path, state: dict[str, object]) -> str:
    """``save_checkpoint`` in a forked child that dropped root (if it had it); the error text it met, or ''."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no exec needed (the venv's python may not be reachable for nobody)
        os.close(read_end)
        message = ""
        try:
            if os.geteuid() == 0:
                os.setgid(_UNPRIVILEGED)
                os.setuid(_UNPRIVILEGED)
            save_checkpoint(path, state)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(write_end, message.encode() or b"-")
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        answer = reader.read().decode()
    os.waitpid(pid, 0)
    return "" if answer == "-" else answer


def test_read_only_folder_refuses_a_checkpoint() -> None:
    # A folder every user can reach (pytest's own tmp root is private to its owner), made read-only.
    base = Path(tempfile.mkdtemp(prefix="ecgml-ro-", dir="/tmp"))
    base.chmod(0o755)
    path = base / "ro" / "checkpoint.pt"
    save_checkpoint(path, _state(1))
    path.chmod(0o644)
    path.parent.chmod(0o555)
    try:
        error = _save_as_unprivileged(path, _state(2))
        assert error.startswith("PermissionError") and f"cannot write {path}: Permission denied" in error, error
    finally:
        path.parent.chmod(0o700)
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]
    shutil.rmtree(base)


def test_disk_full_while_saving_weights_keeps_the_previous_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    model = create_backbone("xresnet1d18", in_channels=3, num_classes=2, width=0.25).eval()
    meta = WeightMetadata(backbone="xresnet1d18", backbone_kwargs=model.constructor["kwargs"], num_classes=2, fs=100,
                          input_samples=250, leads=("I", "II", "V2"), classes=("A", "B"), norm_mean=(0.0,) * 3,
                          norm_std=(1.0,) * 3, source="ptbxl", dataset_version="x", cache_digest="c",
                          task="superdiagnostic", label_map="challenge")
    save_weights(tmp_path / "w", model, meta)
    snapshot = _digests(tmp_path / "w")

    def full_disk(obj: object, handle: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"cannot write .*/w/state_dict\.pt: No space left on device"):
        save_weights(tmp_path / "w", create_backbone("xresnet1d18", in_channels=3, num_classes=2, width=0.25), meta)
    monkeypatch.undo()
    assert _digests(tmp_path / "w") == snapshot
    load_model(tmp_path / "w")


_LIMITED = textwrap.dedent("""
    import resource, signal, sys, torch
    from ecgml.data.cache.cache import build_cache
    from ecgml.data.sources.ptbxl import read_ptbxl
    from ecgml.data.signal import Preprocessing
    from ecgml.train.checkpoint import load_checkpoint, save_checkpoint
    out = sys.argv[1]
    save_checkpoint(out + "/checkpoint.pt", {"epoch": 1, "w": torch.zeros(1000)})  # ~5 kB: fits
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    try:
        save_checkpoint(out + "/checkpoint.pt", {"epoch": 2, "w": torch.zeros(500_000)})  # ~2 MB: does not
    except OSError as exc:
        print("checkpoint:", exc)
    print("still:", load_checkpoint(out + "/checkpoint.pt")["epoch"])
    try:
        build_cache(read_ptbxl(sys.argv[2], fs=100), Preprocessing(fs=100), out + "/cache", progress=False)
    except OSError as exc:
        print("cache:", exc)
""")


def test_a_real_write_failure_from_the_kernel(tree: Path, tmp_path: Path) -> None:
    """Not a simulation: the kernel refuses writes past RLIMIT_FSIZE (EFBIG), as a full disk refuses them."""
    done = subprocess.run([sys.executable, "-c", _LIMITED, str(tmp_path), str(tree)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert f"checkpoint: [Errno {errno.EFBIG}] cannot write {tmp_path}/checkpoint.pt: File too large" in lines
    assert "still: 1" in lines
    assert any(line.startswith(f"cache: [Errno {errno.EFBIG}] cannot write ") and line.endswith(
        "/signals.f32: File too large") for line in lines), lines
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "ptbxl") == ["cache", "checkpoint.pt"]
    assert _visible(tmp_path / "cache") == [] and not _leftovers(tmp_path)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umask_mode_and_replacements_keep_theirs(tmp_path: Path, umask: int, expected: int) -> None:
    """mkstemp makes 0600 files: published as they are, a teammate or a serving account could not read them."""
    previous = os.umask(umask)
    try:
        ecgml_io.atomic_write_text(tmp_path / "new.txt", "a")
        ecgml_io.atomic_write_stream(tmp_path / "new.pt", lambda h: torch.save({"x": 1}, h))
        with ecgml_io.atomic_path(tmp_path / "table.csv") as tmp:
            tmp.write_text("a,b\n")
        for name in ("new.txt", "new.pt", "table.csv"):
            assert _mode(tmp_path / name) == expected, name
        kept = tmp_path / "kept.csv"
        kept.write_text("old")
        kept.chmod(0o640)
        ecgml_io.atomic_write_text(kept, "new")
        assert _mode(kept) == 0o640 and kept.read_text() == "new"
        assert ecgml_io.current_umask() == umask  # read, not changed
        assert os.umask(umask) == umask
    finally:
        os.umask(previous)


def test_a_cache_built_under_umask_022_is_readable_by_everyone(tree: Path, tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        cache = build_cache(read_ptbxl(tree, fs=100), Preprocessing(fs=100), tmp_path / "c", progress=False)
    finally:
        os.umask(previous)
    assert _mode(cache.path) == 0o755
    modes = {p.name: _mode(p) for p in cache.path.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_scratch_folders_are_removed_when_the_process_exits(tmp_path: Path) -> None:
    """Weight downloads and report figures used to stay in /tmp after every command."""
    code = ("import sys; from ecgml.io import process_scratch_dir; d = process_scratch_dir('ecgml-test-'); "
            "(d / 'x').write_text('1'); print(d)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    folder = Path(done.stdout.strip())
    assert done.returncode == 0 and folder.name.startswith("ecgml-test-") and not folder.exists()
