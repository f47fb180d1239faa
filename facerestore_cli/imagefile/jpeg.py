"""JPEG: the marker walk that detects truncation, and the segments that survive a re-encode.

Pillow's own truncation handling depends on a global flag any library may flip, so the file's end is
checked from its markers here, and the same walk refuses files built to stall libjpeg (thousands of
scans, megabytes of fill bytes); application segments (IPTC, extended XMP) are carried to a JPEG output
because albums keep captions and keywords in them.
"""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path
from typing import Any

from PIL import Image, JpegImagePlugin

from facerestore_cli.imagefile.orientation import _orientation_of, _out_exif, _out_xmp, _strip_exif_prefix
from facerestore_cli.imagefile.photo import ImageFileError, Photo, _check_pixels, _pixels_8bit, _pixels_from_pil

# --------------------------------------------------------------------------------------------------
# reading


#: The first byte after a run of 0xFF: the marker code (any number of 0xFF fill bytes may precede a marker).
_NOT_FILL = re.compile(rb"[^\xff]")
#: The next marker after entropy-coded data: an 0xFF that is not a stuffed zero, a restart marker or fill.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: libjpeg decodes every progressive scan over the whole image, so scans multiply the work: 1,000 of them
#: over 16 Mpx take about 2 s here (a "scan bomb" of a few MB stalls for minutes). Encoders write about 10.
_MAX_SCANS = 100
#: Fill bytes are legal, but Pillow feeds libjpeg a long run again and again: 20 MB of them take 6 s.
_LONG_FILL = b"\xff" * (1 << 20)


def _check_jpeg_structure(data: bytes, path: Path) -> None:
    """Walk the JPEG markers to EOI: running out of data first means the file was cut short.

    The walk also refuses what would stall the decoder (too many scans, megabytes of fill bytes), and
    searches with regular expressions rather than a loop per byte, so that a file stuffed with millions
    of 0xFF bytes is walked in milliseconds rather than seconds.
    """
    truncated = ImageFileError("truncated", "the JPEG file is truncated (it ends before its end marker)", path)
    n = len(data)
    pos = 2
    scans = 0
    while True:
        first = data.find(b"\xff", pos)
        found = _NOT_FILL.search(data, first) if first >= 0 else None
        if found is None:
            raise truncated
        pos = found.start() - 1
        if pos - first >= len(_LONG_FILL):
            raise ImageFileError("too-large", f"the JPEG holds {pos - first:,} fill bytes before a marker", path)
        marker = data[pos + 1]
        if marker == 0xD9:
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD8 or marker == 0x00:
            pos += 2
            continue
        if pos + 4 > n:
            raise truncated
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > n:
            raise truncated
        pos = end
        if marker == 0xDA:  # entropy-coded data runs to the next real marker
            scans += 1
            if scans > _MAX_SCANS:
                raise ImageFileError(
                    "too-large",
                    f"the JPEG has more than {_MAX_SCANS} scans; each is decoded over the whole image",
                    path,
                )
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                raise truncated
            if data.find(_LONG_FILL, pos, found.start()) >= 0:
                raise ImageFileError("too-large", "the JPEG holds a megabyte or more of 0xFF bytes in a scan", path)
            pos = found.start()


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
    _check_jpeg_structure(data, path)
    im = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    _check_pixels(im.width, im.height, max_pixels, path)
    if len(getattr(im, "layer", ())) < getattr(im, "layers", 0):
        raise ImageFileError(
            "corrupt", f"the JPEG frame header declares {im.layers} components but describes {len(im.layer)}", path
        )
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


# --------------------------------------------------------------------------------------------------
# writing


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
