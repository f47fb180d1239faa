"""Reading and writing photo files without losing anything.

People run face restoration over albums they care about, and every other tool quietly drops something on
the way: the EXIF dates and GPS, the colour profile, the rotation, the alpha channel, the 16th bit of a
scan, or (on a crash or a full disk) the file itself. This module is the one place that touches photo
files, so that the rest of the pipeline can work on plain arrays and trust that saving puts everything
else back.

What a :class:`Photo` holds
---------------------------
``pixels`` are in *display* orientation (EXIF/TIFF orientation already applied), RGB channel order, and
keep the file's own sample type: ``uint8`` or ``uint16``; grey stays grey (HxW, or HxWx2 with alpha).
``exif``, ``icc_profile`` and ``xmp`` are the metadata blocks as read (EXIF without the ``Exif\\0\\0``
prefix, so it always starts with a TIFF header). On save the EXIF and XMP orientation are reset to 1,
because the pixels are already upright; everything else in them is written back unchanged, and the
EXIF block is patched in place rather than re-encoded, so maker notes survive.

The only conversions that change pixel values are deliberate and recorded in ``info["converted_from"]``:
palette (``P``), 1-bit, colour-key transparency (PNG ``tRNS``) and CMYK images are expanded to
grey/RGB(A) on read, because nothing downstream can restore faces in a palette; they are saved back as
RGB(A) (PNG stays lossless). Saving to a format that cannot hold what the photo has is either converted
explicitly (16-bit to 8-bit for JPEG, WebP and BMP; grey+alpha to RGBA for WebP and BMP) or refused
(alpha to JPEG), never silently approximated.

Format notes
------------
* JPEG: saved at ``quality`` (95 by default, not Pillow's 75) with the source's chroma subsampling, or
  4:4:4 when the source was not a JPEG. APP13 (IPTC), extended XMP, comments and other application
  segments of a JPEG source are carried to a JPEG output. MPO/multi-picture JPEGs load their first
  picture; gain maps and previews are not carried.
* PNG: ancillary chunks (text, gAMA/cHRM/sRGB/cICP, pHYs, ...) are copied verbatim; 16-bit PNGs are
  decoded with OpenCV because Pillow cannot hold 16-bit colour.
* WebP: lossless (VP8L) sources are saved lossless with exact RGB under transparent pixels; lossy ones
  at ``quality``. Animated WebP/APNG/multi-page TIFF are refused: restoring one frame would drop the rest.
* TIFF: written by this module (baseline, deflate + predictor unless the source was uncompressed) at 8 or
  16 bits, with descriptive tags, the EXIF and GPS sub-IFDs, ICC (34675), XMP (700), IPTC and Photoshop
  tags. Associated (premultiplied) alpha is kept as stored and written back as such. Camera raw files
  (DNG, CR2, NEF, ...) are refused rather than read as their small preview. Maker notes inside a TIFF's
  own EXIF sub-IFD are copied, but their internal offsets cannot be guaranteed after re-layout.
* BMP: holds no EXIF/ICC/XMP, so those are not written to it; RGBA is written as a 32-bit BMP with an
  explicit alpha mask (Pillow's plain 32-bit BMP loses the alpha when read back).
* HEIF/HEIC: needs the optional ``pillow-heif`` (``pip install facerestore-cli[heif]``), imported only
  when a HEIF file is met. libheif already applies the HEIF rotation, so the EXIF orientation is not
  applied again. 10/12-bit HEIF loads as ``uint16`` and is saved at 10 bits.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import re
import secrets
import stat
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import (
    BmpImagePlugin,
    Image,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    TiffTags,
    WebPImagePlugin,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "ImageFileError",
    "Photo",
    "atomic_write",
    "format_for_suffix",
    "is_colourless",
    "load_photo",
    "rgb8",
    "save_photo",
]

#: Refuse images with more pixels than this before decoding them (the same number as Pillow's hard
#: decompression-bomb limit): a 30 KB PNG can otherwise claim 30000x30000 and take 3.6 GB to decode.
DEFAULT_MAX_PIXELS: int = 178_956_970

_SUFFIX_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".heic": "HEIF",
    ".heif": "HEIF",
}
_HEIF_HINT = "install HEIF support with: pip install facerestore-cli[heif]"


def _heif_installed() -> bool:
    return importlib.util.find_spec("pillow_heif") is not None


#: Suffixes this installation can read and write (HEIC/HEIF only when pillow-heif is installed).
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    s for s, f in _SUFFIX_FORMATS.items() if f != "HEIF" or _heif_installed()
)

_REASONS = frozenset(
    {
        "empty",
        "truncated",
        "corrupt",
        "not-an-image",
        "unsupported",
        "too-large",
        "unreadable",
        "unwritable",
        "disk-full",
        "exists",
    }
)


class ImageFileError(Exception):
    """A photo could not be read or written; ``reason`` is a stable code for reports and exit codes.

    The pipeline records the reason per image and carries on with the album, so one bad file must
    never look like a crash, and the message must tell a user which file and what to do.
    """

    def __init__(self, reason: str, message: str, path: Path | str | None = None) -> None:
        if reason not in _REASONS:
            raise ValueError(f"unknown ImageFileError reason {reason!r}")
        self.reason = reason
        self.path = Path(path) if path is not None else None
        self.detail = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


@dataclass
class Photo:
    """One photo in display orientation, plus everything needed to write it back faithfully.

    ``info`` carries format details that have no common field (``dpi``, ``jpeg_subsampling``,
    ``png_chunks``, ``webp_lossless``, ``tiff_compression``, ``orientation`` as read, ``converted_from``,
    ...); extras that only make sense in the source's own format are written back only to that format.
    """

    pixels: np.ndarray
    format: str
    exif: bytes | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def __post_init__(self) -> None:
        px = self.pixels
        if px.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Photo pixels must be uint8 or uint16, not {px.dtype}")
        if px.ndim == 3 and px.shape[2] == 1:
            self.pixels = px = px[:, :, 0]
        if not (px.ndim == 2 or (px.ndim == 3 and px.shape[2] in (2, 3, 4))):
            raise ValueError(f"Photo pixels must be HxW or HxWx{{2,3,4}}, not {px.shape}")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[2])

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def is_grey(self) -> bool:
        return self.channels in (1, 2)

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8


# --------------------------------------------------------------------------------------------------
# small public helpers


def format_for_suffix(suffix: str) -> str:
    """Map a file suffix (``.JPG``, ``tif``) to the format name :func:`save_photo` writes.

    HEIF is named even when pillow-heif is missing, so that the error says what to install rather than
    that the suffix is unknown.
    """
    key = suffix.lower()
    if key and not key.startswith("."):
        key = "." + key
    try:
        return _SUFFIX_FORMATS[key]
    except KeyError:
        known = ", ".join(sorted(_SUFFIX_FORMATS))
        raise ImageFileError("unsupported", f"unknown photo suffix {suffix!r} (known: {known})") from None


def rgb8(photo_or_pixels: Photo | np.ndarray) -> np.ndarray:
    """The HxWx3 uint8 RGB image detectors and landmarkers expect, whatever the photo's depth or layout.

    16-bit values are rounded to the nearest 8-bit level, grey is replicated and alpha dropped. An
    array that is already HxWx3 uint8 is returned as is (no copy), so do not write into the result.
    """
    px = photo_or_pixels.pixels if isinstance(photo_or_pixels, Photo) else np.asarray(photo_or_pixels)
    if px.dtype == np.uint16:
        px = _to_uint8(px)
    elif px.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, not {px.dtype}")
    if px.ndim == 2:
        return np.repeat(px[:, :, None], 3, axis=2)
    channels = px.shape[2]
    if channels in (1, 2):
        return np.repeat(px[:, :, :1], 3, axis=2)
    if channels == 3:
        return px
    if channels == 4:
        return np.ascontiguousarray(px[:, :, :3])
    raise ValueError(f"expected HxW or HxWx{{1,2,3,4}} pixels, not {px.shape}")


def is_colourless(photo_or_pixels: Photo | np.ndarray, tolerance: int = 3) -> bool:
    """Whether an RGB photo is really black-and-white (an old print scanned or saved as RGB).

    Restorers paint colour into faces; the pipeline uses this to turn the restored face back to grey
    so a B/W photo does not get one colourful face. ``tolerance`` is in 8-bit levels (scaled for 16-bit
    photos) and one pixel in a thousand may exceed it, which absorbs JPEG chroma noise and dust.
    """
    px = photo_or_pixels.pixels if isinstance(photo_or_pixels, Photo) else np.asarray(photo_or_pixels)
    if px.ndim == 2 or px.shape[2] < 3:
        return True
    rgb = px[:, :, :3]
    limit = tolerance * (257 if px.dtype == np.uint16 else 1)

    def exceeding(sample: np.ndarray) -> tuple[int, int]:
        # max - min in the photo's own dtype cannot wrap (max >= min), so no widening copy is needed
        spread = sample.max(axis=2) - sample.min(axis=2)
        return int(np.count_nonzero(spread > limit)), spread.size

    # A colour photo is recognised from a sparse sample; only a (nearly) grey one is scanned more finely.
    coarse = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 10_000)))
    n, size = exceeding(rgb[::coarse, ::coarse])
    if n > size // 100:
        return False
    # a fixed stride keeps this O(1 Mpx) on 40 Mpx scans without changing the answer for real photos
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 1_000_000)))
    n, size = exceeding(rgb[::step, ::step])
    return n <= size // 1000


def _to_uint8(px: np.ndarray) -> np.ndarray:
    """Round 16-bit samples to the nearest 8-bit level (x/257, half up): exact for 8-bit-in-16 data."""
    return ((px.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# atomic writes


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


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in chunks (the OS boundary that the tests interrupt)."""
    view = memoryview(data)
    with open(path, "wb") as fh:
        for start in range(0, len(view), 1 << 22):
            fh.write(view[start : start + (1 << 22)])


# --------------------------------------------------------------------------------------------------
# EXIF / XMP orientation without re-encoding


def _strip_exif_prefix(exif: bytes | None) -> bytes | None:
    if not exif:
        return None
    exif = bytes(exif)
    if exif.startswith(b"Exif\x00\x00"):
        exif = exif[6:]
    return exif or None


def _ifd0_orientation_offset(tiff: bytes) -> tuple[int, str, int] | None:
    """Locate the Orientation value in IFD0 of a TIFF structure (an EXIF block or a TIFF file).

    Returns (offset of the value, struct byte order, type) so that it can be read or patched in place:
    patching rather than re-serialising keeps every other byte, including maker notes whose internal
    offsets a re-encode would break.
    """
    if len(tiff) < 8:
        return None
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    magic = struct.unpack(order + "H", tiff[2:4])[0]
    if magic == 42:
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        count_fmt, count_size, entry_size, value_size = "H", 2, 12, 4
    elif magic == 43 and len(tiff) >= 16:  # BigTIFF
        (ifd,) = struct.unpack(order + "Q", tiff[8:16])
        count_fmt, count_size, entry_size, value_size = "Q", 8, 20, 8
    else:
        return None
    if ifd + count_size > len(tiff):
        return None
    (count,) = struct.unpack(order + count_fmt, tiff[ifd : ifd + count_size])
    pos = ifd + count_size
    for _ in range(min(count, 4096)):
        if pos + entry_size > len(tiff):
            return None
        tag, typ = struct.unpack(order + "HH", tiff[pos : pos + 4])
        if tag == 0x0112 and typ in (3, 4):  # SHORT (or a non-conforming LONG)
            value_at = pos + entry_size - value_size
            return value_at, order, typ
        pos += entry_size
    return None


def _read_orientation(tiff: bytes | None) -> int | None:
    if not tiff:
        return None
    found = _ifd0_orientation_offset(tiff)
    if found is None:
        return None
    at, order, typ = found
    value = struct.unpack(order + ("H" if typ == 3 else "I"), tiff[at : at + (2 if typ == 3 else 4)])[0]
    return value if 1 <= value <= 8 else None


def _with_orientation_1(tiff: bytes) -> bytes:
    found = _ifd0_orientation_offset(tiff)
    if found is None:
        return tiff
    at, order, typ = found
    packed = struct.pack(order + ("H" if typ == 3 else "I"), 1)
    return tiff[:at] + packed + tiff[at + len(packed) :]


_XMP_ORIENT_ATTR = re.compile(rb"(tiff:Orientation\s*=\s*[\"'])\s*(\d+)\s*([\"'])")
_XMP_ORIENT_ELEM = re.compile(rb"(<tiff:Orientation>\s*)(\d+)(\s*</tiff:Orientation>)")


def _xmp_orientation(xmp: bytes | None) -> int | None:
    if not xmp:
        return None
    match = _XMP_ORIENT_ATTR.search(xmp) or _XMP_ORIENT_ELEM.search(xmp)
    if match is None:
        return None
    value = int(match.group(2))
    return value if 1 <= value <= 8 else None


def _xmp_with_orientation_1(xmp: bytes) -> bytes:
    xmp = _XMP_ORIENT_ATTR.sub(rb"\g<1>1\g<3>", xmp)
    return _XMP_ORIENT_ELEM.sub(rb"\g<1>1\g<3>", xmp)


def _apply_orientation(px: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright as EXIF orientation 1-8 prescribes (a pure permutation of pixels)."""
    if orientation == 2:
        px = px[:, ::-1]
    elif orientation == 3:
        px = px[::-1, ::-1]
    elif orientation == 4:
        px = px[::-1]
    elif orientation == 5:
        px = px.swapaxes(0, 1)
    elif orientation == 6:
        px = px.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:
        px = px.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        px = px.swapaxes(0, 1)[::-1]
    return np.ascontiguousarray(px)


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


_RAW_SUFFIXES = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf"}
    | {".pef", ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".dcr", ".mrw", ".mos", ".iiq", ".rwl"}
)
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


def _check_pixels(width: int, height: int, max_pixels: int | None, path: Path) -> None:
    if width <= 0 or height <= 0:
        raise ImageFileError("corrupt", f"the header claims an empty image ({width}x{height})", path)
    if max_pixels is not None and width * height > max_pixels:
        raise ImageFileError(
            "too-large",
            f"{width}x{height} = {width * height:,} pixels is more than the limit of {max_pixels:,}; "
            "raise max_pixels if this is a genuine photo",
            path,
        )


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


def _orientation_of(exif: bytes | None, xmp: bytes | None) -> int:
    return _read_orientation(exif) or _xmp_orientation(xmp) or 1


def _pixels_from_pil(im: Image.Image, info: dict[str, Any], icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    """Turn a decoded Pillow image into our array layout; the only place modes get expanded."""
    mode = im.mode
    transparency = im.info.get("transparency")
    if mode in ("L", "RGB") and transparency is not None:
        info["converted_from"] = f"{mode} with a transparent colour"
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode in ("P", "PA"):
        palette_alpha = im.palette is not None and im.palette.mode == "RGBA"
        has_alpha = mode == "PA" or transparency is not None or palette_alpha
        info["converted_from"] = mode
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        info["converted_from"] = "1"
        im = im.convert("L")
    elif mode in ("RGBX", "YCbCr"):
        im = im.convert("RGB")
    elif mode in ("RGBa", "La"):
        info["premultiplied_alpha"] = True  # keep the stored values; written back as associated alpha
    elif mode == "CMYK":
        info["converted_from"] = "CMYK"
        im, icc = _cmyk_to_rgb(im, icc)
    elif mode.startswith("I;16"):
        return np.array(im).astype(np.uint16), icc
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageFileError("unsupported", f"pixel mode {mode} (float or 32-bit samples) is not supported")
    return np.array(im), icc


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Convert through the embedded CMYK profile when there is one; a naive conversion shifts colours."""
    if icc:
        try:
            from PIL import ImageCms

            srgb = ImageCms.createProfile("sRGB")
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")
            if out is not None:
                return out, ImageCms.ImageCmsProfile(srgb).tobytes()
        except Exception:  # any broken or unusual profile: fall back to the plain conversion
            pass
    return im.convert("RGB"), None


# JPEG ---------------------------------------------------------------------------------------------


def _jpeg_is_truncated(data: bytes) -> bool:
    """Walk the JPEG markers to EOI; running out of data first means the file was cut short."""
    n = len(data)
    pos = 2
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            return True
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return False
        if marker == 0x01 or 0xD0 <= marker <= 0xD8 or marker == 0x00:
            pos += 2
            continue
        if pos + 4 > n:
            return True
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > n:
            return True
        pos = end
        if marker == 0xDA:  # entropy-coded data runs to the next real marker
            while True:
                j = data.find(b"\xff", pos)
                if j < 0 or j + 1 >= n:
                    return True
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    pos = j + 2
                elif nxt == 0xFF:
                    pos = j + 1
                else:
                    pos = j
                    break


_JPEG_DROPPED_APP = (
    b"Exif\x00\x00",  # own field
    b"http://ns.adobe.com/xap/1.0/\x00",  # own field
    b"ICC_PROFILE\x00",  # own field
    b"MPF\x00",  # multi-picture index: the other pictures are not carried
    b"FPXR\x00",  # FlashPix extension of the original encoding
)


def _jpeg_carried_segments(im: JpegImagePlugin.JpegImageFile) -> bytes:
    """Application segments worth carrying to a JPEG output, as raw marker bytes (IPTC, extended XMP...).

    APP0 (JFIF), APP11 (JUMBF/C2PA: signatures about the original pixels) and APP14 (Adobe colour
    transform of the original encoding) are regenerated or meaningless after re-encoding.
    """
    out = bytearray()
    for name, payload in getattr(im, "applist", []):
        if not name.startswith("APP"):
            continue
        n = int(name[3:])
        if n in (0, 11, 14) or payload.startswith(_JPEG_DROPPED_APP):
            continue
        if len(payload) + 2 > 0xFFFF:
            continue
        out += bytes((0xFF, 0xE0 + n)) + struct.pack(">H", len(payload) + 2) + payload
    return bytes(out)


def _load_jpeg(data: bytes, path: Path, max_pixels: int | None) -> Photo:
    if _jpeg_is_truncated(data):
        raise ImageFileError("truncated", "the JPEG file is truncated (it ends before its end marker)", path)
    im = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    _check_pixels(im.width, im.height, max_pixels, path)
    info: dict[str, Any] = {}
    exif = _strip_exif_prefix(im.info.get("exif"))
    icc = im.info.get("icc_profile") or None
    xmp = im.info.get("xmp") or None
    sampling = JpegImagePlugin.get_sampling(im)
    if sampling != -1:
        info["jpeg_subsampling"] = sampling
    if "dpi" in im.info:
        info["dpi"] = tuple(float(v) for v in im.info["dpi"])
    if im.info.get("comment"):
        info["jpeg_comment"] = im.info["comment"]
    segments = _jpeg_carried_segments(im)
    if segments:
        info["jpeg_segments"] = segments
    orientation = _orientation_of(exif, xmp)
    if orientation != 1:
        info["orientation"] = orientation
    im.load()
    pixels, icc = _pixels_from_pil(im, info, icc)
    return Photo(pixels, "JPEG", exif, icc, xmp, info)


# PNG ----------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = frozenset(
    {b"gAMA", b"cHRM", b"sRGB", b"cICP", b"mDCV", b"cLLI", b"pHYs"}
    | {b"tEXt", b"zTXt", b"iTXt", b"oFFs", b"pCAL", b"sCAL", b"sTER"}
)
_PNG_DEPTH_BOUND = frozenset({b"sBIT", b"bKGD"})  # only valid for the same colour type and depth
_PNG_DROP = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"hIST", b"sPLT", b"tIME"}
    | {b"iCCP", b"eXIf", b"acTL", b"fcTL", b"fdAT"}
)
_XMP_KEYWORD = b"XML:com.adobe.xmp"


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def _png_chunks(data: bytes, path: Path) -> list[tuple[bytes, int, int]]:
    """List (type, payload start, payload end) up to IEND, checking every CRC.

    A missing IEND means a cut-off download or copy ("truncated"); a bad CRC means damaged data inside
    an intact file ("corrupt").
    """
    view = memoryview(data)
    n = len(data)
    pos = 8
    chunks: list[tuple[bytes, int, int]] = []
    while True:
        if pos + 8 > n:
            raise ImageFileError("truncated", "the PNG file is truncated (no IEND chunk)", path)
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        if length > 0x7FFFFFFF or not ctype.isalpha():
            raise ImageFileError("corrupt", f"the PNG chunk structure is damaged at byte {pos}", path)
        start, end = pos + 8, pos + 8 + length
        if end + 4 > n:
            raise ImageFileError("truncated", f"the PNG file is cut off inside its {ctype.decode()} chunk", path)
        crc = zlib.crc32(view[start:end], zlib.crc32(ctype))
        if crc != struct.unpack(">I", data[end : end + 4])[0]:
            raise ImageFileError("corrupt", f"the PNG {ctype.decode()} chunk fails its checksum", path)
        if not chunks and ctype != b"IHDR":
            raise ImageFileError("corrupt", "the PNG file does not start with an IHDR chunk", path)
        chunks.append((ctype, start, end))
        pos = end + 4
        if ctype == b"IEND":
            return chunks


def _inflate(payload: bytes, limit: int = 64 << 20) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(payload, limit)
    if inflater.unconsumed_tail:
        raise ValueError("compressed metadata expands beyond 64 MB")
    return out


def _parse_itxt(payload: bytes) -> tuple[bytes, bytes] | None:
    try:
        keyword, rest = payload.split(b"\x00", 1)
        compressed, rest = rest[0], rest[2:]
        _language, rest = rest.split(b"\x00", 1)
        _translated, text = rest.split(b"\x00", 1)
    except (ValueError, IndexError):
        return None
    return keyword, _inflate(text) if compressed else text


def _load_png(data: bytes, path: Path, max_pixels: int | None) -> Photo:
    if len(data) < 33:
        raise ImageFileError("truncated", "the PNG file is truncated (its header is incomplete)", path)
    if data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise ImageFileError("corrupt", "the PNG file does not start with a valid IHDR chunk", path)
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    _check_pixels(width, height, max_pixels, path)
    chunks = _png_chunks(data, path)
    if any(c[0] == b"acTL" for c in chunks):
        raise ImageFileError("unsupported", "animated PNG (APNG) files are not supported", path)
    info: dict[str, Any] = {"png_ihdr": (depth, colour_type)}
    exif = icc = xmp = None
    kept: list[tuple[bytes, bytes]] = []
    for ctype, start, end in chunks:
        payload = bytes(data[start:end]) if ctype != b"IDAT" else b""
        if ctype == b"iCCP":
            name, _, rest = payload.partition(b"\x00")
            icc = _inflate(rest[1:]) or None
            info["png_icc_name"] = name
        elif ctype == b"eXIf":
            exif = _strip_exif_prefix(payload)
        elif ctype == b"iTXt" and payload.startswith(_XMP_KEYWORD + b"\x00"):
            parsed = _parse_itxt(payload)
            if parsed is not None:
                xmp = parsed[1]
        elif ctype == b"pHYs" and len(payload) == 9:
            x, y, unit = struct.unpack(">IIB", payload)
            if unit == 1:
                info["dpi"] = (x * 0.0254, y * 0.0254)
            kept.append((ctype, payload))
        elif ctype in _PNG_KEEP or ctype in _PNG_DEPTH_BOUND:
            kept.append((ctype, payload))
        elif ctype not in _PNG_DROP and ctype[:1].islower() and ctype[3:4].islower():
            kept.append((ctype, payload))  # unknown ancillary chunk marked safe-to-copy
    if kept:
        info["png_chunks"] = kept
    orientation = _orientation_of(exif, xmp)
    if orientation != 1:
        info["orientation"] = orientation
    if depth == 16:
        pixels = _decode_png16(data, chunks, colour_type, path)
        key = next((bytes(data[a:b]) for c, a, b in chunks if c == b"tRNS"), None)
        if key is not None and colour_type in (0, 2):
            pixels = _apply_colour_key(pixels, key, colour_type)
            info["converted_from"] = ("L" if colour_type == 0 else "RGB") + " with a transparent colour"
    else:
        # Pillow sees only what it needs for pixels: metadata is already parsed above, and Pillow's
        # own text-chunk size limits must not fail a valid photo
        stream = _png_stream(data, chunks, (b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"))
        im = PngImagePlugin.PngImageFile(io.BytesIO(stream))
        im.load()
        pixels, icc = _pixels_from_pil(im, info, icc)
    return Photo(pixels, "PNG", exif, icc, xmp, info)


def _png_stream(data: bytes, chunks: list[tuple[bytes, int, int]], keep: tuple[bytes, ...]) -> bytes:
    stream = bytearray(_PNG_SIGNATURE)
    for ctype, start, end in chunks:
        if ctype in keep:
            stream += data[start - 8 : end + 4]
    return bytes(stream)


def _decode_png16(data: bytes, chunks: list[tuple[bytes, int, int]], colour_type: int, path: Path) -> np.ndarray:
    """Decode a 16-bit PNG with OpenCV (Pillow would cut colour to 8 bits).

    Only IHDR and IDAT are handed over, so OpenCV cannot rotate by an eXIf chunk on its own; a
    transparent colour (tRNS) is turned into alpha by the caller, as for 8-bit PNGs.
    """
    import cv2

    stream = _png_stream(data, chunks, (b"IHDR", b"IDAT", b"IEND"))
    decoded = cv2.imdecode(np.frombuffer(stream, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16:
        raise ImageFileError("corrupt", "the 16-bit PNG image data could not be decoded", path)
    if decoded.ndim == 2:
        return decoded
    if colour_type == 4:  # grey+alpha comes back as BGRA with B=G=R
        return np.ascontiguousarray(decoded[:, :, [0, 3]])
    return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def _apply_colour_key(pixels: np.ndarray, key: bytes, colour_type: int) -> np.ndarray:
    """Expand a PNG tRNS colour key to an alpha channel (0 where the colour matches, else opaque)."""
    if colour_type == 0 and len(key) >= 2 and pixels.ndim == 2:
        opaque = pixels != struct.unpack(">H", key[:2])[0]
        return np.dstack([pixels, np.where(opaque, 65535, 0).astype(np.uint16)])
    if colour_type == 2 and len(key) >= 6 and pixels.ndim == 3 and pixels.shape[2] == 3:
        opaque = np.any(pixels != np.array(struct.unpack(">HHH", key[:6]), np.uint16), axis=2)
        return np.dstack([pixels, np.where(opaque, 65535, 0).astype(np.uint16)])
    return pixels


# WebP ---------------------------------------------------------------------------------------------


def _load_webp(data: bytes, path: Path, max_pixels: int | None) -> Photo:
    riff_size = struct.unpack("<I", data[4:8])[0]
    if len(data) < 8 + riff_size or len(data) < 20:
        raise ImageFileError("truncated", "the WebP file is truncated (shorter than its header says)", path)
    lossless = False
    pos = 12
    while pos + 8 <= 8 + riff_size:
        fourcc, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if fourcc in (b"ANIM", b"ANMF"):
            raise ImageFileError("unsupported", "animated WebP files are not supported", path)
        if fourcc == b"VP8L":
            lossless = True
        pos += 8 + size + (size & 1)
    im = WebPImagePlugin.WebPImageFile(io.BytesIO(data))
    _check_pixels(im.width, im.height, max_pixels, path)
    info: dict[str, Any] = {"webp_lossless": lossless}
    exif = _strip_exif_prefix(im.info.get("exif"))
    icc = im.info.get("icc_profile") or None
    xmp = im.info.get("xmp") or None
    orientation = _orientation_of(exif, xmp)
    if orientation != 1:
        info["orientation"] = orientation
    im.load()
    pixels, icc = _pixels_from_pil(im, info, icc)
    return Photo(pixels, "WEBP", exif, icc, xmp, info)


# BMP ----------------------------------------------------------------------------------------------


def _bmp_is_truncated(data: bytes) -> bool:
    if len(data) < 26:
        return True
    (declared,) = struct.unpack("<I", data[2:6])
    if declared > len(data) and declared - len(data) > 2:  # some writers count a 2-byte pad
        return True
    offset, header = struct.unpack("<II", data[10:18])
    if header == 12:
        width, height, _, bpp = struct.unpack("<HHHH", data[18:26])
        compression = 0
    elif header >= 40 and len(data) >= 34:
        width, height, _, bpp, compression = struct.unpack("<iiHHI", data[18:34])
    else:
        return False
    if compression not in (0, 3, 6) or bpp == 0:
        return False
    stride = (abs(width) * bpp + 31) // 32 * 4
    return offset + stride * abs(height) > len(data)


def _load_bmp(data: bytes, path: Path, max_pixels: int | None) -> Photo:
    if _bmp_is_truncated(data):
        raise ImageFileError("truncated", "the BMP file is truncated (shorter than its header says)", path)
    im = BmpImagePlugin.BmpImageFile(io.BytesIO(data))
    _check_pixels(im.width, im.height, max_pixels, path)
    info: dict[str, Any] = {}
    if im.info.get("dpi"):
        info["dpi"] = tuple(float(v) for v in im.info["dpi"])
    im.load()
    pixels, icc = _pixels_from_pil(im, info, None)
    return Photo(pixels, "BMP", None, icc, None, info)


# TIFF ---------------------------------------------------------------------------------------------

# Tags that describe how the pixels are stored rather than what the photo is: regenerated on write,
# never copied (copying StripOffsets or BitsPerSample from another file would corrupt it).
# fmt: off
_TIFF_STRUCTURAL = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284, 288, 289,
    290, 291, 292, 293, 301, 317, 320, 321, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347,
    512, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 531, 532,
    700, 34675, 33723, 34377, 37724,  # XMP, ICC, IPTC, Photoshop: own fields; layers of the old pixels
    0x8769, 0x8825, 0xA005, 50706,  # sub-IFD pointers (rebuilt), DNG version
})
# fmt: on
_TIFF_CARRIED = (33723, 34377)  # IPTC and Photoshop resources: only meaningful in a TIFF output


def _tiff_tag(tags: Any, code: int, default: Any = None) -> Any:
    tag = tags.get(code)
    return default if tag is None else tag.value


def _carried_tag(tag: Any) -> tuple[int, Any]:
    """(type, value) of an IPTC/Photoshop tag; tifffile hands these over as bytes whatever the type."""
    typ, value = int(tag.dtype), tag.value
    if isinstance(value, bytes) and typ not in (TiffTags.BYTE, TiffTags.UNDEFINED):
        typ = TiffTags.UNDEFINED
    return typ, value


def _load_tiff(data: bytes, path: Path, max_pixels: int | None) -> Photo:
    """Read a TIFF's structure with tifffile (any layout), its pixels with Pillow (8-bit) or exactly.

    Pillow refuses to even open layouts it has no mode for (16-bit grey+alpha), so the header, the
    page count and the truncation check come from tifffile.
    """
    import tifffile

    if path.suffix.lower() in _RAW_SUFFIXES:
        raise ImageFileError("unsupported", "camera raw files are not supported; export a TIFF first", path)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = tif.pages
        page = pages.first
        tags = page.tags
        if 50706 in tags:
            raise ImageFileError("unsupported", "DNG camera raw files are not supported", path)
        _check_pixels(int(page.imagewidth), int(page.imagelength), max_pixels, path)
        ends = [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)]
        if any(end > len(data) for end in ends):
            raise ImageFileError("truncated", "the TIFF file is truncated (image data runs past its end)", path)
        for other in pages[1:]:
            if not int(getattr(other, "subfiletype", 0)) & 1:  # a reduced-resolution preview is fine
                raise ImageFileError(
                    "unsupported", f"multi-page TIFF files ({len(pages)} pages) are not supported", path
                )
        bits = _tiff_tag(tags, 258, 1)
        bits = tuple(bits) if isinstance(bits, tuple) else (int(bits),)
        sample_format = _tiff_tag(tags, 339, 1)
        sample_format = tuple(sample_format) if isinstance(sample_format, tuple) else (sample_format,)
        samples = int(_tiff_tag(tags, 277, 1))
        photometric = int(_tiff_tag(tags, 262, 1))
        info: dict[str, Any] = {"tiff_compression": int(_tiff_tag(tags, 259, 1))}
        icc = _tiff_tag(tags, 34675)
        icc = bytes(icc) if icc else None
        xmp = _tiff_tag(tags, 700)
        xmp = (xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)) if xmp else None
        carried = {code: _carried_tag(tags[code]) for code in _TIFF_CARRIED if code in tags}
        orientation = int(_tiff_tag(tags, 274, 1))
        extra_samples = _tiff_tag(tags, 338, ())
        extra_samples = tuple(extra_samples) if isinstance(extra_samples, tuple) else (extra_samples,)
    if any(int(f) != 1 for f in sample_format):
        raise ImageFileError("unsupported", "TIFF with float or signed samples is not supported", path)
    if carried:
        info["tiff_tags"] = carried
    if 1 < orientation <= 8:
        info["orientation"] = orientation
    exif = _exif_from_tiff(data)
    premultiplied = samples in (2, 4) and extra_samples[:1] == (1,)
    if premultiplied:
        info["premultiplied_alpha"] = True  # kept as stored; Pillow would un-premultiply 8-bit data
    if min(bits) == max(bits) == 16:
        pixels = _decode_tiff_exact(data, samples, photometric, path, opencv_fallback=True)
    elif max(bits) <= 8:
        exact = None
        if premultiplied and min(bits) == 8:
            exact = _decode_tiff_exact(data, samples, photometric, path, opencv_fallback=False)
        if exact is not None:
            pixels = exact
        else:
            im = TiffImagePlugin.TiffImageFile(io.BytesIO(data))
            im.load()
            if orientation != 1 and 274 not in im.tag_v2:
                info["_upright"] = True  # newer Pillow turns TIFFs upright itself, dropping the tag
            if premultiplied and im.mode in ("RGBA", "LA"):
                del info["premultiplied_alpha"]
                info["converted_from"] = "premultiplied alpha (keep it with: pip install imagecodecs)"
            pixels, icc = _pixels_from_pil(im, info, icc)
    else:
        raise ImageFileError("unsupported", f"TIFF with {bits} bits per sample is not supported", path)
    return Photo(pixels, "TIFF", exif, icc, xmp, info)


def _exif_from_tiff(data: bytes) -> bytes | None:
    """Build an EXIF block from a TIFF's descriptive tags so it can travel to JPEG/PNG/WebP outputs.

    A TIFF file is itself an EXIF-shaped structure, so Pillow's EXIF parser reads IFD0 and its EXIF
    and GPS sub-IFDs directly; only the storage tags are removed.
    """
    exif = Image.Exif()
    exif.load(data)
    for tag in list(exif):
        # the EXIF and GPS pointers stay: Exif.tobytes re-attaches those sub-IFDs at new offsets
        if tag in _TIFF_STRUCTURAL and tag not in (0x8769, 0x8825):
            del exif[tag]
    if not len(exif):
        return None
    return _strip_exif_prefix(exif.tobytes())


def _decode_tiff_exact(
    data: bytes, samples: int, photometric: int, path: Path, *, opencv_fallback: bool
) -> np.ndarray | None:
    """Decode TIFF samples exactly as stored: tifffile when it can, OpenCV's libtiff for LZW and friends.

    Returns None when neither can (8-bit only: the caller then uses Pillow).

    Pillow cannot hold 16-bit colour. OpenCV applies the TIFF orientation even with IMREAD_UNCHANGED,
    so it gets a copy whose Orientation tag says 1; orientation is applied once, by load_photo.
    """
    if photometric not in (1, 2) or samples not in (1, 2, 3, 4):
        raise ImageFileError(
            "unsupported",
            f"TIFF with photometric {photometric} and {samples} samples is not supported at this depth",
            path,
        )
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            axes = page.axes
        if "S" in axes and axes.index("S") < axes.index("X"):
            arr = np.moveaxis(arr, axes.index("S"), -1)
        native = np.uint16 if arr.dtype.itemsize == 2 else np.uint8  # big-endian files give '>u2'
        return np.ascontiguousarray(arr, dtype=native)
    except ImportError:
        pass
    except ValueError as exc:
        if "imagecodecs" not in str(exc):
            raise
    if not opencv_fallback:
        return None
    if samples == 2:
        raise ImageFileError(
            "unsupported", "this compressed 16-bit grey+alpha TIFF needs: pip install imagecodecs", path
        )
    import cv2

    upright = _with_orientation_1(data)
    decoded = cv2.imdecode(np.frombuffer(upright, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16:
        raise ImageFileError("corrupt", "the 16-bit TIFF image data could not be decoded", path)
    if decoded.ndim == 3 and decoded.shape[2] in (3, 4):
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return decoded


# HEIF ---------------------------------------------------------------------------------------------


def _import_heif(path: Path | None) -> Any:
    try:
        import pillow_heif
    except ImportError:
        raise ImageFileError(
            "unsupported", f"HEIC/HEIF photos need the pillow-heif package; {_HEIF_HINT}", path
        ) from None
    return pillow_heif


def _load_heif(data: bytes, path: Path, max_pixels: int | None) -> Photo:
    pillow_heif = _import_heif(path)
    heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    _check_pixels(heif.size[0], heif.size[1], max_pixels, path)
    info: dict[str, Any] = {}
    exif = _strip_exif_prefix(heif.info.get("exif"))
    xmp = heif.info.get("xmp") or None
    icc = heif.info.get("icc_profile") or None
    if heif.info.get("chroma"):
        info["heif_chroma"] = heif.info["chroma"]
    if heif.info.get("bit_depth"):
        info["heif_bit_depth"] = heif.info["bit_depth"]
    orientation = _orientation_of(exif, xmp)
    if orientation != 1:
        info["orientation"] = orientation
    info["_upright"] = True  # libheif applies the HEIF rotation; the EXIF value is informational
    pixels = np.array(heif)
    if pixels.dtype not in (np.uint8, np.uint16):
        pixels = pixels.astype(np.uint16)
    return Photo(pixels, "HEIF", exif, icc, xmp, info)


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
        _write_bytes(tmp, data)


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


def _out_exif(photo: Photo) -> bytes | None:
    exif = _strip_exif_prefix(photo.exif)
    return _with_orientation_1(exif) if exif else None


def _out_xmp(photo: Photo) -> bytes | None:
    return _xmp_with_orientation_1(bytes(photo.xmp)) if photo.xmp else None


def _straight_alpha(photo: Photo) -> np.ndarray:
    """Pixels with straight (unassociated) alpha, which every format but TIFF assumes.

    Only a TIFF with associated alpha is loaded premultiplied; writing it elsewhere unchanged would
    darken every semi-transparent edge.
    """
    px = photo.pixels
    if not (photo.has_alpha and photo.info.get("premultiplied_alpha")):
        return px
    top = 65535 if px.dtype == np.uint16 else 255
    alpha = px[:, :, -1:].astype(np.float64)
    colour = np.round(px[:, :, :-1] * (top / np.maximum(alpha, 1.0)))
    colour = np.where(alpha > 0, np.minimum(colour, top), 0).astype(px.dtype)
    return np.concatenate([colour, px[:, :, -1:]], axis=2)


def _pixels_8bit(photo: Photo, fmt: str, path: Path, *, alpha_ok: bool, grey_alpha_ok: bool) -> np.ndarray:
    """Pixels for an 8-bit-only format; the conversions here are the documented ones, nothing else."""
    px = _straight_alpha(photo)
    if photo.has_alpha and not alpha_ok:
        raise ImageFileError(
            "unsupported", f"{fmt} cannot store transparency; save this photo as PNG, TIFF or WebP", path
        )
    if px.dtype == np.uint16:
        px = _to_uint8(px)
    if px.ndim == 3 and px.shape[2] == 2 and not grey_alpha_ok:
        px = px[:, :, [0, 0, 0, 1]]
    return np.ascontiguousarray(px)


def _encode_jpeg(photo: Photo, quality: int, path: Path) -> bytes:
    px = _pixels_8bit(photo, "JPEG", path, alpha_ok=False, grey_alpha_ok=False)
    options: dict[str, Any] = {
        "quality": quality,
        "subsampling": photo.info.get("jpeg_subsampling", 0) if photo.format == "JPEG" else 0,
        "optimize": False,
        "progressive": False,
    }
    exif = _out_exif(photo)
    if exif:
        options["exif"] = b"Exif\x00\x00" + exif
    if photo.icc_profile:
        options["icc_profile"] = photo.icc_profile
    xmp = _out_xmp(photo)
    if xmp:
        options["xmp"] = xmp
    if photo.info.get("dpi"):
        options["dpi"] = tuple(round(v) for v in photo.info["dpi"])
    if photo.format == "JPEG":
        if photo.info.get("jpeg_comment"):
            options["comment"] = photo.info["jpeg_comment"]
        if photo.info.get("jpeg_segments"):
            options["extra"] = photo.info["jpeg_segments"]
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", **options)
    return buf.getvalue()


def _encode_webp(photo: Photo, quality: int, path: Path) -> bytes:
    px = _pixels_8bit(photo, "WebP", path, alpha_ok=True, grey_alpha_ok=False)
    if px.ndim == 2:
        px = np.repeat(px[:, :, None], 3, axis=2)
    lossless = bool(photo.info.get("webp_lossless")) and photo.format == "WEBP"
    options: dict[str, Any] = {"lossless": lossless, "quality": quality}
    if lossless:
        options["exact"] = True  # keep the colour of fully transparent pixels
        options["quality"] = 100  # effort, not fidelity, in lossless mode
    exif = _out_exif(photo)
    if exif:
        options["exif"] = exif
    if photo.icc_profile:
        options["icc_profile"] = photo.icc_profile
    xmp = _out_xmp(photo)
    if xmp:
        options["xmp"] = xmp
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "WEBP", **options)
    return buf.getvalue()


def _encode_bmp(photo: Photo, quality: int, path: Path) -> bytes:
    px = _pixels_8bit(photo, "BMP", path, alpha_ok=True, grey_alpha_ok=False)
    dpi = photo.info.get("dpi")
    if px.ndim == 3 and px.shape[2] == 4:
        return _bmp_rgba(px, dpi)
    options: dict[str, Any] = {}
    if dpi:
        options["dpi"] = tuple(round(v) for v in dpi)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "BMP", **options)
    return buf.getvalue()


def _bmp_rgba(px: np.ndarray, dpi: tuple[float, float] | None) -> bytes:
    """32-bit BMP with an explicit alpha mask (BITMAPV4HEADER).

    Pillow writes RGBA as a plain 32-bit BMP whose fourth byte readers (Pillow included) ignore, so
    the alpha would be lost on the way back in.
    """
    height, width = px.shape[:2]
    data = np.ascontiguousarray(px[::-1, :, [2, 1, 0, 3]]).tobytes()  # bottom-up BGRA
    ppm = [round(v / 0.0254) for v in dpi] if dpi else [0, 0]
    info = struct.pack("<IiiHHIIiiII", 108, width, height, 1, 32, 3, len(data), ppm[0], ppm[1], 0, 0)
    info += struct.pack("<IIIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000, 0x73524742)  # 'sRGB'
    info += bytes(36 + 12)  # colour end points and gamma, unused with sRGB
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + data


def _encode_png(photo: Photo, quality: int, path: Path) -> bytes:
    px = np.ascontiguousarray(_straight_alpha(photo))
    channels = photo.channels
    if px.dtype == np.uint8:
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, "PNG", compress_level=6)
        encoded = buf.getvalue()
        depth = 8
    elif channels == 2:
        encoded = _png16_grey_alpha(px)
        depth = 16
    else:
        import cv2

        to_bgr = cv2.COLOR_RGBA2BGRA if channels == 4 else cv2.COLOR_RGB2BGR
        bgr = px if channels == 1 else cv2.cvtColor(px, to_bgr)
        ok, out = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise ImageFileError("unwritable", "OpenCV could not encode the 16-bit PNG", path)
        encoded = out.tobytes()
        depth = 16
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    return _splice_png_metadata(encoded, photo, (depth, colour_type))


def _png16_grey_alpha(px: np.ndarray) -> bytes:
    """Encode 16-bit grey+alpha, which OpenCV cannot write (one "Up"-filtered row per scanline)."""
    height, width = px.shape[:2]
    rows = px.astype(">u2").view(np.uint8).reshape(height, width * 4)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG filters require
    raw = np.hstack([np.full((height, 1), 2, np.uint8), filtered]).tobytes()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


def _splice_png_metadata(encoded: bytes, photo: Photo, out_ihdr: tuple[int, int]) -> bytes:
    """Insert our metadata chunks right after IHDR of an encoder's bare PNG (all are legal there)."""
    extra = bytearray()
    kept = photo.info.get("png_chunks", []) if photo.format == "PNG" else []
    if photo.icc_profile:
        name = photo.info.get("png_icc_name") or b"ICC Profile"
        extra += _png_chunk(b"iCCP", name + b"\x00\x00" + zlib.compress(photo.icc_profile))
    same_layout = tuple(photo.info.get("png_ihdr", ())) == out_ihdr
    for ctype, payload in kept:
        if ctype == b"sRGB" and photo.icc_profile:
            continue  # the PNG spec allows one of iCCP and sRGB
        if ctype in _PNG_DEPTH_BOUND and not same_layout:
            continue
        extra += _png_chunk(ctype, payload)
    if photo.info.get("dpi") and not any(c == b"pHYs" for c, _ in kept):
        x, y = (round(v / 0.0254) for v in photo.info["dpi"])
        extra += _png_chunk(b"pHYs", struct.pack(">IIB", x, y, 1))
    exif = _out_exif(photo)
    if exif:
        extra += _png_chunk(b"eXIf", exif)
    xmp = _out_xmp(photo)
    if xmp:
        extra += _png_chunk(b"iTXt", _XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + xmp)
    ihdr_end = 8 + 8 + 13 + 4
    return encoded[:ihdr_end] + bytes(extra) + encoded[ihdr_end:]


def _encode_tiff(photo: Photo, quality: int, path: Path) -> bytes:
    """Write a baseline TIFF at the photo's own depth, with its descriptive tags and sub-IFDs.

    Pillow's writer cannot do 16-bit colour and tifffile cannot write EXIF sub-IFDs, so the IFD is
    assembled with Pillow's tag serialiser and the strips are written here.
    """
    px = photo.pixels
    height, width, channels = photo.height, photo.width, photo.channels
    bits = photo.bit_depth
    samples = np.ascontiguousarray(px.astype("<u2") if bits == 16 else px).reshape(height, width * channels)
    compressed = photo.info.get("tiff_compression", 8) != 1 if photo.format == "TIFF" else True
    if compressed:
        # horizontal predictor: each sample minus its left neighbour, modulo 2**bits (wraps in uint)
        pred = samples.reshape(height, width, channels).copy()
        pred[:, 1:] -= samples.reshape(height, width, channels)[:, :-1]
        samples = pred.reshape(height, width * channels)
    row_bytes = width * channels * bits // 8
    rows_per_strip = max(1, min(height, (1 << 18) // max(1, row_bytes)))
    strips: list[bytes] = []
    for top in range(0, height, rows_per_strip):
        chunk = samples[top : top + rows_per_strip].tobytes()
        strips.append(zlib.compress(chunk, 6) if compressed else chunk)
    offsets, position = [], 0
    for strip in strips:
        offsets.append(position)
        position += len(strip)

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    _copy_exif_to_ifd(_out_exif(photo), ifd)
    if 282 not in ifd and photo.info.get("dpi"):
        ifd[296] = 2
        ifd[282], ifd[283] = (TiffImagePlugin.IFDRational(float(v)) for v in photo.info["dpi"])
    if photo.icc_profile:
        ifd[34675] = photo.icc_profile
        ifd.tagtype[34675] = TiffTags.UNDEFINED
    xmp = _out_xmp(photo)
    if xmp:
        ifd[700] = xmp
        ifd.tagtype[700] = TiffTags.BYTE
    if photo.format == "TIFF":
        for tag, (typ, value) in photo.info.get("tiff_tags", {}).items():
            if _writable_tag(tag, value, None, typ):
                ifd[tag] = value
                ifd.tagtype[tag] = typ
    ifd[256] = width
    ifd[257] = height
    ifd[258] = (bits,) * channels
    ifd[259] = 8 if compressed else 1
    ifd[262] = 1 if photo.is_grey else 2
    ifd[273] = tuple(offsets)
    ifd.tagtype[273] = TiffTags.LONG
    ifd[277] = channels
    ifd[278] = rows_per_strip
    ifd[279] = tuple(len(s) for s in strips)
    ifd.tagtype[279] = TiffTags.LONG
    ifd[284] = 1
    if compressed:
        ifd[317] = 2
    if photo.has_alpha:
        ifd[338] = (1 if photo.info.get("premultiplied_alpha") else 2,)
    header = b"II*\x00" + struct.pack("<I", 8)
    return header + ifd.tobytes(8) + b"".join(strips)


def _copy_exif_to_ifd(exif_bytes: bytes | None, ifd: TiffImagePlugin.ImageFileDirectory_v2) -> None:
    """Put EXIF IFD0 tags and the EXIF/GPS sub-IFDs into a TIFF directory.

    Tag types are re-derived by Pillow, so a tag that cannot be written back (an odd vendor type) is
    dropped on its own instead of failing the whole save.
    """
    if not exif_bytes:
        return
    exif = Image.Exif()
    exif.load(exif_bytes)
    for tag, value in exif.items():
        if tag not in _TIFF_STRUCTURAL and _writable_tag(tag, value, None):
            ifd[tag] = value
    for pointer in (0x8769, 0x8825):
        sub = {t: v for t, v in exif.get_ifd(pointer).items() if t != 0xA005 and _writable_tag(t, v, pointer)}
        interop = exif.get_ifd(0xA005) if pointer == 0x8769 and 0xA005 in exif.get_ifd(pointer) else {}
        interop = {t: v for t, v in interop.items() if _writable_tag(t, v, 0xA005)}
        if interop:
            sub[0xA005] = interop
        if sub:
            ifd[pointer] = sub


def _writable_tag(tag: int, value: Any, group: int | None, typ: int | None = None) -> bool:
    try:
        probe = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II", group=group)
        probe[tag] = value
        if typ is not None:
            probe.tagtype[tag] = typ
        probe.tobytes()
    except Exception:  # any tag Pillow cannot serialise
        return False
    return True


def _encode_heif(photo: Photo, quality: int, path: Path) -> bytes:
    pillow_heif = _import_heif(path)
    px = np.ascontiguousarray(_straight_alpha(photo))
    modes = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    mode = modes[photo.channels] + (";16" if photo.bit_depth == 16 else "")
    options: dict[str, Any] = {"quality": quality}
    if photo.info.get("heif_chroma") and photo.format == "HEIF":
        options["chroma"] = photo.info["heif_chroma"]
    exif = _out_exif(photo)
    if exif:
        options["exif"] = exif
    xmp = _out_xmp(photo)
    if xmp:
        options["xmp"] = xmp
    if photo.icc_profile:
        options["icc_profile"] = photo.icc_profile
    buf = io.BytesIO()
    pillow_heif.encode(mode, (photo.width, photo.height), px.tobytes(), buf, **options)
    return buf.getvalue()


_ENCODERS = {
    "JPEG": _encode_jpeg,
    "PNG": _encode_png,
    "WEBP": _encode_webp,
    "BMP": _encode_bmp,
    "TIFF": _encode_tiff,
    "HEIF": _encode_heif,
}
