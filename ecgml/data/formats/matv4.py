"""MATLAB v4 (Level 1.0) matrices: how the PhysioNet/CinC Challenge stores its ``.mat`` signals."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgml.data.formats.errors import DataFormatError
from ecgml.data.formats.files import require_regular_file
from ecgml.io import atomic_write_bytes


@dataclass(frozen=True)
class MatV4:
    """One matrix read from a MATLAB v4 file."""

    name: str
    data: np.ndarray  # shape (mrows, ncols), as MATLAB sees it


_MAT_DTYPES = {0: "f8", 1: "f4", 2: "i4", 3: "i2", 4: "u2", 5: "u1"}


def read_matv4(path: str | os.PathLike[str]) -> MatV4:
    """Read the first matrix of a MATLAB v4 (Level 1.0) file, as the Challenge ``.mat`` files are (a FIFO or
    device is refused unopened)."""
    require_regular_file(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, "signal file not found") from None
    if len(raw) < 20:
        raise DataFormatError(path, f"truncated: {len(raw)} bytes, shorter than a MATLAB v4 header")
    mopt = struct.unpack("<i", raw[:4])[0]
    endian = "<"
    if not 0 <= mopt < 5000:
        mopt = struct.unpack(">i", raw[:4])[0]
        endian = ">"
    m, o, p, t = mopt // 1000, (mopt // 100) % 10, (mopt // 10) % 10, mopt % 10
    if m not in (0, 1) or o != 0 or t != 0 or p not in _MAT_DTYPES:
        raise DataFormatError(path, f"not a numeric MATLAB v4 matrix (type code {mopt})")
    mrows, ncols, imagf, namlen = struct.unpack(f"{endian}4i", raw[4:20])
    if mrows < 0 or ncols < 0 or namlen <= 0 or imagf not in (0, 1):
        raise DataFormatError(path, "corrupt MATLAB v4 header")
    name = raw[20:20 + namlen].split(b"\0", 1)[0].decode("latin-1")
    dtype = np.dtype(_MAT_DTYPES[p]).newbyteorder(endian)
    start = 20 + namlen
    needed = start + mrows * ncols * dtype.itemsize
    if len(raw) < needed:
        raise DataFormatError(
            path,
            f"truncated: matrix {name!r} of {mrows} x {ncols} needs {needed} bytes, file has {len(raw)}",
        )
    flat = np.frombuffer(raw, dtype=dtype, count=mrows * ncols, offset=start)
    return MatV4(name=name, data=flat.reshape(ncols, mrows).T)


def write_matv4(path: str | os.PathLike[str], name: str, matrix: np.ndarray) -> None:
    """Write one little-endian int16 or float64 matrix as a MATLAB v4 file, atomically."""
    matrix = np.asarray(matrix)
    p = {np.dtype("i2"): 3, np.dtype("f8"): 0}.get(matrix.dtype)
    if p is None:
        raise TypeError(f"MATLAB v4 writer takes int16 or float64, not {matrix.dtype}")
    bname = name.encode("latin-1") + b"\0"
    head = struct.pack("<5i", p * 10, matrix.shape[0], matrix.shape[1], 0, len(bname)) + bname
    body = matrix.astype(matrix.dtype.newbyteorder("<")).tobytes(order="F")
    atomic_write_bytes(path, head + body)
