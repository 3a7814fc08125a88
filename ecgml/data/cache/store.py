"""The caches in a cache folder: what each holds, when it was last used, and pruning the ones not needed.

Caches are large (PTB-XL at 100 Hz is about 1 GB, at 500 Hz five times that) and a new one appears for
every change of preprocessing or data, so users need to see and reclaim them. Last use is the time of a
``.last_used`` file that :class:`~ecgml.data.cache.cache.Cache` touches whenever it opens a cache. Pruning never
touches a cache whose build lock is held (one being built, or rebuilt, right now).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

LAST_USED = ".last_used"


def touch_last_used(folder: Path) -> None:
    """Record that ``folder``'s cache was opened now (best effort: a read-only cache is still usable)."""
    marker = folder / LAST_USED
    with suppress(OSError):
        marker.touch()


@dataclass(frozen=True)
class CacheInfo:
    """One complete cache folder as ``ecgml data cache list`` shows it."""

    path: Path
    dataset: str
    fs: int
    leads: int
    records: int
    size_bytes: int
    created: datetime | None
    last_used: datetime | None
    #: Label sets written beside it (``task--label_map``): which tasks have trained or evaluated on it.
    uses: tuple[str, ...]
    root: str

    @property
    def lock_path(self) -> Path:
        return self.path.parent / f".{self.path.name}.lock"


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _when(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def describe_cache(folder: Path) -> CacheInfo:
    """What the manifest says about one cache folder; a folder without a readable manifest is an error."""
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{manifest_path}: not a readable cache manifest ({exc})") from None
    inputs = manifest.get("inputs", {})
    preprocessing = inputs.get("preprocessing", {})
    marker = folder / LAST_USED
    last_used = (datetime.fromtimestamp(marker.stat().st_mtime, UTC) if marker.is_file() else None)
    labels = folder / "labels"
    uses = tuple(sorted(p.name for p in labels.iterdir() if p.is_dir())) if labels.is_dir() else ()
    return CacheInfo(
        path=folder, dataset=str(inputs.get("source", "?")), fs=int(preprocessing.get("fs", 0)),
        leads=len(preprocessing.get("leads", [])), records=int(manifest.get("shape", [0])[0]),
        size_bytes=_size(folder), created=_when(manifest.get("created")), last_used=last_used, uses=uses,
        root=str(manifest.get("dataset", {}).get("root", "")),
    )


def list_caches(cache_dir: Path) -> list[CacheInfo]:
    """Every complete cache under ``cache_dir`` (folders being built are hidden and not listed), oldest
    use first."""
    if not cache_dir.is_dir():
        return []
    infos = [describe_cache(p) for p in sorted(cache_dir.iterdir())
             if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()]
    never = datetime.min.replace(tzinfo=UTC)
    return sorted(infos, key=lambda i: (i.last_used or i.created or never, i.path.name))


def select_for_prune(infos: Sequence[CacheInfo], *, older_than: timedelta | None = None, unused: bool = False,
                     everything: bool = False, now: datetime | None = None) -> list[CacheInfo]:
    """The caches a prune would remove: all, those never opened since built, or those not used within
    ``older_than`` (a cache never opened counts from its creation)."""
    if not (everything or unused or older_than is not None):
        raise ValueError("say what to prune: --older-than DAYS, --unused or --all")
    now = now or datetime.now(UTC)
    chosen = []
    for info in infos:
        last = info.last_used or info.created
        if (everything or (unused and info.last_used is None)
                or (older_than is not None and (last is None or now - last > older_than))):
            chosen.append(info)
    return chosen


@contextmanager
def _unless_busy(lock_path: Path) -> Iterator[bool]:
    """Hold the build lock if it is free (yield True); yield False if a build holds it now."""
    try:
        handle = open(lock_path, "a+")  # noqa: SIM115 - closed below
    except OSError:
        yield True  # no lock can be taken in a read-only folder; nor can anything be building there
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_cache(info: CacheInfo) -> bool:
    """Delete one cache under its build lock; False (and nothing deleted) while a build holds the lock."""
    with _unless_busy(info.lock_path) as free:
        if not free:
            return False
        doomed = info.path.parent / f".{info.path.name}.deleting"
        os.replace(info.path, doomed)  # gone from view at once; a half-deleted folder never looks complete
        shutil.rmtree(doomed, ignore_errors=True)
    return True


def format_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def format_table(infos: Sequence[CacheInfo]) -> str:
    """The ``ecgml data cache list`` table: one line per cache, then the total size."""
    def day(when: datetime | None) -> str:
        return when.strftime("%Y-%m-%d %H:%M") if when else "never"

    lines = [f"{'cache':<40} {'dataset':<8} {'fs':>4} {'leads':>5} {'records':>7} {'size':>9} "
             f"{'created':<16} {'last used':<16} used by"]
    for i in infos:
        lines.append(f"{i.path.name:<40} {i.dataset:<8} {i.fs:>4} {i.leads:>5} {i.records:>7} "
                     f"{format_size(i.size_bytes):>9} {day(i.created):<16} {day(i.last_used):<16} "
                     f"{', '.join(i.uses) or '-'}")
    lines.append(f"{len(infos)} cache(s), {format_size(sum(i.size_bytes for i in infos))}")
    return "\n".join(lines)
