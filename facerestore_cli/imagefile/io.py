"""Loading and saving: the front door that picks a format from the bytes and turns failures into reasons.

The format modules know their own files; this one knows nothing about any format's insides. It reads the
file, sniffs the content (never the suffix), dispatches, applies orientation once, and maps whatever a
decoder raises to an :class:`ImageFileError`, so one bad photo in an album is a reported reason, not a
crash. Saving encodes in memory first and publishes with :func:`atomic_write`.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from facerestore_cli.imagefile.atomic import _write_bytes, atomic_write
from facerestore_cli.imagefile.bmp import _encode_bmp, _load_bmp
from facerestore_cli.imagefile.heif import _encode_heif, _load_heif
from facerestore_cli.imagefile.jpeg import _encode_jpeg, _load_jpeg
from facerestore_cli.imagefile.orientation import _apply_orientation
from facerestore_cli.imagefile.photo import (
    _SUFFIX_FORMATS,
    DEFAULT_MAX_PIXELS,
    ImageFileError,
    Photo,
    _heif_installed,
    format_for_suffix,
)
from facerestore_cli.imagefile.png import _encode_png, _load_png
from facerestore_cli.imagefile.tiff import _encode_tiff, _load_tiff
from facerestore_cli.imagefile.webp import _encode_webp, _load_webp

if TYPE_CHECKING:  # jpeg_blocks (and jpeglib) load only when a JPEG is patched
    from facerestore_cli.imagefile.jpeg_blocks import SourceBlocks

# --------------------------------------------------------------------------------------------------
# reading


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageFileError("unreadable", "no such file", path) from None
    except IsADirectoryError:
        raise ImageFileError("unreadable", "is a folder, not a photo file", path) from None
    except PermissionError as exc:
        raise ImageFileError("unreadable", f"permission denied ({exc.strerror or exc})", path) from None
    except OSError as exc:
        raise ImageFileError("unreadable", f"cannot be read: {exc.strerror or exc}", path) from None


_BMP_HEADER_SIZES = frozenset(struct.pack("<I", n) for n in (12, 40, 52, 56, 64, 108, 124))
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})


def _sniff(data: bytes, path: Path) -> str:
    """Identify the format from the content, never the suffix (a .jpg may be a PNG, or a text file)."""
    head = data[:4096]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 26 and head[14:18] in _BMP_HEADER_SIZES:
        return "BMP"
    if head[4:8] == b"ftyp":
        box = int.from_bytes(head[:4], "big")
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(box, len(head)) - 3, 4)}
        if head[8:12] in (b"avif", b"avis"):
            raise ImageFileError("unsupported", "AVIF images are not supported; convert to JPEG or PNG", path)
        if brands & _HEIF_BRANDS:
            return "HEIF"
        if head[8:12] == b"crx ":
            raise ImageFileError("unsupported", "camera raw files (CR3) are not supported", path)
        raise ImageFileError(
            "unsupported", f"ISO media file of type {head[8:12].decode('latin-1')!r} is not a photo", path
        )
    others = [
        (b"GIF8", "GIF"),
        (b"8BPS", "Photoshop PSD"),
        (b"\x00\x00\x01\x00", "ICO"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
        (b"\xff\x4f\xff\x51", "JPEG 2000"),
        (b"\xff\x0a", "JPEG XL"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
        (b"qoif", "QOI"),
        (b"v/1\x01", "OpenEXR"),
        (b"#?RADIANCE", "Radiance HDR"),
        (b"FUJIFILMCCD-RAW", "Fujifilm RAF raw"),
        (b"%PDF", "PDF"),
        (b"%!PS", "PostScript"),
    ]
    for magic, name in others:
        if head.startswith(magic):
            raise ImageFileError("unsupported", f"{name} files are not supported; {_supported_list()}", path)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if (text.startswith((b"<?xml", b"<!doctype svg", b"<svg")) and b"<svg" in text) or (
        head[:2] == b"\x1f\x8b" and path.suffix.lower() == ".svgz"
    ):
        raise ImageFileError("unsupported", f"SVG vector images are not supported; {_supported_list()}", path)
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n":
        raise ImageFileError("unsupported", f"PNM/PPM images are not supported; {_supported_list()}", path)
    kind = "it contains text" if _looks_like_text(head) else "its content matches no image format"
    raise ImageFileError("not-an-image", f"is not an image file ({kind}; {_supported_list()})", path)


def _supported_list() -> str:
    names = ["JPEG", "PNG", "WebP", "BMP", "TIFF"] + (["HEIF"] if _heif_installed() else [])
    return "supported: " + ", ".join(names)


def _looks_like_text(head: bytes) -> bool:
    try:
        sample = head[:1024].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in sample)


def load_photo(path: Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Photo:
    """Read a photo file into display orientation with all its metadata, or say clearly why not.

    The size is checked against ``max_pixels`` from the header, before any decoding. Truncation is
    detected from the file structure, so Pillow's global ``LOAD_TRUNCATED_IMAGES`` cannot hide it.
    The file is only ever opened for reading.
    """
    path = Path(path)
    data = _read_file(path)
    if not data:
        raise ImageFileError("empty", "the file is empty (0 bytes)", path)
    fmt = _sniff(data, path)
    loader = {
        "JPEG": _load_jpeg,
        "PNG": _load_png,
        "WEBP": _load_webp,
        "BMP": _load_bmp,
        "TIFF": _load_tiff,
        "HEIF": _load_heif,
    }[fmt]
    try:
        photo = loader(data, path, max_pixels)
    except ImageFileError as exc:
        if exc.path is None:
            raise ImageFileError(exc.reason, exc.detail, path) from None
        raise
    except MemoryError:
        raise ImageFileError("too-large", "not enough memory to decode it", path) from None
    except Image.DecompressionBombError as exc:  # Pillow's own limit, when max_pixels is above it
        raise ImageFileError("too-large", str(exc), path) from None
    except Exception as exc:  # decoders raise anything from SyntaxError to struct.error on bad data
        text = str(exc)
        reason = "truncated" if "truncated" in text.lower() else "corrupt"
        what = "is truncated" if reason == "truncated" else "is damaged"
        raise ImageFileError(reason, f"the {fmt} data {what} ({type(exc).__name__}: {text})", path) from exc
    photo.source = path
    already_upright = photo.info.pop("_upright", False)
    orientation = photo.info.get("orientation", 1)
    if orientation != 1 and not already_upright:
        photo.pixels = _apply_orientation(photo.pixels, orientation)
    return photo


# --------------------------------------------------------------------------------------------------
# writing


def save_photo(
    photo: Photo,
    path: Path,
    *,
    format: str | None = None,
    quality: int = 95,
    overwrite: bool = True,
) -> None:
    """Write a photo atomically with its metadata, in ``format`` or the one its suffix names.

    The file is encoded in memory first, so an encoder error never touches the disk, then published
    with :func:`atomic_write`: an existing file is either fully replaced or left as it was.
    ``quality`` applies to lossy outputs only (JPEG, lossy WebP, HEIF).
    """
    path = Path(path)
    fmt = _normalise_format(format, path)
    if not overwrite and os.path.lexists(path):
        raise ImageFileError("exists", "already exists and overwriting was not allowed", path)
    try:
        data = _ENCODERS[fmt](photo, quality, path)
    except ImageFileError:
        raise
    except Exception as exc:  # encoders raise ValueError, OSError, struct.error, RuntimeError...
        raise ImageFileError("unwritable", f"could not encode it as {fmt}: {exc}", path) from exc
    with atomic_write(path, overwrite=overwrite) as tmp:
        _package_write_bytes()(tmp, data)


def save_like_source(
    photo: Photo,
    path: Path,
    *,
    source: bytes,
    original: np.ndarray,
    luma_only: bool = False,
    blocks: SourceBlocks | None = None,
    changed_within: Sequence[tuple[slice, slice]] | None = None,
) -> str:
    """Write a restored JPEG so that nothing away from its faces changes, and say how it was written.

    ``source`` is the input file's bytes and ``original`` its decoded pixels (what ``photo`` was made
    from). Where the file allows it, only the MCUs whose pixels changed are re-encoded, with the
    source's own tables (:mod:`.jpeg_blocks`): every other block decodes bit-identically and the file
    stays the source's size. Otherwise (EXIF orientation, CMYK, arithmetic or 12-bit coding, a changed
    size) the photo is re-encoded whole at the source's own estimated quality and sampling, never at
    a fixed one. ``luma_only``: a monochrome or toned photo, whose chroma blocks are kept as they were.
    ``blocks``: ``source``'s coefficients read ahead (``jpeg_blocks.read_source_blocks``), to save
    reading them here. ``changed_within``: the only (row, column) slices where ``photo`` may differ from
    ``original`` (the pasted faces' regions), so that the comparison need not cover the whole photo; a
    change outside them is not written (those MCUs keep the source's blocks).
    """
    from facerestore_cli.imagefile.jpeg_blocks import estimate_quality, inspect_jpeg, patch_jpeg_with_stats

    path = Path(path)
    layout = inspect_jpeg(source)
    reason = layout.reason
    if reason is None and original.shape != photo.pixels.shape:
        reason = "the photo changed size"
    if reason is None:
        changed = _changed(photo.pixels, original, changed_within)
        try:
            result = patch_jpeg_with_stats(source, photo.pixels, changed, luma_only=luma_only, source=blocks)
        except (ValueError, RuntimeError) as exc:  # a layout the patcher cannot keep exactly
            reason = str(exc)
        else:
            with atomic_write(path) as tmp:
                _package_write_bytes()(tmp, result.data)
            return f"blocks: {result.reencoded_mcus} of {result.total_mcus} MCUs re-encoded with the source's tables"
    quality = estimate_quality(source)
    save_photo(photo, path, quality=quality)
    return f"re-encoded at the source's quality {quality} ({reason})"


def _changed(pixels: np.ndarray, original: np.ndarray, within: Sequence[tuple[slice, slice]] | None) -> np.ndarray:
    """Where ``pixels`` differ from ``original`` (HxW bool), looking only ``within`` those slices if given."""
    if within is None:
        changed = pixels != original
        return changed.any(axis=2) if changed.ndim == 3 else changed
    changed = np.zeros(pixels.shape[:2], dtype=bool)
    for where in within:
        diff = pixels[where] != original[where]
        changed[where] |= diff.any(axis=2) if diff.ndim == 3 else diff
    return changed


def _normalise_format(format: str | None, path: Path) -> str:
    if format is None:
        try:
            return format_for_suffix(path.suffix)
        except ImageFileError as exc:
            raise ImageFileError("unsupported", exc.detail + "; pass format= explicitly", path) from None
    name = format.upper().lstrip(".")
    name = {"JPG": "JPEG", "TIF": "TIFF", "HEIC": "HEIF"}.get(name, name)
    if name not in set(_SUFFIX_FORMATS.values()):
        raise ImageFileError("unsupported", f"cannot write format {format!r}", path)
    return name


_ENCODERS = {
    "JPEG": _encode_jpeg,
    "PNG": _encode_png,
    "WEBP": _encode_webp,
    "BMP": _encode_bmp,
    "TIFF": _encode_tiff,
    "HEIF": _encode_heif,
}


def _package_write_bytes() -> Callable[[Path, bytes], None]:
    """The package's ``_write_bytes``, looked up at each save rather than bound at import.

    Tests interrupt saves (disk full, Ctrl-C) by replacing ``facerestore_cli.imagefile._write_bytes``;
    a name bound here at import would bypass them and the interruption paths would go untested.
    """
    package = sys.modules.get(__package__ or "")
    return getattr(package, "_write_bytes", _write_bytes)
