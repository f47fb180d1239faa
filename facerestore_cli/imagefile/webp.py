"""WebP: whether the source was lossless decides how it is written back, so the RIFF chunks are read here.

Pillow does not say whether a WebP was VP8L, and an animated WebP must be refused before decoding its
first frame would silently drop the rest.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, WebPImagePlugin

from facerestore_cli.imagefile.orientation import _orientation_of, _out_exif, _out_xmp, _strip_exif_prefix
from facerestore_cli.imagefile.photo import ImageFileError, Photo, _check_pixels, _pixels_8bit, _pixels_from_pil

# --------------------------------------------------------------------------------------------------
# reading


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


# --------------------------------------------------------------------------------------------------
# writing


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
