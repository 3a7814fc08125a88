"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Everything ecgml writes (caches, manifests, folds, checkpoints, synthetic records) goes through here,
so a crash, a full disk or a kill leaves the previous good file intact. A published file has the mode a
plain ``open`` would give it (``0666`` less the umask) or, when it replaces a file, that file's mode, so
teammates, a serving account or a container with another uid read it as they read everything else
(the temporary file is created ``0600`` and only opened up as it is renamed).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it.

    Errors name the destination path, so a full disk or a read-only folder is easy to place.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, published_mode(target))
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc/self/status``): setting
    it to read it back would give a file another thread creates meanwhile the wrong mode."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def published_mode(target: Path) -> int:
    """The permission bits ``target`` gets: those of the file it replaces, else ``0666`` less the umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def process_scratch_dir(prefix: str) -> Path:
    """A new temporary folder that is removed when this process exits (downloads and report figures a
    command still reads after the call that made them returns, which would otherwise pile up in /tmp)."""
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@contextmanager
def named_os_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an ``OSError`` that does not name a file as one naming ``path`` (same errno and class).

    pandas, ``write_text`` and ``fsync`` say "No space left on device" without saying where.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or os.sep in str(exc.strerror or exc):
            raise  # already says where
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc


def _atomic_write(path: str | os.PathLike[str], mode: str, write: Callable[[IO[Any]], None]) -> None:
    with atomic_path(path) as tmp:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode, encoding=encoding) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_stream(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Let ``write`` fill a binary handle, then publish it atomically at ``path`` (fsynced first).

    For serialisers that take a file (``torch.save``, ``np.save``): handed a path, ``torch.save`` turns a
    full disk into an opaque ``RuntimeError`` from its zip writer; handed our handle, the ``OSError``
    (ENOSPC, EFBIG, EACCES) reaches :func:`atomic_path`, which names ``path``.
    """
    def guarded(handle: IO[bytes]) -> None:
        try:
            write(handle)
        except RuntimeError as exc:  # torch's zip writer wraps a failed write in its own error on close
            cause = _os_error_in(exc)
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror or str(cause)) from exc

    _atomic_write(path, "wb", guarded)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` somewhere in an exception's chain (cause or context), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic_write(path, "wb", lambda h: h.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    _atomic_write(path, "w", lambda h: h.write(text))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
