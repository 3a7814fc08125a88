"""What every step of a download shares: its errors, the copy chunk size and the free-space check.

The errors are :class:`OSError` subclasses so a caller that handles "the disk or the network failed" also
handles these; each message names the file or URL and the cause.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Bytes read or written at a time while downloading, hashing and unpacking.
CHUNK = 1 << 20


class DownloadError(OSError):
    """A download, verification or unpack failed; the message names the file or URL and the cause."""


class ChecksumError(DownloadError):
    """Bytes on disk differ from a published (or pinned) checksum; the bad file has been deleted."""


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the destination (absolute path, ``..``, outward link)."""


class DamagedArchiveError(DownloadError):
    """The archive cannot be read (truncated, corrupt); it has been deleted."""


class NotEnoughSpaceError(DownloadError):
    """The destination's file system has too little free space for the next step."""


class UnknownDatasetError(DownloadError, ValueError):
    """The dataset name is not in the registry; the message lists the names that are."""


def check_space(folder: Path, needed: int, what: str) -> None:
    """Refuse a step before it starts when ``folder``'s file system cannot hold ``needed`` more bytes."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise NotEnoughSpaceError(f"{folder}: {what} needs {needed / 1e9:.2f} GB more, only {free / 1e9:.2f} GB free")
