"""The command-level orchestration of a download: one call from a catalogue name to a verified tree.

Why a module of its own: the order of the steps is the safety argument. Under a per-folder lock, a tree
whose receipt matches is returned untouched; otherwise the archive is fetched and checked
(:mod:`.fetch`), unpacked into a hidden work folder (:mod:`.unpack`), verified file by file
(:mod:`.verify`), given its ``DOWNLOAD.json`` receipt, and only then renamed into place.

Layout under ``dest``: ``<archive>.part`` while downloading (with ``<archive>.download.json`` holding
the server's validators for ``If-Range``), ``<archive>`` once complete and verified, a hidden
``.<folder>.unpack-*`` work folder while unpacking, and finally ``<folder>/`` (for instance
``ptbxl-1.0.3/``) with ``DOWNLOAD.json`` inside. The archive is deleted after a successful unpack unless
``keep_archive`` is set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ecgml.data.download.base import ChecksumError, DamagedArchiveError, DownloadError, UnsafeArchiveError
from ecgml.data.download.catalogue import HEX, RECEIPT_NAME, SUMS_NAME, Source, get_source
from ecgml.data.download.fetch import Fetched, join_url, meta_path_of, obtain_archive
from ecgml.data.download.unpack import Include, find_root, unpack
from ecgml.data.download.verify import verify_published_sums
from ecgml.io import atomic_write_json

log = logging.getLogger(__name__)


def download_dataset(
    name: str | Source,
    dest: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    verify: bool = True,
    unpack: bool = True,
    progress: bool = True,
    sha256: str | None = None,
    keep_archive: bool = False,
    retries: int = 5,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and unpack a dataset under ``dest``; return its root (the archive if not ``unpack``).

    ``name`` is a registry name (see :data:`SOURCES`) or a :class:`Source`. ``base_url`` replaces the
    publisher: the archive is fetched from ``<base_url>/<archive file name>`` (a mirror or a local
    server). ``verify=False`` skips every checksum (the receipt then says ``"verified": false`` and a
    later verified call does the work again). ``sha256`` pins the archive to a known digest, for
    sources that publish none. ``retries`` bounds consecutive failed attempts without progress; an
    attempt that received bytes resumes at once. A tree whose receipt matches is returned untouched;
    an archive already in ``dest`` (say, fetched by hand) is used after the same checks.
    """
    source = name if isinstance(name, Source) else get_source(name)
    pinned = _check_hex(sha256, 64, "sha256") if sha256 else None
    if retries < 0 or timeout <= 0:
        raise ValueError("retries must be >= 0 and timeout > 0")
    dest = Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create download folder {dest}: {exc.strerror}") from exc
    urls = (join_url(base_url, source.archive),) if base_url else source.urls
    target = dest / source.target
    with _exclusive(dest / f".{source.target}.lock"):
        if unpack:
            receipt = read_receipt(target)
            if receipt is not None and _receipt_matches(receipt, source, verify, pinned):
                log.info("%s %s already downloaded and verified at %s", source.name, source.version, target)
                return target
            _remove_leftovers(dest, source.target)
        archive = dest / source.archive
        got = obtain_archive(source, urls, archive, verify=verify, pinned=pinned, retries=retries,
                              timeout=timeout, progress=progress)
        if not unpack:
            return archive
        root = _install(source, archive, target, got, verify=verify, pinned=pinned, progress=progress)
        if not keep_archive:
            archive.unlink(missing_ok=True)
            meta_path_of(archive).unlink(missing_ok=True)
        return root


def read_receipt(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``DOWNLOAD.json`` receipt of a dataset root, or None when absent or unreadable."""
    path = Path(root) / RECEIPT_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _install(source: Source, archive: Path, target: Path, got: Fetched, *, verify: bool, pinned: str | None,
             progress: bool) -> Path:
    """Unpack into a hidden work folder beside ``target``, verify, write the receipt, rename into place."""
    dest = target.parent
    work = dest / f".{source.target}.unpack-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        try:
            unpack(archive, work, include=_include_filter(source), progress=progress)
            project = find_root(work, source.root, archive.name)
            keep = project / source.subdir if source.subdir else project
            if not keep.is_dir():
                raise DownloadError(f"{archive.name}: no folder {source.subdir!r} under {project.name!r}")
            verified, unlisted = 0, []
            if verify and source.sums_file:
                verified, unlisted = verify_published_sums(source, project, keep, archive.name, progress)
            checks = _checks_done(source, pinned, verified) if verify else []
        except (ChecksumError, UnsafeArchiveError, DamagedArchiveError) as exc:
            archive.unlink(missing_ok=True)  # its content is unusable; the next run fetches it afresh
            meta_path_of(archive).unlink(missing_ok=True)
            raise type(exc)(f"{exc}\nThe archive {archive} was deleted and nothing was installed; run again to "
                            "download it afresh, or check the mirror.") from None
        receipt = _receipt(source, got, verify=verify, pinned=pinned, checks=checks, verified=verified,
                           unlisted=unlisted)
        atomic_write_json(keep / RECEIPT_NAME, receipt)
        _replace_dir(keep, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("%s %s ready at %s%s", source.name, source.version, target,
             f" ({verified} files verified against {source.sums_file})" if verified else "")
    return target


def _receipt(source: Source, got: Fetched, *, verify: bool, pinned: str | None, checks: list[str],
             verified: int, unlisted: list[str]) -> dict[str, Any]:
    """The ``DOWNLOAD.json`` of a tree: what was fetched from where, which checks passed, licence, citation."""
    return {
        "source": source.name,
        "dataset": source.dataset,
        "version": source.version,
        "title": source.title,
        "url": got.url,
        "archive": source.archive,
        "archive_bytes": got.size,
        "archive_sha256": got.sha256,
        "archive_md5": got.md5,
        "published_checksum": source.published_checksum,
        "pinned_sha256": pinned,
        "verified": verify,
        "checks": checks or ["none: no checksum is published for this archive; archive_sha256 records "
                             "what was downloaded"],
        "sums_file": SUMS_NAME if (verify and source.sums_file) else None,
        "files_verified": verified,
        "unlisted_files": unlisted[:50],
        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "licence": source.licence,
        "citation": source.citation,
    }


def _include_filter(source: Source) -> Include:
    """Which members to write: for a ``subdir`` source, only that folder and the sums file."""
    if not source.subdir:
        return None
    keep_prefix = [p for p in source.subdir.split("/") if p]
    sums = [p for p in (source.sums_file or "").split("/") if p]

    def include(parts: list[str]) -> bool:
        inner = parts[1:] if source.root is not None else parts
        return inner[: len(keep_prefix)] == keep_prefix or (bool(sums) and inner == sums)

    return include


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an old ``target`` (no matching receipt) is moved aside, then removed."""
    aside = None
    if target.exists() or target.is_symlink():
        aside = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        log.warning("replacing %s, which has no matching %s", target, RECEIPT_NAME)
        os.replace(target, aside)
    os.replace(new, target)
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)


def _remove_leftovers(dest: Path, folder: str) -> None:
    """Work folders of an interrupted run: never mistaken for data, removed before a new attempt."""
    for leftover in dest.glob(f".{folder}.unpack-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in dest.glob(f".{folder}.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _checks_done(source: Source, pinned: str | None, files_verified: int) -> list[str]:
    """The receipt's list of the checks that passed, in words."""
    checks = []
    if pinned:
        checks.append("archive sha256 (pinned by the caller)")
    if source.sha256:
        checks.append("archive sha256 (published)")
    if source.md5:
        checks.append("archive md5 (published)")
    if source.sums_file:
        checks.append(f"{files_verified} files against the published {source.sums_file}")
    return checks


def _receipt_matches(receipt: Mapping[str, Any], source: Source, verify: bool, pinned: str | None) -> bool:
    """Whether an existing tree is the one asked for (same release, verified if asked, same digests)."""
    if (receipt.get("source"), receipt.get("version"), receipt.get("archive")) != (
            source.name, source.version, source.archive):
        return False
    if verify and receipt.get("verified") is not True:
        return False
    checks = (("archive_sha256", source.sha256), ("archive_md5", source.md5), ("archive_sha256", pinned))
    return all(expected is None or receipt.get(key) == expected for key, expected in checks)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One process at a time per dataset folder (POSIX ``flock``; released if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    with open(lock_path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is downloading into %s; waiting for it", lock_path.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_hex(value: str, length: int, label: str) -> str:
    """A caller's digest, normalised to lowercase; anything but ``length`` hex digits is refused."""
    value = value.strip().lower()
    if len(value) != length or not HEX.match(value):
        raise ValueError(f"{label} must be {length} hex digits, got {value!r}")
    return value
