"""Versioned, resumable, verified downloads of the datasets ecgml trains on.

Why this module exists: a training result is only reproducible when the bytes under it are known. Each
source below is pinned to one published release; the archive is fetched with HTTP Range resumption
(multi-GB archives over flaky links), checked against the checksum its publisher printed *before* it is
used, unpacked without trusting member names, verified file by file where a ``SHA256SUMS.txt`` is
published, and renamed into place only when complete. A ``DOWNLOAD.json`` receipt in the dataset root
records what was fetched (and is how :func:`ecgml.data.ptbxl.read_version` names the release).

What was found about the sources (public pages and repositories searched offline; none of these URLs
could be fetched from the machines this was written on, so no digest below was checked against a real
download -- the first real run records one in its receipt):

``ptbxl`` -- PTB-XL 1.0.3 (doi:10.13026/kfzx-aw45). PhysioNet's "Download the ZIP file" link of
    https://physionet.org/content/ptb-xl/1.0.3/ is
    ``https://physionet.org/static/published-projects/ptb-xl/ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip``
    (~1.7 GB, used by many public scripts); it unpacks to a folder of the same name that holds
    ``SHA256SUMS.txt`` with one ``<sha256>  <path>`` line per file (the same format as
    ``shared/real-sample/ptbxl/SHA256SUMS.txt``). PhysioNet publishes no checksum of the zip itself, so
    every unpacked file is verified against ``SHA256SUMS.txt`` and the zip's sha256 goes into the
    receipt. That list travels inside the zip: it catches corruption and truncation, not a malicious
    host; pass ``sha256=`` (for instance from an earlier receipt) to pin the archive too.

``g12ec`` -- Georgia 12-lead ECG Challenge database, 10,344 records, as released for the 2020
    PhysioNet/CinC Challenge. The Challenge website (``2020/index.md`` of
    github.com/physionetchallenges/physionetchallenges.github.io, repeated on the 2021 page) lists
    ``PhysioNetChallenge2020_Training_E.tar.gz`` in the public bucket
    ``physionet-challenge-2020-12-lead-ecg-public`` with **MD5** ``4971a0562df4a7e2fd8f58e060927ff2``;
    no sha256 is published, so the MD5 is enforced and the sha256 recorded in the receipt. (An older
    MD5, ``594c8cbc02a0aec4c179d2f019b09a7a``, circulates in third-party READMEs from before the archive
    was re-issued.) The site links ``storage.cloud.google.com``, which wants a Google sign-in; the same
    object is served anonymously from ``storage.googleapis.com``, used here. Third-party code says the
    archive unpacks to ``WFDB/``; that is unconfirmed, so a single top folder of another name is
    accepted with a warning.

``g12ec-physionet`` -- the same database from PhysioNet's versioned release of the 2020 Challenge,
    challenge-2020 1.0.2 (doi:10.13026/dvyd-kd57): the project zip
    ``classification-of-12-lead-ecgs-the-physionetcomputing-in-cardiology-challenge-2020-1.0.2.zip``
    (name confirmed by several public scripts) holds ``training/georgia/g1..g11``. It is the whole
    training set (several GB, all six sources), but only Georgia is unpacked, and every Georgia file is
    verified against the project's ``SHA256SUMS.txt`` (PhysioNet puts one in every project zip, as in
    PTB-XL's; assumed, not seen, for this project). The stable host and per-file sha256 are the reason
    to choose it over ``g12ec``.

``g12ec-2021`` -- Georgia as re-issued for the 2021 Challenge (2021 header dialect): ``WFDB_Ga.tar.gz``
    in the bucket ``physionetchallenge2021-public-datasets`` (named in third-party code; unpacks to
    ``WFDB_Ga/``). **No checksum is published** for it (an MD5, ``47085dd62baca5ace4041025d6910b13``,
    appears only in third-party code and is not enforced); the receipt records the sha256 of what was
    downloaded so a later run or a colleague can pin the same bytes with ``sha256=``. PhysioNet's
    challenge-2021 1.0.3 (doi:10.13026/34va-7q14) also holds ``training/georgia``, but no Georgia-only
    archive of it was found and the name of its project zip could not be confirmed, so it is not listed.

Layout under ``dest``: ``<archive>.part`` while downloading (with ``<archive>.download.json`` holding
the server's validators for ``If-Range``), ``<archive>`` once complete and verified, a hidden
``.<folder>.unpack-*`` work folder while unpacking, and finally ``<folder>/`` (for instance
``ptbxl-1.0.3/``) with ``DOWNLOAD.json`` inside. The archive is deleted after a successful unpack unless
``keep_archive`` is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from tqdm import tqdm

from ecgml.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

RECEIPT_NAME = "DOWNLOAD.json"
SUMS_NAME = "SHA256SUMS.txt"
_CHUNK = 1 << 20
_MAX_REPORTED = 10
_USER_AGENT = "ecgml-download/1 (+python-urllib)"
_HEX = re.compile(r"^[0-9a-f]+$")
_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")


def _unsafe_reason(name: str) -> str | None:
    """Why a member or listed path could escape the destination, or None when it is safe."""
    if "\x00" in name:
        return "contains a NUL byte"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[\\/]+", name):
        return "climbs out with '..'"
    return None


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


@dataclass(frozen=True)
class Source:
    """One downloadable release: where it is, how to check it, and where its data sit in the archive.

    ``urls`` are alternatives serving the same bytes, tried in order. ``sha256``/``md5`` are checksums of
    the archive *as published* (``md5`` only where no sha256 is published); ``sums_file`` is a
    ``SHA256SUMS.txt`` inside ``root`` listing every file. ``root`` is the archive's top folder (None: the
    archive's top level is the dataset); ``subdir`` keeps only that part of ``root``.
    """

    name: str
    dataset: str
    version: str
    title: str
    urls: tuple[str, ...]
    root: str | None
    licence: str
    citation: str
    sha256: str | None = None
    md5: str | None = None
    sums_file: str | None = None
    subdir: str | None = None
    folder: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.urls:
            raise ValueError("a Source needs a name and at least one URL")
        for label, digest, length in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if digest is not None and (len(digest) != length or not _HEX.match(digest)):
                raise ValueError(f"source {self.name!r}: {label} must be {length} lowercase hex digits")
        names = {posixpath.basename(urllib.parse.urlsplit(u).path) for u in self.urls}
        if len(names) != 1 or not next(iter(names)):
            raise ValueError(f"source {self.name!r}: its URLs must name one archive file, got {sorted(names)}")
        for label, rel in (("root", self.root), ("subdir", self.subdir), ("sums_file", self.sums_file)):
            if rel is not None and _unsafe_reason(rel):
                raise ValueError(f"source {self.name!r}: {label} {rel!r} is not a safe relative path")
        if self.folder and (_unsafe_reason(self.folder) or "/" in self.folder):
            raise ValueError(f"source {self.name!r}: folder {self.folder!r} must be one plain folder name")

    @property
    def archive(self) -> str:
        """File name of the archive (the last part of its URL), also its name under ``dest``."""
        return posixpath.basename(urllib.parse.urlsplit(self.urls[0]).path)

    @property
    def target(self) -> str:
        """Name of the dataset root folder created under ``dest``."""
        return self.folder or f"{self.name}-{self.version}"

    @property
    def published_checksum(self) -> str | None:
        """Which published check guards this source: ``sha256``, ``md5``, the sums file, or None."""
        if self.sha256:
            return "sha256"
        if self.md5:
            return "md5"
        return self.sums_file


_PHYSIONET = "Goldberger AL et al. PhysioBank, PhysioToolkit, and PhysioNet. Circulation 101(23):e215-e220 (2000)."
_CHALLENGE_2020 = ("Perez Alday EA et al. Classification of 12-lead ECGs: the PhysioNet/Computing in Cardiology "
                   "Challenge 2020. Physiol Meas 41:124003 (2020), doi:10.1088/1361-6579/abc960.")

_REGISTRY: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            name="ptbxl",
            dataset="ptbxl",
            version="1.0.3",
            title="PTB-XL, a large publicly available electrocardiography dataset (PhysioNet 1.0.3)",
            urls=("https://physionet.org/static/published-projects/ptb-xl/"
                  "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip",),
            root="ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3",
            sums_file=SUMS_NAME,
            folder="ptbxl-1.0.3",
            licence="CC BY 4.0 (PhysioNet open access)",
            citation=("Wagner P et al. PTB-XL, a large publicly available electrocardiography dataset. "
                      "Sci Data 7:154 (2020); PhysioNet doi:10.13026/kfzx-aw45. " + _PHYSIONET),
            notes="no checksum of the zip is published; every file is checked against SHA256SUMS.txt",
        ),
        Source(
            name="g12ec",
            dataset="g12ec",
            version="challenge-2020",
            title="Georgia 12-lead ECG Challenge database, 2020 Challenge training release (Training_E)",
            urls=("https://storage.googleapis.com/physionet-challenge-2020-12-lead-ecg-public/"
                  "PhysioNetChallenge2020_Training_E.tar.gz",),
            root="WFDB",
            md5="4971a0562df4a7e2fd8f58e060927ff2",
            folder="g12ec-challenge-2020",
            licence="CC BY 4.0 (PhysioNet/CinC Challenge 2020 data)",
            citation=_CHALLENGE_2020 + " " + _PHYSIONET,
            notes="MD5 published on the 2020 Challenge website; no sha256 published",
        ),
        Source(
            name="g12ec-physionet",
            dataset="g12ec",
            version="1.0.2",
            title="Georgia records of PhysioNet challenge-2020 1.0.2 (training/georgia)",
            urls=("https://physionet.org/static/published-projects/challenge-2020/"
                  "classification-of-12-lead-ecgs-the-physionetcomputing-in-cardiology-challenge-2020-1.0.2.zip",),
            root="classification-of-12-lead-ecgs-the-physionetcomputing-in-cardiology-challenge-2020-1.0.2",
            subdir="training/georgia",
            sums_file=SUMS_NAME,
            folder="g12ec-physionet-1.0.2",
            licence="CC BY 4.0 (PhysioNet open access)",
            citation=_CHALLENGE_2020 + " PhysioNet doi:10.13026/dvyd-kd57. " + _PHYSIONET,
            notes="downloads the whole 2020 training set (several GB), keeps and verifies training/georgia",
        ),
        Source(
            name="g12ec-2021",
            dataset="g12ec",
            version="challenge-2021",
            title="Georgia 12-lead ECG Challenge database, 2021 Challenge training release (WFDB_Ga)",
            urls=("https://storage.googleapis.com/physionetchallenge2021-public-datasets/WFDB_Ga.tar.gz",),
            root="WFDB_Ga",
            folder="g12ec-challenge-2021",
            licence="CC BY 4.0 (PhysioNet/CinC Challenge 2021 data)",
            citation=("Reyna MA et al. Will Two Do? Varying Dimensions in Electrocardiography: the "
                      "PhysioNet/Computing in Cardiology Challenge 2021. Computing in Cardiology 48 (2021); "
                      "PhysioNet doi:10.13026/34va-7q14. " + _PHYSIONET),
            notes="no checksum published; the receipt records the sha256 of what was downloaded",
        ),
    )
}

#: The registry, read-only: ``name -> Source``.
SOURCES: Mapping[str, Source] = MappingProxyType(_REGISTRY)


def get_source(name: str) -> Source:
    """The registered source called ``name``; an unknown name raises and lists the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {known}") from None


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
    urls = (_join_url(base_url, source.archive),) if base_url else source.urls
    target = dest / source.target
    with _exclusive(dest / f".{source.target}.lock"):
        if unpack:
            receipt = read_receipt(target)
            if receipt is not None and _receipt_matches(receipt, source, verify, pinned):
                log.info("%s %s already downloaded and verified at %s", source.name, source.version, target)
                return target
            _remove_leftovers(dest, source.target)
        archive = dest / source.archive
        got = _obtain_archive(source, urls, archive, verify=verify, pinned=pinned, retries=retries,
                              timeout=timeout, progress=progress)
        if not unpack:
            return archive
        root = _install(source, archive, target, got, verify=verify, pinned=pinned, progress=progress)
        if not keep_archive:
            archive.unlink(missing_ok=True)
            _meta_path(archive).unlink(missing_ok=True)
        return root


def read_receipt(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``DOWNLOAD.json`` receipt of a dataset root, or None when absent or unreadable."""
    path = Path(root) / RECEIPT_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def verify_tree(root: str | os.PathLike[str], *, progress: bool = False) -> int:
    """Re-check every file of a tree against its ``SHA256SUMS.txt``; return how many were checked.

    For a later audit (a disk error, a hand edit): raises :class:`ChecksumError` naming the first
    mismatching or missing files.
    """
    root = Path(root)
    entries = _parse_sums(root / SUMS_NAME)
    count, _ = _verify_entries(root, entries, label=str(root), progress=progress)
    return count


# --------------------------------------------------------------------------------------------------
# fetching


@dataclass(frozen=True)
class _Fetched:
    url: str
    size: int
    sha256: str
    md5: str | None


class _Transient(Exception):
    """An attempt failed in a way worth retrying; ``gained`` bytes were received before it failed."""

    def __init__(self, reason: str, gained: int = 0, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.gained = gained
        self.unreachable = unreachable


def _obtain_archive(source: Source, urls: tuple[str, ...], archive: Path, *, verify: bool, pinned: str | None,
                    retries: int, timeout: float, progress: bool) -> _Fetched:
    """A complete archive at ``archive`` whose digests passed every check; reuses a verified leftover."""
    meta_path = _meta_path(archive)
    want_md5 = verify and source.md5 is not None
    if archive.is_file():
        meta = _read_json(meta_path)
        sha, md5 = _hash_file(archive, md5=want_md5)
        recorded = meta.get("sha256")
        mismatch = _mismatch(source, pinned, sha, md5) if verify else None
        if mismatch is None and recorded in (None, sha):
            log.info("reusing the complete archive %s", archive)
            return _Fetched(str(meta.get("url") or urls[0]), archive.stat().st_size, sha, md5)
        log.warning("%s differs from what was %s; downloading it again", archive,
                    "published" if mismatch else "recorded when it was downloaded")
        archive.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
    part = archive.with_name(archive.name + ".part")
    url = _fetch_any(urls, part, meta_path, retries=retries, timeout=timeout, progress=progress)
    sha, md5 = _hash_file(part, md5=want_md5)
    mismatch = _mismatch(source, pinned, sha, md5) if verify else None
    if mismatch is not None:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        kind, expected, actual = mismatch
        raise ChecksumError(
            f"checksum mismatch for {archive.name} downloaded from {url}: expected {kind} {expected}, "
            f"got {actual} (sha256 {sha}). The file was deleted; run again to download it afresh, "
            "or check the mirror."
        )
    os.replace(part, archive)
    size = archive.stat().st_size
    meta = _read_json(meta_path)
    meta.update(url=url, sha256=sha, md5=md5, size=size)
    atomic_write_json(meta_path, meta)
    return _Fetched(url, size, sha, md5)


def _mismatch(source: Source, pinned: str | None, sha: str, md5: str | None) -> tuple[str, str, str] | None:
    for kind, expected, actual in (("sha256", pinned, sha), ("sha256", source.sha256, sha),
                                   ("md5", source.md5, md5)):
        if expected is not None and actual != expected:
            return kind, expected, str(actual)
    return None


def _fetch_any(urls: tuple[str, ...], part: Path, meta_path: Path, *, retries: int, timeout: float,
               progress: bool) -> str:
    """Fetch from the first URL that works; return it. Errors from every URL are reported together."""
    failures: list[DownloadError] = []
    for url in urls:
        try:
            _fetch(url, part, meta_path, retries=retries, timeout=timeout, progress=progress)
            return url
        except ChecksumError:
            raise
        except DownloadError as exc:
            failures.append(exc)
            if url != urls[-1]:
                log.warning("%s; trying the next URL", exc)
    if len(failures) == 1:
        raise failures[0]
    raise DownloadError("every URL failed:\n  " + "\n  ".join(str(f) for f in failures))


def _fetch(url: str, part: Path, meta_path: Path, *, retries: int, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``part``, resuming what is there; retry transient failures with backoff."""
    failures = 0
    while True:
        try:
            _attempt(url, part, meta_path, timeout=timeout, progress=progress)
            return
        except _Transient as exc:
            have = part.stat().st_size if part.is_file() else 0
            if exc.gained:
                log.info("%s: %s; resuming at byte %d", url, exc.reason, have)
                continue
            failures += 1
            if failures > retries:
                tries = f"gave up after {failures} attempt{'s' if failures > 1 else ''}"
                if exc.unreachable:
                    raise DownloadError(
                        f"cannot reach {url}: {exc.reason} ({tries}). If this machine cannot reach that host, "
                        f"point --base-url (base_url=) at a mirror that serves {part.name[:-5]}, or fetch it "
                        f"elsewhere and put it in {part.parent} (it is checked, then used)."
                    ) from None
                raise DownloadError(f"cannot download {url}: {exc.reason} ({tries})") from None
            wait = min(0.5 * 2 ** (failures - 1), 30.0)
            log.warning("%s: %s; retry %d of %d in %.1f s", url, exc.reason, failures, retries, wait)
            time.sleep(wait)


def _attempt(url: str, part: Path, meta_path: Path, *, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.is_file() else 0
    meta = _read_json(meta_path) if have else {}
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        etag, modified = meta.get("etag"), meta.get("last_modified")
        validator = etag if isinstance(etag, str) and not etag.startswith("W/") else modified
        if isinstance(validator, str) and validator:
            headers["If-Range"] = validator
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            _handle_http_error(exc, url, part, meta_path, have)
        return
    except ValueError as exc:
        raise DownloadError(f"not a usable URL: {url!r} ({exc})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _Transient(str(reason) or type(exc).__name__, unreachable=True) from None
    with response:
        status = response.status
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != have:
                _discard(part, meta_path)
                raise _Transient(f"server answered from byte {start}, not {have}; starting over")
            mode = "ab"
        elif status in (200, None):  # None: a file:// URL
            if have:
                log.warning("%s ignored the Range request; downloading %s from the start", url, part.name[:-5])
            have, mode = 0, "wb"
            total = _int_or_none(response.headers.get("Content-Length"))
            atomic_write_json(meta_path, {"url": url, "etag": response.headers.get("ETag"),
                                          "last_modified": response.headers.get("Last-Modified"), "total": total})
        else:
            raise DownloadError(f"unexpected HTTP {status} {response.reason} from {url}")
        if total is not None:
            _check_space(part.parent, total - have, part.name[:-5])
        written = _stream(response, part, mode, have=have, total=total, progress=progress)
    size = have + written
    if total is not None and size < total:
        raise _Transient(f"connection closed after {size} of {total} bytes", written)
    if total is not None and size > total:
        _discard(part, meta_path)
        raise _Transient(f"received {size} bytes but {total} were announced; starting over")


def _handle_http_error(exc: urllib.error.HTTPError, url: str, part: Path, meta_path: Path, have: int) -> None:
    """Turn an HTTP error into: done (416 for a complete part), a retry, or a clear final error."""
    code = exc.code
    if code == 416 and have:
        total = _int_or_none(_match_group(_UNSATISFIED_RANGE, exc.headers.get("Content-Range")))
        if total == have:
            return  # the partial file is already the whole file
        _discard(part, meta_path)
        raise _Transient(f"HTTP 416 for a {have}-byte partial file (remote size {total}); starting over")
    if code in (404, 410):
        raise DownloadError(f"HTTP {code} {exc.reason}: {url} (the file is not there; check the URL or --base-url)")
    if code >= 500 or code in (408, 425, 429):
        raise _Transient(f"HTTP {code} {exc.reason}")
    raise DownloadError(f"HTTP {code} {exc.reason}: {url}")


def _stream(response: IO[bytes], part: Path, mode: str, *, have: int, total: int | None, progress: bool) -> int:
    """Append the body to ``part``; a read error becomes :class:`_Transient`, a write error propagates."""
    written = 0
    with open(part, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                       desc=part.name[:-5], disable=not progress) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                out.flush()
                raise _Transient(f"connection dropped after {have + written} bytes ({exc!r})", written) from None
            if not chunk:
                break
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return written


def _parse_content_range(value: str | None) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        raise _Transient(f"206 answer without a usable Content-Range ({value!r}); starting over")
    return int(match[1]), None if match[3] == "*" else int(match[3])


def _discard(part: Path, meta_path: Path) -> None:
    part.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)


def _check_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise NotEnoughSpaceError(f"{folder}: {what} needs {needed / 1e9:.2f} GB more, only {free / 1e9:.2f} GB free")


def _hash_file(path: Path, *, md5: bool) -> tuple[str, str | None]:
    """sha256 (and MD5 when asked) of a file in one pass."""
    sha = hashlib.sha256()
    mdh = hashlib.md5(usedforsecurity=False) if md5 else None
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while n := handle.readinto(buffer):
            sha.update(view[:n])
            if mdh is not None:
                mdh.update(view[:n])
    return sha.hexdigest(), mdh.hexdigest() if mdh is not None else None


# --------------------------------------------------------------------------------------------------
# unpacking and verification


def _install(source: Source, archive: Path, target: Path, got: _Fetched, *, verify: bool, pinned: str | None,
             progress: bool) -> Path:
    """Unpack into a hidden work folder beside ``target``, verify, write the receipt, rename into place."""
    dest = target.parent
    work = dest / f".{source.target}.unpack-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        try:
            _unpack(archive, work, include=_include_filter(source), progress=progress)
            project = _find_root(work, source.root, archive.name)
            keep = project / source.subdir if source.subdir else project
            if not keep.is_dir():
                raise DownloadError(f"{archive.name}: no folder {source.subdir!r} under {project.name!r}")
            verified, unlisted = 0, []
            if verify and source.sums_file:
                verified, unlisted = _verify_published_sums(source, project, keep, archive.name, progress)
            checks = _checks_done(source, pinned, verified) if verify else []
        except (ChecksumError, UnsafeArchiveError, DamagedArchiveError) as exc:
            archive.unlink(missing_ok=True)  # its content is unusable; the next run fetches it afresh
            _meta_path(archive).unlink(missing_ok=True)
            raise type(exc)(f"{exc}\nThe archive {archive} was deleted and nothing was installed; run again to "
                            "download it afresh, or check the mirror.") from None
        receipt = {
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
        atomic_write_json(keep / RECEIPT_NAME, receipt)
        _replace_dir(keep, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("%s %s ready at %s%s", source.name, source.version, target,
             f" ({verified} files verified against {source.sums_file})" if verified else "")
    return target


def _verify_published_sums(source: Source, project: Path, keep: Path, label: str,
                           progress: bool) -> tuple[int, list[str]]:
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
        if _unsafe_reason(rel):
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
    for folder, _dirs, files in os.walk(base):
        rel_folder = Path(folder).relative_to(base).as_posix()
        for file in files:
            yield file if rel_folder == "." else f"{rel_folder}/{file}"


def _include_filter(source: Source) -> Callable[[list[str]], bool] | None:
    """Which members to write: for a ``subdir`` source, only that folder and the sums file."""
    if not source.subdir:
        return None
    keep_prefix = [p for p in source.subdir.split("/") if p]
    sums = [p for p in (source.sums_file or "").split("/") if p]

    def include(parts: list[str]) -> bool:
        inner = parts[1:] if source.root is not None else parts
        return inner[: len(keep_prefix)] == keep_prefix or (bool(sums) and inner == sums)

    return include


def _unpack(archive: Path, work: Path, *, include: Callable[[list[str]], bool] | None, progress: bool) -> None:
    """Unpack a zip or tar(.gz) into ``work``, refusing any member that could land outside it."""
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, work, include, progress)
        elif tarfile.is_tarfile(archive):
            _unpack_tar(archive, work, include, progress)
        else:
            raise DamagedArchiveError(f"{archive.name}: neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise DamagedArchiveError(f"{archive.name}: damaged archive ({exc})") from None


def _unpack_zip(archive: Path, work: Path, include: Callable[[list[str]], bool] | None, progress: bool) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        plan: list[tuple[zipfile.ZipInfo, list[str]]] = []
        for info in members:  # check every name before writing anything
            parts = _safe_parts(info.filename, archive.name)
            if stat.S_ISLNK(info.external_attr >> 16):
                _check_link(info.filename, zf.read(info).decode("utf-8", "replace"), archive.name)
            if parts and (include is None or include(parts)):
                plan.append((info, parts))
        _check_space(work, sum(i.file_size for i, _ in plan), f"unpacking {archive.name}")
        for info, parts in tqdm(plan, unit="file", desc=f"unpacking {archive.name}", disable=not progress):
            path = _member_path(work, parts, info.filename, archive.name)
            if info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
            elif stat.S_ISLNK(info.external_attr >> 16):
                path.parent.mkdir(parents=True, exist_ok=True)
                _make_link(zf.read(info).decode("utf-8"), path, work, info.filename, archive.name)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(path, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)


def _unpack_tar(archive: Path, work: Path, include: Callable[[list[str]], bool] | None, progress: bool) -> None:
    with tarfile.open(archive, "r:*") as tf, tqdm(unit="file", desc=f"unpacking {archive.name}",
                                                 disable=not progress) as bar:
        for member in tf:
            parts = _safe_parts(member.name, archive.name)
            if member.issym():
                _check_link(member.name, member.linkname, archive.name)
            elif member.islnk():
                _safe_parts(member.linkname, archive.name, what="hard link target")
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(f"{archive.name}: refused member {member.name!r}: "
                                         "a device or pipe, not a file, folder or link")
            if not parts or (include is not None and not include(parts)):
                continue
            path = _member_path(work, parts, member.name, archive.name)
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if member.issym():
                _make_link(member.linkname, path, work, member.name, archive.name)
            elif member.islnk():
                source_path = _member_path(work, _safe_parts(member.linkname, archive.name), member.linkname,
                                           archive.name)
                if not source_path.is_file():
                    raise UnsafeArchiveError(f"{archive.name}: hard link {member.name!r} points at "
                                             f"{member.linkname!r}, which is not a file unpacked before it")
                shutil.copyfile(source_path, path)
            else:
                src = tf.extractfile(member)
                if src is None:
                    raise DamagedArchiveError(f"{archive.name}: cannot read member {member.name!r}")
                with src, open(path, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            bar.update(1)


def _safe_parts(name: str, archive: str, *, what: str = "member") -> list[str]:
    reason = _unsafe_reason(name)
    if reason:
        raise UnsafeArchiveError(f"{archive}: refused {what} {name!r}: it {reason}")
    return [p for p in re.split(r"[\\/]+", name) if p and p != "."]


def _check_link(name: str, link: str, archive: str) -> None:
    """A symbolic link must be relative and resolve inside the archive's own tree."""
    if link.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", link):
        raise UnsafeArchiveError(f"{archive}: refused link {name!r} -> {link!r}: it points to an absolute path")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name.replace("\\", "/")), link))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(f"{archive}: refused link {name!r} -> {link!r}: it points outside the archive")


def _make_link(link: str, path: Path, work: Path, name: str, archive: str) -> None:
    """Create a symbolic link, then make sure it resolves inside ``work`` (links through links)."""
    os.symlink(link, path)
    if not _inside(os.path.realpath(path), os.path.realpath(work)):
        path.unlink()
        raise UnsafeArchiveError(f"{archive}: refused link {name!r} -> {link!r}: it resolves outside the archive")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


def _member_path(work: Path, parts: list[str], name: str, archive: str) -> Path:
    """Where a member goes; also refuses paths that escape through a link unpacked earlier."""
    path = work.joinpath(*parts)
    if not _inside(os.path.realpath(path.parent), os.path.realpath(work)):
        raise UnsafeArchiveError(f"{archive}: refused member {name!r}: it would be written outside the "
                                 "destination through a link")
    return path


def _find_root(work: Path, root: str | None, archive: str) -> Path:
    """The dataset folder inside the unpacked tree; a single top folder of another name is accepted."""
    if root is None:
        return work
    candidate = work.joinpath(*root.split("/"))
    if candidate.is_dir():
        return candidate
    tops = sorted(p.name for p in work.iterdir())
    if len(tops) == 1 and (work / tops[0]).is_dir():
        log.warning("%s: expected the data in folder %r but found %r; using it", archive, root, tops[0])
        return work / tops[0]
    raise DownloadError(f"{archive}: expected the data in a folder {root!r}; the archive holds {tops[:10]}")


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


# --------------------------------------------------------------------------------------------------
# small helpers


def _checks_done(source: Source, pinned: str | None, files_verified: int) -> list[str]:
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


def _join_url(base_url: str, file_name: str) -> str:
    scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"base_url must be an http(s) or file URL, got {base_url!r}")
    return base_url.rstrip("/") + "/" + urllib.parse.quote(file_name)


def _meta_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".download.json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _check_hex(value: str, length: int, label: str) -> str:
    value = value.strip().lower()
    if len(value) != length or not _HEX.match(value):
        raise ValueError(f"{label} must be {length} hex digits, got {value!r}")
    return value


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _match_group(pattern: re.Pattern[str], value: str | None) -> str | None:
    match = pattern.match((value or "").strip())
    return match[1] if match else None


__all__ = [
    "RECEIPT_NAME",
    "SOURCES",
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
