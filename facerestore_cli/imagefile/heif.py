"""HEIF/HEIC through the optional pillow-heif, imported only when such a file is met.

Most albums have no HEIF photo, so a missing pillow-heif must cost nothing until one appears, and then
say what to install rather than fail as an unknown format.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from facerestore_cli.imagefile.orientation import _orientation_of, _out_exif, _out_xmp, _strip_exif_prefix
from facerestore_cli.imagefile.photo import ImageFileError, Photo, _check_pixels, _straight_alpha

_HEIF_HINT = "install HEIF support with: pip install facerestore-cli[heif]"


# --------------------------------------------------------------------------------------------------
# reading


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
