"""Many records read at once: the cache build's fast path, near the cost of reading the bytes.

Per record, only what has to be per record stays in Python: one read of the header, a lean parse of the
fields the cache needs (each distinct signal line's format and gain is parsed once and remembered), and
one ``preadv`` of the samples straight into a slot of a batch buffer. Checksums, the conversion to
millivolts, NaN, flat-lead and amplitude checks and the training-split sums then run on the whole batch.

Anything the lean path does not recognise (another format, a header with odd lines, a checksum mismatch,
a missing lead, an unknown unit, a size that disagrees with the header) is not handled here: the caller
gives that record to the per-record reader, which raises the precise error it always raised. So values
and errors are those of :func:`ecgml.data.records.load_signal`; tests compare both with ``wfdb.rdsamp``.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ecgml.data.formats.wfdb import FORMAT_FIELD_RE, GAIN_FIELD_RE, INT16_NAN, UNIT_SCALE
from ecgml.data.leads import MissingLeadError, canonical_lead_name, lead_index
from ecgml.data.signal import FLAT_TOLERANCE_MV, flat_leads


class LeanHeader(NamedTuple):
    """What the bulk path needs of one WFDB header (all signals, in file order)."""

    n_sig: int
    fs: float
    n_samples: int
    data_path: str
    byte_offset: int
    gains: tuple[float, ...]
    baselines: tuple[int, ...]
    unit_scales: tuple[float | None, ...]
    checksums: tuple[int, ...]
    names: tuple[str, ...]


class _SignalShape(NamedTuple):
    """The parsed, record-independent part of one signal line (format, gain, units, name)."""

    byte_offset: int
    gain: float
    baseline: int
    unit_scale: float | None
    name: str


_SHAPES: dict[tuple[str, ...], _SignalShape | None] = {}


def _signal_shape(parts: Sequence[str]) -> _SignalShape | None:
    """Parse the fields of a signal line that repeat across records; None where the lean path gives up."""
    key = (parts[1], parts[2], parts[3], parts[4], parts[7], parts[8])
    shape = _SHAPES.get(key, _SHAPES)
    if shape is _SHAPES:
        shape = _parse_shape(parts)
        if len(_SHAPES) < 100_000:  # a tree with a fresh gain on every line must not grow this without end
            _SHAPES[key] = shape
    return shape  # type: ignore[return-value]


def _parse_shape(parts: Sequence[str]) -> _SignalShape | None:
    fmt_text, gain_text = parts[1], parts[2]
    if fmt_text == "16":
        offset = 0
    else:
        m = FORMAT_FIELD_RE.match(fmt_text)
        if not m or m["fmt"] != "16" or int(m["spf"] or 1) != 1 or m["skew"] is not None:
            return None
        offset = int(m["off"] or 0)
    g = GAIN_FIELD_RE.match(gain_text)
    if not g:
        return None
    try:
        int(parts[3]), int(parts[7])
        adc_zero = int(parts[4])
        gain = float(g["gain"]) or 200.0
    except ValueError:
        return None
    if not (np.isfinite(gain) and gain > 0):
        return None
    baseline = int(g["base"]) if g["base"] is not None else adc_zero
    return _SignalShape(offset, gain, baseline, UNIT_SCALE.get(g["units"] or "mV"), canonical_lead_name(parts[8]))


def lean_header(text: str, folder: str) -> LeanHeader | None:
    """The fields of a plain single-file format-16 header, or None for anything else."""
    lines = text.splitlines()
    head = lines[0].split() if lines else []
    if len(head) < 4 or "/" in head[0] or head[0].startswith("#"):
        return None
    try:
        n_sig, fs, n_samples = int(head[1]), float(head[2].split("/")[0]), int(head[3])
    except ValueError:
        return None
    if n_sig <= 0 or not fs > 0 or n_samples <= 0 or len(lines) <= n_sig:
        return None
    if any(ln.strip() and not ln.lstrip().startswith("#") for ln in lines[n_sig + 1:]):
        return None
    shapes: list[_SignalShape] = []
    checksums: list[int] = []
    file_name = ""
    for line in lines[1:n_sig + 1]:
        parts = line.split()
        if len(parts) != 9 or (file_name and parts[0] != file_name):
            return None
        file_name = parts[0]
        shape = _signal_shape(parts)
        if shape is None:
            return None
        try:
            int(parts[5])
            checksums.append(int(parts[6]))
        except ValueError:
            return None
        shapes.append(shape)
    first = shapes[0]
    if os.path.basename(file_name) != file_name or file_name in (".", "..") or any(
            s.byte_offset != first.byte_offset for s in shapes):
        return None
    return LeanHeader(
        n_sig, fs, n_samples, os.path.join(folder, file_name), first.byte_offset,
        tuple(s.gain for s in shapes), tuple(s.baseline for s in shapes),
        tuple(s.unit_scale for s in shapes), tuple(checksums), tuple(s.name for s in shapes),
    )


#: Characters ``str.splitlines`` breaks at besides ``\n``: a comment holding one is left to the lean parse.
_LINE_BREAKS = "\\r\\x0b\\x0c\\x1c\\x1d\\x1e\\x85\\u2028\\u2029"
_TAIL = rf"(?:\n[ \t]*(?:#[^\n{_LINE_BREAKS}]*)?)*"


class _Template(NamedTuple):
    """A header seen before, as a pattern whose only free fields are the record's own: its name, its
    signal file, and each signal's initial value and checksum."""

    pattern: re.Pattern[str]
    header: LeanHeader


_TEMPLATES: list[_Template] = []


def quick_header(text: str, folder: str) -> LeanHeader | None:
    """:func:`lean_header`, faster for a header that differs from one already parsed only in the record's
    own fields (PTB-XL's and the Challenge's headers all do): one match of a pattern instead of a parse.

    A match means the text has exactly the template's lines and single spaces, so every field it does not
    capture is the template's, and the lean parse would give the same answer; anything else is parsed.
    """
    for template in _TEMPLATES:
        m = template.pattern.fullmatch(text)
        if m is not None:
            file_name = m[2]
            if "/" in file_name or file_name in (".", ".."):
                return None
            groups = m.groups()
            return template.header._replace(data_path=os.path.join(folder, file_name),
                                            checksums=tuple(map(int, groups[3::2])))
    header = lean_header(text, folder)
    if header is not None and len(_TEMPLATES) < 16:
        pattern = _template_pattern(text, header.n_sig)
        if pattern is not None:
            _TEMPLATES.append(_Template(pattern, header))
    return header


def _template_pattern(text: str, n_sig: int) -> re.Pattern[str] | None:
    """The pattern of headers like ``text`` (which the lean parse accepted), or None if its layout is not
    plain (extra spaces, other line breaks): such headers keep the lean parse."""
    lines = text.split("\n")
    head = lines[0].split(" ")
    if len(head) < 4 or "" in head:
        return None
    parts = [r"([^\s/#][^\s/]*) " + re.escape(" ".join(head[1:4])) + r"(?: \S+)*"]
    for i, line in enumerate(lines[1:n_sig + 1]):
        f = line.split(" ")
        if len(f) != 9 or "" in f:
            return None
        fixed = [re.escape(x) for x in f]
        parts.append(" ".join([r"(\S+)" if i == 0 else r"\2", *fixed[1:5], r"(-?[0-9]+)", r"(-?[0-9]+)",
                               *fixed[7:9]]))
    return re.compile("\n".join(parts) + _TAIL)


def read_header_text(path: str) -> str | None:
    """The text of a ``.hea`` file, or None when it cannot be read (the per-record reader says why).

    A read shorter than asked for is the end of a regular file, so a header (a few hundred bytes) costs
    one read, not a second one that returns nothing. Were a read ever cut short anyway, the lean parse
    would refuse the truncated text or see fewer signal lines than the header declares, and the record
    would go to the per-record reader, which reads the file whole.
    """
    try:  # O_NONBLOCK: a FIFO named .hea opens at once and reads empty (the per-record reader refuses it)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        chunk = os.read(fd, _HEADER_READ)
        chunks = [chunk]
        while len(chunk) == _HEADER_READ:
            chunk = os.read(fd, _HEADER_READ)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("latin-1")


_HEADER_READ = 65536
_MAT_HEAD = struct.Struct("<5i")


def read_samples_into(header: LeanHeader, out: np.ndarray) -> bool:
    """Read the record's ``int16[n_samples, n_sig]`` samples into ``out``; False if its file is not
    exactly what the header promises (the per-record reader then names the problem)."""
    want = header.n_samples * header.n_sig * 2
    try:  # O_NONBLOCK: a FIFO opens at once, its size is 0, and the per-record reader refuses it by name
        fd = os.open(header.data_path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if header.data_path.endswith(".mat"):
            start = _mat_data_offset(fd, header, size)
            if start is None:
                return False
        else:
            start = header.byte_offset
            if size != start + want:
                return False
        view = memoryview(out).cast("B")
        done = 0
        while done < want:
            got = os.preadv(fd, [view[done:]], start + done)
            if got <= 0:
                return False
            done += got
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _mat_data_offset(fd: int, header: LeanHeader, size: int) -> int | None:
    """Where the samples of a little-endian int16 MATLAB v4 matrix of the header's shape start."""
    preamble = os.pread(fd, 20, 0)
    if len(preamble) < 20:
        return None
    mopt, mrows, ncols, imagf, namlen = _MAT_HEAD.unpack(preamble)
    if mopt != 30 or imagf != 0 or namlen <= 0 or (mrows, ncols) != (header.n_sig, header.n_samples):
        return None
    start = 20 + namlen
    return start if size >= start + header.n_samples * header.n_sig * 2 else None


_LEAD_ROWS: dict[tuple[tuple[str, ...], tuple[float | None, ...], tuple[str, ...]], tuple[int, ...] | None] = {}


def lead_rows(names: tuple[str, ...], unit_scales: tuple[float | None, ...],
              wanted: tuple[str, ...]) -> tuple[int, ...] | None:
    """Rows of ``wanted`` among a header's lead names, or None when one is missing or has a unit the lean
    path does not know (remembered per header layout: the headers of one tree share a few)."""
    key = (names, unit_scales, wanted)
    if key not in _LEAD_ROWS:
        try:
            rows: tuple[int, ...] | None = tuple(lead_index(names, wanted, "<bulk>"))
        except MissingLeadError:
            rows = None
        if rows is not None and any(unit_scales[r] is None for r in rows):
            rows = None
        _LEAD_ROWS[key] = rows
    return _LEAD_ROWS[key]


def checksums_match(digital: np.ndarray, declared: np.ndarray) -> np.ndarray:
    """Per record of ``int16[records, leads, samples]``: whether every lead's WFDB checksum agrees.

    A WFDB checksum is the sum of the samples modulo 2**16, so the sum runs in wrapping 16-bit integers,
    several times faster than an exact 64-bit sum and equal to it modulo 2**16.
    """
    total = digital.view(np.uint16).sum(axis=-1, dtype=np.uint16)
    return (total == (declared % 65536).astype(np.uint16)).all(axis=-1)


def to_millivolts(digital: np.ndarray, gains: np.ndarray, baselines: np.ndarray, out: np.ndarray,
                  lowest: np.ndarray | None = None) -> np.ndarray:
    """``int16[records, leads, samples]`` -> float32 mV into ``out``, as :func:`to_physical` computes it
    (``(d - baseline) / gain`` in float32), with WFDB's no-sample value as 0; returns NaN counts.

    ``gains`` and ``baselines`` are ``[records or 1, leads]``; ``lowest``, each lead's smallest sample if
    the caller has it, spares a pass to find the records that have no-sample values at all.
    """
    np.copyto(out, digital, casting="unsafe")
    if baselines.any():
        out -= baselines[:, :, None]
    out /= gains[:, :, None]
    counts = np.zeros(len(digital), dtype=np.int64)
    if lowest is None:
        lowest = digital.min(axis=-1)
    for i in np.flatnonzero((lowest == INT16_NAN).any(axis=-1)):
        missing = digital[i] == INT16_NAN
        out[i][missing] = 0.0
        counts[i] = int(missing.sum())
    return counts


def flat_from_extremes(lowest: np.ndarray, highest: np.ndarray, gains: np.ndarray, baselines: np.ndarray,
                       tolerance_mv: float = FLAT_TOLERANCE_MV) -> np.ndarray:
    """:func:`~ecgml.data.signal.flat_leads` of the rows :func:`to_millivolts` writes, from each lead's
    smallest and largest digital sample (``[records, leads]``) instead of a pass over the millivolts.

    The extremes go through :func:`to_millivolts` itself: the conversion is monotone, so they come out as
    exactly the extremes of the converted lead and the range is the same number. It does not hold for a
    record with no-sample values (they become 0 mV): the caller checks those on the converted rows.
    """
    extremes = np.stack([lowest, highest], axis=-1)
    converted = np.empty(extremes.shape, dtype=np.float32)
    to_millivolts(extremes, gains, baselines, converted, lowest)
    return flat_leads(converted, tolerance_mv)
