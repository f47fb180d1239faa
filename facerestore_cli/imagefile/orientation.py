"""EXIF and XMP orientation, read and reset by patching bytes in place rather than re-encoding.

Every format carries the same EXIF/XMP blocks, and a re-encode of EXIF would break the internal offsets
of maker notes; so orientation is found and rewritten here byte for byte, once for all formats, and the
pixels are turned upright exactly once (in ``load_photo``).
"""

from __future__ import annotations

import re
import struct

import numpy as np

from facerestore_cli.imagefile.photo import Photo


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


def _orientation_of(exif: bytes | None, xmp: bytes | None) -> int:
    return _read_orientation(exif) or _xmp_orientation(xmp) or 1


def _out_exif(photo: Photo) -> bytes | None:
    exif = _strip_exif_prefix(photo.exif)
    return _with_orientation_1(exif) if exif else None


def _out_xmp(photo: Photo) -> bytes | None:
    return _xmp_with_orientation_1(bytes(photo.xmp)) if photo.xmp else None


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
