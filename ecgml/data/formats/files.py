"""Refuse anything but a regular file before a reader opens it.

Why before: ``open()`` of a FIFO (a named pipe) for reading blocks until some process writes to it, so a
FIFO named ``x.dat`` would hang ``ecgml predict`` or a cache build forever; a character device such as
``/dev/zero`` behind a symlink never ends. ``os.stat`` follows symlinks and never blocks, so a link to a
regular file still reads and everything else is refused by name, unopened.
"""

from __future__ import annotations

import os
import stat

from ecgml.data.formats.errors import DataFormatError

_KINDS: tuple[tuple[object, str], ...] = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words (``"a named pipe (FIFO)"``); ``"a regular file"`` for one."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")  # type: ignore[operator]


def require_regular_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`DataFormatError` naming ``path`` when it exists and is not a regular file (after
    symlinks). A missing or unreadable path passes: the caller's ``open`` reports it in its own words."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise DataFormatError(path, f"is {file_kind(mode)}, not a regular file; refused without opening it")
