"""Versioned, resumable, verified downloads of the datasets ecgml trains on.

Why this package exists: a training result is only reproducible when the bytes under it are known. Each
source is pinned to one published release; the archive is fetched with HTTP Range resumption
(multi-GB archives over flaky links), checked against the checksum its publisher printed *before* it is
used, unpacked without trusting member names, verified file by file where a ``SHA256SUMS.txt`` is
published, and renamed into place only when complete. A ``DOWNLOAD.json`` receipt in the dataset root
records what was fetched (and is how :func:`ecgml.data.sources.common.read_version` names the release).

One module per job: :mod:`.catalogue` (what each release is: URLs, checksums, layout, licence),
:mod:`.fetch` (the resumable, checksum-verified fetch), :mod:`.unpack` (the safe unpack),
:mod:`.verify` (file-by-file checks against ``SHA256SUMS.txt``), :mod:`.orchestrate` (the steps in order,
under a lock, ending in the receipt) and :mod:`.base` (the errors they share). The public names are
re-exported here.
"""

from __future__ import annotations

from ecgml.data.download.base import (
    ChecksumError,
    DamagedArchiveError,
    DownloadError,
    NotEnoughSpaceError,
    UnknownDatasetError,
    UnsafeArchiveError,
)
from ecgml.data.download.catalogue import RECEIPT_NAME, SOURCES, SUMS_NAME, Source, get_source
from ecgml.data.download.orchestrate import download_dataset, read_receipt
from ecgml.data.download.verify import verify_tree

__all__ = [
    "RECEIPT_NAME",
    "SOURCES",
    "SUMS_NAME",
    "ChecksumError",
    "DamagedArchiveError",
    "DownloadError",
    "NotEnoughSpaceError",
    "Source",
    "UnknownDatasetError",
    "UnsafeArchiveError",
    "download_dataset",
    "get_source",
    "read_receipt",
    "verify_tree",
]
