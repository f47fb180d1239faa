"""Fetching official checkpoints over HTTP: resumable, retried, checked against the model card, then imported.

Official checkpoints are hundreds of megabytes on servers that drop connections and rate-limit, so a
download survives interruptions (a ``.part`` file resumed with ``Range``), retries transient failures
with backoff, and trusts nothing it cannot check: announced sizes must agree and the finished file must
match the card's sha256 before it is published under its final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from facerestore_cli.weights.checkpoint import ImportResult, import_checkpoint
from facerestore_cli.weights.errors import CheckpointError, DownloadError, WeightsError, WeightsIntegrityError
from facerestore_cli.weights.files import _CHUNK, _hash_file, file_sha256
from facerestore_cli.weights.lookup import user_weights_dir

__all__ = ["download", "fetch"]

log = logging.getLogger(__name__)


class _Retry(Exception):
    """A transient failure: try again (resuming when possible)."""

    def __init__(self, message: str, retry_after: float | None = None, unresolved: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        #: the host name did not resolve: offline, or a typo; worth a short retry only
        self.unresolved = unresolved


#: A host name that does not resolve is retried this many times, 1 s apart, and never past
#: :data:`UNRESOLVED_BUDGET_S` after the first failure: offline (or with a typo in the URL) nothing
#: comes of backing off for half a minute, yet a resolver that hiccups once gets its second chance.
UNRESOLVED_RETRIES = 2
UNRESOLVED_BUDGET_S = 5.0


_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"facerestore/{version('facerestore-cli')}"
    except Exception:
        return "facerestore"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


class _Progress:
    """A rich progress bar on a terminal, nothing otherwise (logs and pipes stay clean)."""

    def __init__(self, enabled: bool, label: str) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=None)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def reset(self, completed: int, total: int | None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=total)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)


def _check_url(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http:// and https:// URLs can be fetched")


def download(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    expected_size: int | None = None,
    timeout: float = 30.0,
    retries: int = 5,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest + ".part"``, resuming and retrying, then rename.

    An existing ``.part`` (from this or an earlier, interrupted run) is resumed with a ``Range`` request;
    a server that answers 200 instead of 206 ignored the range and the download restarts from zero.
    Connection errors, timeouts, short bodies and HTTP 408/429/5xx are retried ``retries`` times in a row
    with exponential backoff (``backoff`` seconds, doubling, at most 60 s); an attempt that brings new
    bytes does not use up a retry. Other HTTP errors (404, 403, ...) fail at once. Sizes announced by the
    server (Content-Length, Content-Range) must agree with ``expected_size``; the finished file must match
    ``sha256``, else it is deleted and :class:`WeightsIntegrityError` is raised.
    """
    _check_url(url)
    dest = Path(dest).expanduser()
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    want_sha = sha256.lower() if sha256 else None

    if want_sha and dest.is_file() and file_sha256(dest) == want_sha:
        log.info("%s is already downloaded and verified", dest)
        return dest

    state: dict[str, Any] = {"validator": None, "total": expected_size}
    failures = 0
    best = part.stat().st_size if part.exists() else 0
    unresolved_since: float | None = None
    with _Progress(progress, dest.name) as bar:
        while True:
            try:
                _download_once(url, part, state, expected_size, timeout, bar)
                break
            except _Retry as exc:
                size = part.stat().st_size if part.exists() else 0
                failures = 0 if size > best else failures + 1  # new bytes: not a wasted retry
                best = max(best, size)
                if exc.unresolved:
                    unresolved_since = unresolved_since or time.monotonic()
                    spent = time.monotonic() - unresolved_since
                    if failures > min(retries, UNRESOLVED_RETRIES) or spent + 1.0 > UNRESOLVED_BUDGET_S:
                        host = urllib.parse.urlsplit(url).hostname
                        raise DownloadError(
                            f"downloading {url}: the host name {host} does not resolve "
                            "(no network here, or a typo in the URL?)"
                        ) from exc
                    log.warning("%s: %s; retrying in 1 s", url, exc)
                    time.sleep(1.0)
                    continue
                if failures > retries:
                    kept = f" Run it again to resume from the {size} bytes kept in {part}." if size else ""
                    raise DownloadError(
                        f"downloading {url}: gave up after {failures} failed attempts in a row (last: {exc}).{kept}"
                    ) from exc
                delay = min(backoff * 2 ** max(failures - 1, 0), 60.0)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, 60.0))
                log.warning("%s: %s; retrying in %.1f s", url, exc, delay)
                time.sleep(delay)

    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise WeightsIntegrityError(
            f"{url}: downloaded {size} bytes, expected {expected_size}; the partial file was deleted"
        )
    if want_sha:
        digest = _hash_file(part)
        if digest != want_sha:
            part.unlink(missing_ok=True)
            raise WeightsIntegrityError(
                f"{url}: the downloaded file has sha256 {digest}, expected {want_sha}; it was deleted. "
                "Try again; if it keeps happening the source or mirror serves a different file."
            )
    _publish(part, dest)
    return dest


def _publish(part: Path, dest: Path) -> None:
    """Give the verified ``.part`` its final name through the project's one atomic writer.

    The ``.part`` cannot itself be the writer's temporary file (it must keep a fixed name to be resumed),
    so it is renamed into that file, which the writer fsyncs, renames over ``dest`` and makes durable by
    fsyncing the folder. Imported here: ``facerestore_cli.imagefile`` brings numpy and Pillow with it.
    """
    from facerestore_cli.imagefile import ImageFileError, atomic_write

    try:
        with atomic_write(dest) as tmp:
            os.replace(part, tmp)
    except ImageFileError as exc:
        raise DownloadError(f"cannot store the download as {dest}: {exc.detail}") from exc


def _download_once(
    url: str,
    part: Path,
    state: dict[str, Any],
    expected_size: int | None,
    timeout: float,
    bar: _Progress,
) -> None:
    """One HTTP request: append to (or restart) ``part``; return when it is complete, else raise."""
    # imported here, not at the top: http.client, email and ssl cost every start 30-40 ms otherwise
    import http.client
    import urllib.error
    import urllib.request

    offset = part.stat().st_size if part.exists() else 0
    total = state["total"]
    if total is not None and offset > total:
        part.unlink()
        offset = 0
    if total is not None and offset == total and offset > 0:
        return  # a complete .part from an earlier run
    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if state["validator"]:
            headers["If-Range"] = state["validator"]
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            if exc.code == 416 and offset:
                match = _CONTENT_RANGE.search(exc.headers.get("Content-Range", "") or "")
                if match and match.group(3) != "*" and int(match.group(3)) == offset:
                    state["total"] = offset
                    return  # the .part already holds the whole file
                part.unlink(missing_ok=True)
                raise _Retry("server cannot resume this partial file; restarting") from None
            if exc.code in _RETRY_STATUS:
                raise _Retry(f"HTTP {exc.code} {exc.reason}", _retry_after(exc.headers)) from None
            hint = " (check the URL)" if exc.code in (404, 410) else ""
            raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, str) and "unknown url type" in reason:
            raise DownloadError(f"{url}: {reason}") from None
        raise _Retry(f"request failed: {reason}", unresolved=isinstance(reason, socket.gaierror)) from None

    with response:
        status = response.status
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.strip().isdigit() else None
        if status == 206:
            match = _CONTENT_RANGE.search(response.headers.get("Content-Range", "") or "")
            if not match or match.group(1) is None:
                part.unlink(missing_ok=True)
                raise _Retry("server sent a partial response without a usable Content-Range; restarting")
            start, end = int(match.group(1)), int(match.group(2))
            total = int(match.group(3)) if match.group(3) != "*" else None
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start} instead of {offset}; restarting")
            if length is not None and length != end - start + 1:
                raise _Retry(f"Content-Length {length} disagrees with Content-Range {start}-{end}")
            mode = "ab"
        elif status == 200:
            if offset:
                log.info("%s ignored the range request; restarting from the beginning", url)
            offset = 0
            total = length
            mode = "wb"
        else:
            raise DownloadError(f"downloading {url} failed: unexpected HTTP {status}")
        if total is not None and expected_size is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url} is {total} bytes, expected {expected_size}: the source serves a different file")
        if status == 200 or state["validator"] is None:
            etag = response.headers.get("ETag")
            last_modified = response.headers.get("Last-Modified")
            # If-Range takes a strong ETag or else a date; weak ETags must not be used.
            state["validator"] = etag if etag and not etag.startswith("W/") else last_modified
        state["total"] = total
        bar.reset(offset, total)

        written = offset
        with open(part, mode) as f:
            while True:
                try:
                    # read1: return what has arrived, so a stall after some bytes keeps those bytes
                    chunk = response.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, IncompleteRead
                    f.flush()
                    os.fsync(f.fileno())
                    why = str(exc) or type(exc).__name__
                    raise _Retry(f"connection lost after {written} bytes ({why})") from None
                if not chunk:
                    break
                f.write(chunk)
                written += len(chunk)
                bar.advance(len(chunk))
                if total is not None and written > total:
                    break
            f.flush()
            os.fsync(f.fileno())
    if total is not None and written != total:
        if written > total:
            part.unlink(missing_ok=True)
            raise _Retry(f"server sent {written} bytes of a {total}-byte file; restarting")
        raise _Retry(f"connection closed after {written} of {total} bytes")


# -------------------------------------------------------------------------------------------- fetch


def _url_file_name(url: str, method: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name if name and not name.startswith(".") else f"{method}.pth"


def fetch(
    method: str,
    *,
    url: str | None = None,
    dest_dir: Path | str | None = None,
    timeout: float = 30.0,
    retries: int = 5,
    progress: bool = True,
    backoff: float = 1.0,
) -> ImportResult:
    """Download a method's official checkpoint and import it (see :func:`import_checkpoint`).

    The source is ``url`` if given, else ``$FACERESTORE_<METHOD>_URL`` (e.g. ``FACERESTORE_DMDNET_URL``,
    for mirrors), else the official release its model card declares. The download is kept in
    ``<dest_dir>/downloads/`` while incomplete, so running fetch again resumes it; it is deleted once
    imported.
    """
    from facerestore_cli.models import get_method

    try:
        official = get_method(method).official
    except KeyError as exc:
        raise WeightsError(str(exc.args[0])) from None
    env_name = f"FACERESTORE_{method.upper()}_URL"
    source_url = url or os.environ.get(env_name)
    if not source_url:
        if official is None:
            raise WeightsError(
                f"{method} has no public weights to fetch: the {method} weights facerestore uses were "
                "trained by this project and ship with it in weights/ (reinstall facerestore if they are "
                f"missing). To use your own checkpoint: facerestore weights import PATH --method {method}"
            )
        source_url = official.url
    is_official = official is not None and source_url == official.url
    dest_dir = Path(dest_dir).expanduser() if dest_dir is not None else user_weights_dir()
    downloaded = dest_dir / "downloads" / _url_file_name(source_url, method)
    try:
        download(
            source_url,
            downloaded,
            sha256=official.sha256 if is_official else None,
            expected_size=official.size if is_official else None,
            timeout=timeout,
            retries=retries,
            progress=progress,
            backoff=backoff,
        )
    except DownloadError as exc:  # offline, or a server that will not serve it: the file can come another way
        raise DownloadError(
            f"{exc}\nWithout a connection from here: download {source_url} on another machine, copy it here "
            f"and run: facerestore weights import {downloaded.name} --method {method}"
        ) from exc
    try:
        result = import_checkpoint(downloaded, method, dest_dir, extra_metadata={"source_url": source_url})
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}\n(the downloaded file is kept at {downloaded} for inspection)") from exc
    downloaded.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        downloaded.parent.rmdir()  # only if empty
    return result
