"""The resumable, checksum-verified fetch of one archive.

Why: the archives are gigabytes over links that drop. A ``.part`` file grows across attempts with HTTP
Range requests (guarded by ``If-Range`` with the validators kept in ``<archive>.download.json``); a
server that ignores the range, answers from the wrong byte or sends too much is detected and the file
started over; transient failures are retried with backoff; and the finished file is checked against the
published (or pinned) digest *before* it is renamed to its final name, so a bad download is never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from ecgml.data.download.base import CHUNK, ChecksumError, DownloadError, check_space
from ecgml.data.download.catalogue import Source
from ecgml.io import atomic_write_json

log = logging.getLogger(__name__)

_USER_AGENT = "ecgml-download/1 (+python-urllib)"
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")


@dataclass(frozen=True)
class Fetched:
    """A complete, checked archive: where it came from, its size and digests (for the receipt)."""

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


def obtain_archive(source: Source, urls: tuple[str, ...], archive: Path, *, verify: bool, pinned: str | None,
                    retries: int, timeout: float, progress: bool) -> Fetched:
    """A complete archive at ``archive`` whose digests passed every check; reuses a verified leftover."""
    meta_path = meta_path_of(archive)
    want_md5 = verify and source.md5 is not None
    if archive.is_file():
        meta = _read_json(meta_path)
        sha, md5 = _hash_file(archive, md5=want_md5)
        recorded = meta.get("sha256")
        mismatch = _mismatch(source, pinned, sha, md5) if verify else None
        if mismatch is None and recorded in (None, sha):
            log.info("reusing the complete archive %s", archive)
            return Fetched(str(meta.get("url") or urls[0]), archive.stat().st_size, sha, md5)
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
    return Fetched(url, size, sha, md5)


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
            check_space(part.parent, total - have, part.name[:-5])
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
                chunk = response.read(CHUNK)
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
    """``(first byte, total or None)`` of a 206 answer; an unusable header restarts the file."""
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        raise _Transient(f"206 answer without a usable Content-Range ({value!r}); starting over")
    return int(match[1]), None if match[3] == "*" else int(match[3])


def _discard(part: Path, meta_path: Path) -> None:
    """Forget a partial download and its validators, so the next attempt starts from byte 0."""
    part.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)


def _hash_file(path: Path, *, md5: bool) -> tuple[str, str | None]:
    """sha256 (and MD5 when asked) of a file in one pass."""
    sha = hashlib.sha256()
    mdh = hashlib.md5(usedforsecurity=False) if md5 else None
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while n := handle.readinto(buffer):
            sha.update(view[:n])
            if mdh is not None:
                mdh.update(view[:n])
    return sha.hexdigest(), mdh.hexdigest() if mdh is not None else None


def join_url(base_url: str, file_name: str) -> str:
    """The archive's URL on a mirror (``--base-url``); only http(s) and file URLs are accepted."""
    scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"base_url must be an http(s) or file URL, got {base_url!r}")
    return base_url.rstrip("/") + "/" + urllib.parse.quote(file_name)


def meta_path_of(archive: Path) -> Path:
    """Where the server's validators and the finished digests of ``archive`` are kept between runs."""
    return archive.with_name(archive.name + ".download.json")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything unreadable is an empty dict (the file is only a hint)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _int_or_none(value: str | None) -> int | None:
    """A header's integer value, or None when absent or malformed."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _match_group(pattern: re.Pattern[str], value: str | None) -> str | None:
    """The first group of ``pattern`` in a header value, or None."""
    match = pattern.match((value or "").strip())
    return match[1] if match else None
