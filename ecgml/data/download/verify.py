"""File-by-file verification of an unpacked tree against a published ``SHA256SUMS.txt``.

Why: PhysioNet publishes no checksum of its zips, only a sums file inside them; checking every file
against it catches corruption and truncation, and :func:`verify_tree` re-checks a tree later (a disk
error, a hand edit).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from ecgml.data.download.base import ChecksumError, DownloadError
from ecgml.data.download.catalogue import RECEIPT_NAME, SUMS_NAME, Source
from ecgml.data.download.unpack import unsafe_reason
from ecgml.io import atomic_write_text

log = logging.getLogger(__name__)

_MAX_REPORTED = 10
_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def verify_tree(root: str | os.PathLike[str], *, progress: bool = False) -> int:
    """Re-check every file of a tree against its ``SHA256SUMS.txt``; return how many were checked.

    For a later audit (a disk error, a hand edit): raises :class:`ChecksumError` naming the first
    mismatching or missing files.
    """
    root = Path(root)
    entries = _parse_sums(root / SUMS_NAME)
    count, _ = _verify_entries(root, entries, label=str(root), progress=progress)
    return count


def verify_published_sums(source: Source, project: Path, keep: Path, label: str,
                          progress: bool) -> tuple[int, list[str]]:
    """Check the kept tree against the sums file the archive carries; return (files checked, unlisted)."""
    sums_path = project / str(source.sums_file)
    if not sums_path.is_file():
        raise DownloadError(f"{label}: {source.name} publishes {source.sums_file} inside the archive, but "
                            f"{source.sums_file} is missing, so the files cannot be verified (the archive is "
                            "kept; --no-verify / verify=False unpacks it unverified)")
    entries = _parse_sums(sums_path)
    if source.subdir:
        prefix = source.subdir.strip("/") + "/"
        entries = {rel[len(prefix):]: digest for rel, digest in entries.items() if rel.startswith(prefix)}
        if not entries:
            raise ChecksumError(f"{label}: {source.sums_file} lists no file under {source.subdir}/")
    count, unlisted = _verify_entries(keep, entries, label=label, progress=progress)
    if source.subdir:  # leave a sums file describing exactly the kept tree, for verify_tree()
        atomic_write_text(keep / SUMS_NAME, "".join(f"{d}  {r}\n" for r, d in sorted(entries.items())))
    return count, unlisted


def _parse_sums(path: Path) -> dict[str, str]:
    """``relative path -> sha256`` from a ``sha256sum``-style file; malformed or unsafe lines raise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ChecksumError(f"{path}: cannot read the checksum list ({exc.strerror})") from None
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _SUMS_LINE.match(line.rstrip("\r"))
        if not match:
            raise ChecksumError(f"{path}: line {number} is not '<sha256>  <path>': {line[:120]!r}")
        rel = match[2]
        if unsafe_reason(rel):
            raise ChecksumError(f"{path}: line {number} names an unsafe path {rel!r}")
        entries[posixpath.normpath(rel)] = match[1].lower()
    if not entries:
        raise ChecksumError(f"{path}: the checksum list is empty")
    return entries


def _verify_entries(base: Path, entries: Mapping[str, str], *, label: str,
                    progress: bool) -> tuple[int, list[str]]:
    """Hash every listed file (threads: hashlib releases the GIL); raise naming the first problems."""

    def check(item: tuple[str, str]) -> str | None:
        rel, expected = item
        try:
            with open(base.joinpath(*rel.split("/")), "rb") as handle:
                actual = hashlib.file_digest(handle, "sha256").hexdigest()
        except FileNotFoundError:
            return f"{rel}: missing"
        except IsADirectoryError:
            return f"{rel}: is a folder, expected a file"
        return None if actual == expected else f"{rel}: expected sha256 {expected}, got {actual}"

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(check, entries.items()), total=len(entries), unit="file",
                            desc=f"verifying {Path(label).name}", disable=not progress))
    problems = [p for p in results if p]
    if problems:
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = f"\n  ... and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
        raise ChecksumError(f"{label}: {len(problems)} of {len(entries)} files fail {SUMS_NAME} "
                            f"verification:\n  {shown}{more}")
    listed = set(entries)
    unlisted = sorted(
        rel for rel in _walk_files(base)
        if rel not in listed and rel not in (SUMS_NAME, RECEIPT_NAME)
    )
    if unlisted:
        log.warning("%s: %d files are not listed in %s (kept, unverified), e.g. %s", label, len(unlisted),
                    SUMS_NAME, ", ".join(unlisted[:5]))
    return len(entries), unlisted


def _walk_files(base: Path) -> Iterator[str]:
    """Every file under ``base`` as a ``/``-separated relative path."""
    for folder, _dirs, files in os.walk(base):
        rel_folder = Path(folder).relative_to(base).as_posix()
        for file in files:
            yield file if rel_folder == "." else f"{rel_folder}/{file}"
