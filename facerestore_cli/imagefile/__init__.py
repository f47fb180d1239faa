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

# ``_write_bytes`` and ``_ENCODERS`` are private but re-exported on purpose (the redundant ``as`` says so):
# tests interrupt saves by replacing ``_write_bytes`` here, which save_photo looks up at call time, and
# break an encoder through ``_ENCODERS``.
from facerestore_cli.imagefile.atomic import _write_bytes as _write_bytes
from facerestore_cli.imagefile.atomic import atomic_write
from facerestore_cli.imagefile.io import _ENCODERS as _ENCODERS
from facerestore_cli.imagefile.io import load_photo, save_like_source, save_photo
from facerestore_cli.imagefile.photo import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    ImageFileError,
    Photo,
    contiguous_rgb8,
    format_for_suffix,
    is_colourless,
    rgb8,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "ImageFileError",
    "Photo",
    "atomic_write",
    "contiguous_rgb8",
    "format_for_suffix",
    "is_colourless",
    "load_photo",
    "rgb8",
    "save_like_source",
    "save_photo",
]
