"""The photo in memory and the rules every format shares, so no format module can drift from the others.

:class:`Photo` and :class:`ImageFileError` are what callers hold; the pixel cap, the Pillow-mode
expansion and the 8-bit conversions live here too because every reader and writer must apply exactly the
same ones: if the WebP writer rounded 16-bit samples differently from the JPEG writer, the same photo
would come out differently depending on the format it was saved in.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

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


def contiguous_rgb8(image: np.ndarray) -> np.ndarray:
    """:func:`rgb8` for the models' inputs: a contiguous copy when needed, and ``TypeError`` for anything
    but 8- or 16-bit samples (a float array here is a caller's bug, not a photo)."""
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected a uint8 (or uint16) image, got {image.dtype}")
    return np.ascontiguousarray(rgb8(image))


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


# --------------------------------------------------------------------------------------------------
# conversions shared by the format modules


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
