"""The one atomic writer of the project: a save either publishes a whole, synced file or leaves the old one.

Kept in a module of its own because photos, reports, dictionaries and weights all go through it, so it
must not change casually: :func:`atomic_write` fsyncs the file before the rename and the folder after
it, which a bare ``os.replace`` does not.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from facerestore_cli.imagefile.photo import ImageFileError


def _write_error(exc: OSError, path: Path, doing: str) -> ImageFileError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return ImageFileError("disk-full", f"no space left while {doing} ({exc.strerror or exc})", path)
    if isinstance(exc, FileNotFoundError):
        return ImageFileError("unwritable", f"the folder {path.parent} does not exist", path)
    return ImageFileError("unwritable", f"cannot write here while {doing}: {exc.strerror or exc}", path)


def _fsync_file(path: Path) -> None:
    # POSIX can fsync a read-only descriptor (works even if the umask made the file read-only);
    # Windows needs write access to flush
    fd = os.open(path, os.O_RDONLY if os.name == "posix" else os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; only POSIX can open a folder for that, and failure is harmless."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    with suppress(OSError):
        path.unlink()


@contextmanager
def atomic_write(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; publish it as ``path`` only if the block succeeds.

    A crash, Ctrl-C or full disk halfway through a save must leave either the old file or the new one,
    never a truncated photo, and no stray temporary files. The temporary file lives in the destination
    folder so that the final ``os.replace`` is an atomic rename on the same file system; it is fsynced
    first so a power cut cannot publish an empty file. With ``overwrite=False`` an existing ``path``
    raises reason ``"exists"`` (checked again atomically at publication). OSErrors, from this function
    or from the block, become :class:`ImageFileError` ``"unwritable"`` or ``"disk-full"``.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise ImageFileError("exists", "already exists and overwriting was not allowed", path)
    tmp: Path | None = None
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 lets the umask decide the final permissions, as for any newly created file
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _write_error(exc, path, "creating a temporary file") from exc
        os.close(fd)
        tmp = candidate
        break
    if tmp is None:
        raise ImageFileError("unwritable", "could not create a temporary file next to it", path)
    try:
        yield tmp
        _fsync_file(tmp)
        if overwrite:
            with suppress(OSError):  # keep the permissions the replaced file had
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create if absent", unlike exists() + replace()
            except FileExistsError:
                raise ImageFileError("exists", "already exists and overwriting was not allowed", path) from None
            except OSError:
                # file systems without hard links (FAT, some network shares)
                if os.path.lexists(path):
                    raise ImageFileError("exists", "already exists and overwriting was not allowed", path) from None
                os.replace(tmp, path)
            _remove_quietly(tmp)
        _fsync_folder(path.parent)
    except OSError as exc:
        _remove_quietly(tmp)
        raise _write_error(exc, path, "saving") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise


#: The temporary names :func:`atomic_write` creates: ``.<name>.<8 hex digits>.tmp``.
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$")
#: A temporary file untouched for this long cannot belong to a write still under way (a write updates
#: its file's mtime with every chunk, and the rename follows the last one within seconds), so another
#: run writing into the same folder at the same time never loses its temporary file.
STALE_AFTER_S = 30.0


def remove_stale_temporaries(folder: Path, started: float | None = None) -> list[Path]:
    """Delete the temporary files an earlier, killed run of :func:`atomic_write` left in ``folder``.

    SIGKILL, a power cut or an OOM kill give the writer no chance to clean up, so ``.<name>.<hex>.tmp``
    files stay behind. Only files of exactly that naming, regular (not symlinks), owned by this user
    (POSIX) and last modified before ``started`` (the run's start, ``time.time()``; default now) minus
    :data:`STALE_AFTER_S` are removed. Returns the removed paths; an unreadable folder removes nothing.
    """
    limit = (time.time() if started is None else started) - STALE_AFTER_S
    removed: list[Path] = []
    try:
        with os.scandir(folder) as entries:
            candidates = [e for e in entries if TEMPORARY_NAME.match(e.name)]
    except OSError:
        return removed
    for entry in candidates:
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= limit:
                continue
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return sorted(removed)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in chunks (the OS boundary that the tests interrupt)."""
    view = memoryview(data)
    with open(path, "wb") as fh:
        for start in range(0, len(view), 1 << 22):
            fh.write(view[start : start + (1 << 22)])
