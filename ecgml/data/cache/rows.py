"""Loading one slice of records into cache rows: what each cache-build worker does.

Records whose files are plain (see :mod:`ecgml.data.cache.bulk`) are read in batches of one shape and checked,
converted and preprocessed together; every other record, and every record a batch check rejects, goes
through the per-record reader, which keeps its exact errors. The slice is written with one ``pwrite``:
faster than touching a fresh memory map page by page.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from ecgml.data.cache import bulk
from ecgml.data.formats import DataFormatError
from ecgml.data.leads import DuplicateLeadError, MissingLeadError
from ecgml.data.records import load_signal
from ecgml.data.signal import (
    PLAUSIBLE_LEAD_STD_MV,
    Preprocessing,
    RunningStats,
    flat_leads,
    implausible_amplitude,
    nan_to_zero,
    row_moments,
)

#: Records converted together: small enough for the batch to stay in the CPU cache.
BATCH = 32
#: Rows converted while the previous part is being written (rounded up to whole direct-I/O blocks).
PART_ROWS = 64
#: Direct I/O writes whole blocks of this many bytes, from memory and at file offsets aligned to it.
ALIGN = 4096
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
Facts = dict[str, object]


@dataclass(frozen=True)
class Job:
    """A slice of records one worker loads and writes straight into the signals file."""

    signals_path: str
    shape: tuple[int, int, int]
    start: int
    paths: tuple[str, ...]
    source_fs: tuple[float, ...]
    preprocessing: Preprocessing
    gain_corrections: tuple[tuple[float, float], ...]
    #: Which records of the slice belong to the training split (their statistics are accumulated).
    train: tuple[bool, ...]


class _Dropped(Exception):
    """A record the cache leaves out, with the kind ``ecgml data stats`` counts it under."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def load_rows(job: Job) -> tuple[list[Facts], RunningStats]:
    """Load, preprocess and write one slice; return per-record facts (or the kind and error that dropped
    each) and the per-lead statistics of its training records.

    The slice goes in parts: while a thread writes one part (the write waits on the disk, not the CPU),
    the next one is read and converted.
    """
    stats = RunningStats(len(job.preprocessing.leads))
    block = _buffer("block", (len(job.paths), job.shape[1], job.shape[2]), np.float32)
    facts: list[Facts] = []
    step = rows_per_aligned_step(job.shape[1] * job.shape[2] * 4)
    part_rows = max(1, -(-PART_ROWS // step)) * step
    with ThreadPoolExecutor(max_workers=1) as writer:
        writes = []
        for a in range(0, len(job.paths), part_rows):
            b = min(a + part_rows, len(job.paths))
            part = replace(job, start=job.start + a, paths=job.paths[a:b], source_fs=job.source_fs[a:b],
                           train=job.train[a:b])
            facts.extend(_load_part(part, block[a:b], stats))
            writes.append(writer.submit(_write_block, part, block[a:b]))
        for write in writes:
            write.result()
    return facts, stats


def _load_part(job: Job, block: np.ndarray, stats: RunningStats) -> list[Facts]:
    """Fill ``block`` with the job's rows: the bulk path first, then the per-record path for the rest."""
    facts: list[Facts | None] = [None] * len(job.paths)
    slow = _load_batches(job, block, facts, stats)
    for offset in slow:
        facts[offset] = _load_one(job, offset, block, stats)
    for offset, fact in enumerate(facts):
        if fact is not None and "error" in fact:
            block[offset] = 0.0  # not kept, but never another record's leftovers on disk either
    return [f for f in facts if f is not None]


def _load_one(job: Job, offset: int, block: np.ndarray, stats: RunningStats) -> Facts:
    """The per-record path: every check with its own message; the row is written into ``block``."""
    path, fs = job.paths[offset], job.source_fs[offset]
    leads = job.preprocessing.leads
    try:
        raw = load_signal(path, leads, gain_corrections=dict(job.gain_corrections))
        raw, nan_count = nan_to_zero(raw)
        flat = flat_leads(raw)
        if flat.all():
            raise _Dropped("flat_signal", f"{path}.hea: every lead is flat (no signal)")
        wrong = implausible_amplitude(raw, ~flat)
        if wrong:
            raise _Dropped("implausible_amplitude", f"{path}.hea: {wrong}")
        block[offset] = job.preprocessing.apply(raw, fs)
    except _Dropped as exc:
        return {"error": str(exc), "error_kind": exc.kind}
    except DuplicateLeadError as exc:
        return {"error": str(exc), "error_kind": "duplicate_lead"}
    except MissingLeadError as exc:
        return {"error": str(exc), "error_kind": "missing_lead"}
    except (DataFormatError, OSError) as exc:
        return {"error": str(exc), "error_kind": "unreadable_signal"}
    except ValueError as exc:  # preprocessing refused the signal (too short to filter, say)
        return {"error": f"{path}.hea: {exc}", "error_kind": "bad_signal"}
    n_valid = _n_valid(raw.shape[-1], fs, job.preprocessing)
    if job.train[offset]:
        stats.update(block[offset, :, :n_valid])
    return {"n_valid": n_valid, "nan_count": nan_count,
            "flat_leads": ",".join(name for name, f in zip(leads, flat, strict=True) if f)}


def _n_valid(n_source: int, fs: float, preprocessing: Preprocessing) -> int:
    return min(round(n_source * preprocessing.fs / fs), preprocessing.n_samples)


def _load_batches(job: Job, block: np.ndarray, facts: list[Facts | None], stats: RunningStats) -> list[int]:
    """Fill ``block`` and ``facts`` for every record the bulk path can take; return the others' offsets."""
    leads = job.preprocessing.leads
    groups: dict[tuple[object, ...], list[tuple[int, bulk.LeanHeader, tuple[int, ...]]]] = defaultdict(list)
    slow: list[int] = []
    for offset, path in enumerate(job.paths):
        text = bulk.read_header_text(f"{path}.hea")
        header = bulk.quick_header(text, path.rpartition("/")[0] or ".") if text else None
        rows = bulk.lead_rows(header.names, header.unit_scales, leads) if header else None
        if header is None or rows is None:
            slow.append(offset)
            continue
        key = (header.n_sig, header.n_samples, header.fs, job.source_fs[offset], rows)
        groups[key].append((offset, header, rows))
    for members in groups.values():
        for i in range(0, len(members), BATCH):
            slow.extend(_load_batch(job, members[i:i + BATCH], block, facts, stats))
    return sorted(slow)


def _load_batch(job: Job, members: list[tuple[int, bulk.LeanHeader, tuple[int, ...]]], block: np.ndarray,
                facts: list[Facts | None], stats: RunningStats) -> list[int]:
    """Read, check and convert records of one shape together; return the offsets left to the slow path.

    The samples land in buffers the process reuses; a batch of consecutive rows that preprocessing
    leaves as they are is converted straight into its rows of ``block``.
    """
    _, first, rows = members[0]
    offsets = np.array([m[0] for m in members])
    interleaved = _buffer("interleaved", (len(members), first.n_samples, first.n_sig), np.int16)
    ok = np.fromiter((bulk.read_samples_into(h, interleaved[i]) for i, (_, h, _) in enumerate(members)),
                     dtype=bool, count=len(members))
    digital = _buffer("digital", (len(members), first.n_sig, first.n_samples), np.int16)
    np.copyto(digital, interleaved.transpose(0, 2, 1))
    declared = np.array([h.checksums for _, h, _ in members], dtype=np.int64)
    ok &= bulk.checksums_match(digital, declared)
    slow: list[int] = []
    if not ok.all():
        slow = offsets[~ok].tolist()
        members = [m for m, good in zip(members, ok, strict=True) if good]
        if not members:
            return slow
        digital, offsets = digital[ok], offsets[ok]
    if rows != tuple(range(first.n_sig)):
        digital = digital[:, list(rows)]
    gains, baselines = _scales(members, rows, dict(job.gain_corrections))
    lowest, highest = digital.min(axis=-1), digital.max(axis=-1)
    pre, fs = job.preprocessing, job.source_fs[int(offsets[0])]
    in_place = pre.leaves_unchanged(fs, first.n_samples) and offsets[-1] - offsets[0] == len(offsets) - 1
    out = (block[offsets[0]:offsets[-1] + 1] if in_place
           else _buffer("millivolts", digital.shape, np.float32)[:len(offsets)])
    nan_counts = bulk.to_millivolts(digital, gains, baselines, out, lowest)
    flat = bulk.flat_from_extremes(lowest, highest, gains, baselines)
    for i in np.flatnonzero(nan_counts):  # no-sample values became 0 mV: the extremes no longer tell
        flat[i] = flat_leads(out[i])
    _check_and_store(job, offsets, out, nan_counts, flat, in_place, block, facts, stats)
    return slow


def _scales(members: list[tuple[int, bulk.LeanHeader, tuple[int, ...]]], rows: tuple[int, ...],
            corrections: dict[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Gains (mV per unit, corrected) and baselines of the batch's leads, ``[records or 1, leads]``: one
    row when every header shares them, as headers parsed from one template do."""
    first = members[0][1]
    if all(h.gains is first.gains and h.baselines is first.baselines and h.unit_scales is first.unit_scales
           for _, h, _ in members):
        headers = [first]
    else:
        headers = [h for _, h, _ in members]
    gains = np.array([[corrections.get(h.gains[r], h.gains[r]) * h.unit_scales[r] for r in rows]  # type: ignore[operator]
                      for h in headers], dtype=np.float32)
    baselines = np.array([[h.baselines[r] for r in rows] for h in headers], dtype=np.float32)
    return gains, baselines


def _check_and_store(job: Job, offsets: np.ndarray, raw: np.ndarray, nan_counts: np.ndarray, flat: np.ndarray,
                     in_place: bool, block: np.ndarray, facts: list[Facts | None], stats: RunningStats) -> None:
    """Flat, amplitude and length checks of a converted batch; kept rows go to ``block`` (where they are
    already when ``in_place``) and the stats."""
    pre, leads = job.preprocessing, job.preprocessing.leads
    fs = job.source_fs[int(offsets[0])]
    kept = ~flat.all(axis=1)
    mean, m2 = row_moments(raw, _buffer("squares", raw.shape, np.float32))
    for i in np.flatnonzero(~kept):
        facts[offsets[i]] = {"error": f"{job.paths[offsets[i]]}.hea: every lead is flat (no signal)",
                             "error_kind": "flat_signal"}
    for i in _amplitude_suspects(np.sqrt(m2 / raw.shape[-1]), flat, kept):
        wrong = implausible_amplitude(raw[i], ~flat[i])
        if wrong:
            kept[i] = False
            facts[offsets[i]] = {"error": f"{job.paths[offsets[i]]}.hea: {wrong}",
                                 "error_kind": "implausible_amplitude"}
    if not kept.any():
        return
    if not kept.all():
        raw, offsets, flat, nan_counts = raw[kept], offsets[kept], flat[kept], nan_counts[kept]
        mean, m2 = mean[kept], m2[kept]
    if in_place:
        rows = raw
    else:
        try:
            rows = pre.apply(raw, fs)
        except ValueError:  # the per-record path words it
            for offset in offsets:
                facts[offset] = _load_one(job, int(offset), block, stats)
            return
        block[offsets] = rows
    n_valid = _n_valid(raw.shape[-1], fs, pre)
    train = np.array([job.train[o] for o in offsets])
    if rows is not raw or n_valid != raw.shape[-1]:  # preprocessing changed the rows: their own moments
        mean, m2 = row_moments(rows[train, :, :n_valid]) if train.any() else (mean[:0], m2[:0])
    else:
        mean, m2 = mean[train], m2[train]
    stats.add_rows(n_valid, mean, m2)
    any_flat = flat.any(axis=1)
    for i, offset in enumerate(offsets):
        facts[offset] = {"n_valid": n_valid, "nan_count": int(nan_counts[i]),
                         "flat_leads": (",".join(name for name, f in zip(leads, flat[i], strict=True) if f)
                                        if any_flat[i] else "")}


def _amplitude_suspects(std: np.ndarray, flat: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Records whose typical lead std (median over moving leads) is near or beyond the plausible bounds;
    the caller checks each exactly, so this screen only has to be generous."""
    ordered = np.sort(np.where(flat, np.inf, std), axis=1)
    moving = np.maximum((~flat).sum(axis=1), 1)
    rows = np.arange(len(std))
    typical = (ordered[rows, (moving - 1) // 2] + ordered[rows, moving // 2]) / 2
    low, high = PLAUSIBLE_LEAD_STD_MV
    return np.flatnonzero(kept & ~((typical > low * 1.01) & (typical < high * 0.99)))


def rows_per_aligned_step(row_bytes: int) -> int:
    """The smallest number of rows whose bytes are a whole number of :data:`ALIGN` blocks: slices that
    start at a multiple of it can be written with direct I/O."""
    return ALIGN // math.gcd(row_bytes, ALIGN)


def _buffer(name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
    """A ``dtype[shape]`` buffer that the process keeps for its next call with the same name and trailing
    shape, its memory starting on a page (direct I/O needs that for the rows it writes).

    Fresh memory costs a page fault per 4 KiB on first touch, and on a virtual machine whose host reclaims
    freed pages, as much as the rest of the job: so every batch and every job of a process reuses the same
    memory. A caller is done with a buffer before it asks for it again, and reads nothing it did not
    write: every row of the block is overwritten by its job or belongs to a dropped record.
    """
    key = (os.getpid(), name, shape[1:], np.dtype(dtype).str)  # a forked worker never uses its parent's
    buffer = _BUFFERS.get(key)
    if buffer is None or len(buffer) < shape[0]:
        if len(_BUFFERS) >= 32:  # a tree of many record lengths: keep the memory bounded
            _BUFFERS.clear()
        rows = max(shape[0], BATCH)
        count = rows * math.prod(shape[1:])
        # Private, not mmap's default shared mapping: after a fork, two workers must not share the pages.
        memory = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1),
                           flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buffer = _BUFFERS[key] = np.frombuffer(memory, dtype=dtype, count=count).reshape(rows, *shape[1:])
    return buffer[:shape[0]]


_BUFFERS: dict[tuple[object, ...], np.ndarray] = {}


def _write_block(job: Job, block: np.ndarray) -> None:
    """Write the slice at its rows of the signals file: the whole blocks with direct I/O, the rest (the
    file's last partial block, or everything where direct I/O is refused) through the page cache.

    Direct I/O sends the bytes to the disk once, with no copy into page-cache memory: on a virtual
    machine whose fresh memory is slow to touch, that copy is most of the build time (see
    ``benchmarks/cache_vs_wfdb.py``). The bytes are the same either way.
    """
    row_bytes = job.shape[1] * job.shape[2] * 4
    start = job.start * row_bytes
    view = memoryview(block).cast("B")
    aligned = len(view) // ALIGN * ALIGN if start % ALIGN == 0 and _address(block) % ALIGN == 0 else 0
    try:
        if aligned and not _write_direct(job.signals_path, view[:aligned], start):
            aligned = 0
        _pwrite_all(job.signals_path, view[aligned:], start + aligned, 0)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {job.signals_path}: {exc.strerror}") from exc


def _address(block: np.ndarray) -> int:
    return int(block.__array_interface__["data"][0])


def _write_direct(path: str, view: memoryview, offset: int) -> bool:
    """Write ``view`` at ``offset`` bypassing the page cache; False where the file system refuses."""
    if not _O_DIRECT:
        return False
    try:
        _pwrite_all(path, view, offset, _O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # no direct I/O here (tmpfs, say) or a stricter alignment
            return False
        raise
    return True


def _pwrite_all(path: str, view: memoryview, offset: int, flags: int) -> None:
    if not len(view):
        return
    fd = os.open(path, os.O_WRONLY | flags)
    try:
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + written)
    finally:
        os.close(fd)
