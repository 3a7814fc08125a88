"""Safe unpacking: a zip or tar(.gz) is written into a work folder without trusting its member names.

Why: an archive from a mirror is input like any other. A member with an absolute path, a ``..`` step, a
link pointing out of the tree, a hard link to something not unpacked before it, or a device/pipe is
refused before anything is written outside the work folder (:class:`UnsafeArchiveError`); a truncated
or corrupt archive is :class:`DamagedArchiveError`.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ecgml.data.download.base import CHUNK, DamagedArchiveError, DownloadError, UnsafeArchiveError, check_space

log = logging.getLogger(__name__)

#: Which members to write, given a member's path parts (None: all).
Include = Callable[[list[str]], bool] | None


def unsafe_reason(name: str) -> str | None:
    """Why a member or listed path could escape the destination, or None when it is safe."""
    if "\x00" in name:
        return "contains a NUL byte"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[\\/]+", name):
        return "climbs out with '..'"
    return None


def unpack(archive: Path, work: Path, *, include: Include, progress: bool) -> None:
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


def _unpack_zip(archive: Path, work: Path, include: Include, progress: bool) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        plan: list[tuple[zipfile.ZipInfo, list[str]]] = []
        for info in members:  # check every name before writing anything
            parts = _safe_parts(info.filename, archive.name)
            if stat.S_ISLNK(info.external_attr >> 16):
                _check_link(info.filename, zf.read(info).decode("utf-8", "replace"), archive.name)
            if parts and (include is None or include(parts)):
                plan.append((info, parts))
        check_space(work, sum(i.file_size for i, _ in plan), f"unpacking {archive.name}")
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
                    shutil.copyfileobj(src, out, CHUNK)


def _unpack_tar(archive: Path, work: Path, include: Include, progress: bool) -> None:
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
                    shutil.copyfileobj(src, out, CHUNK)
            bar.update(1)


def _safe_parts(name: str, archive: str, *, what: str = "member") -> list[str]:
    """The path parts of a member name; an absolute or climbing name is refused."""
    reason = unsafe_reason(name)
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
    """Whether resolved ``path`` is ``folder`` or below it."""
    return path == folder or path.startswith(folder + os.sep)


def _member_path(work: Path, parts: list[str], name: str, archive: str) -> Path:
    """Where a member goes; also refuses paths that escape through a link unpacked earlier."""
    path = work.joinpath(*parts)
    if not _inside(os.path.realpath(path.parent), os.path.realpath(work)):
        raise UnsafeArchiveError(f"{archive}: refused member {name!r}: it would be written outside the "
                                 "destination through a link")
    return path


def find_root(work: Path, root: str | None, archive: str) -> Path:
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
