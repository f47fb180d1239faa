"""TIFF: structure from tifffile, pixels exactly as stored, and a writer of our own for 16-bit colour.

TIFF is where scans live (16 bits, associated alpha, IPTC), and neither Pillow nor tifffile alone both
reads every layout and writes EXIF sub-IFDs; this module combines them and decides which tags are
storage (regenerated) and which are the photo's (carried).
"""

from __future__ import annotations

import io
import itertools
import operator
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, TiffImagePlugin, TiffTags

from facerestore_cli.imagefile.orientation import _out_exif, _out_xmp, _strip_exif_prefix, _with_orientation_1
from facerestore_cli.imagefile.photo import ImageFileError, Photo, _check_pixels, _pixels_from_pil

_RAW_SUFFIXES = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf"}
    | {".pef", ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".dcr", ".mrw", ".mos", ".iiq", ".rwl"}
)


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


# --------------------------------------------------------------------------------------------------
# reading


def _carried_tag(tag: Any) -> tuple[int, Any]:
    """(type, value) of an IPTC/Photoshop tag; tifffile hands these over as bytes whatever the type."""
    typ, value = int(tag.dtype), tag.value
    if isinstance(value, bytes) and typ not in (TiffTags.BYTE, TiffTags.UNDEFINED):
        typ = TiffTags.UNDEFINED
    return typ, value


#: More pages than this are refused without reading them all (tifffile takes 0.1 ms a page).
_MAX_PAGES = 64


def _first_directory_past_end(data: bytes) -> bool:
    """Whether the header points past the end: writers that put the directory last (tifffile, OpenCV) lose
    it first when a file is cut short, and tifffile then only says that it found no page."""
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8 or (data[2:4] in (b"+\x00", b"\x00+") and len(data) < 16):
        return True
    if data[2:4] in (b"+\x00", b"\x00+"):  # BigTIFF
        return struct.unpack(order + "Q", data[8:16])[0] + 8 > len(data)
    return struct.unpack(order + "I", data[4:8])[0] + 2 > len(data)


def _tiff_ints(value: Any, what: str, path: Path) -> tuple[int, ...]:
    """The integers of a numeric tag: in a damaged directory any tag can hold text, floats or arrays."""
    values = value if isinstance(value, (tuple, list, np.ndarray)) else (value,)
    try:
        return tuple(operator.index(v) for v in values)
    except TypeError:
        raise ImageFileError("corrupt", f"the TIFF {what} tag is not a number ({value!r:.60})", path) from None


def _tiff_int(value: Any, what: str, path: Path) -> int:
    values = _tiff_ints(value, what, path)
    if len(values) != 1:
        raise ImageFileError("corrupt", f"the TIFF {what} tag has {len(values)} values instead of one", path)
    return values[0]


def _tiff_bytes(value: Any, what: str, path: Path) -> bytes | None:
    """A metadata block (ICC, XMP) as bytes; tifffile gives bytes, text or numbers depending on the type."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    try:
        return bytes(value) or None
    except (TypeError, ValueError):
        raise ImageFileError("corrupt", f"the TIFF {what} tag is malformed", path) from None


def _refuse_more_pages(pages: Any, path: Path) -> None:
    """Refuse a second full-size page (restoring one would drop the others); reduced previews are fine.

    Pages are read one at a time and only up to :data:`_MAX_PAGES`: asking tifffile how many there are
    reads every directory, 1.7 s for a 4 MB file of 20,000 pages.
    """
    for number, other in enumerate(itertools.islice(pages, 1, None), start=2):
        if number > _MAX_PAGES:
            raise ImageFileError("unsupported", f"TIFF files with more than {_MAX_PAGES} pages are not supported", path)
        if not _tiff_int(getattr(other, "subfiletype", 0), "NewSubfileType", path) & 1:
            raise ImageFileError(
                "unsupported", f"multi-page TIFF files are not supported (page {number} is another picture)", path
            )


def _load_tiff(data: bytes, path: Path, max_pixels: int | None) -> Photo:
    """Read a TIFF's structure with tifffile (any layout), its pixels with Pillow (8-bit) or exactly.

    Pillow refuses to even open layouts it has no mode for (16-bit grey+alpha), so the header, the
    page count and the truncation check come from tifffile.
    """
    import tifffile

    if path.suffix.lower() in _RAW_SUFFIXES:
        raise ImageFileError("unsupported", "camera raw files are not supported; export a TIFF first", path)
    if _first_directory_past_end(data):
        raise ImageFileError("truncated", "the TIFF file is truncated (its image directory lies past its end)", path)
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = tif.pages
            try:
                page = pages.first
            except IndexError:
                raise ImageFileError("corrupt", "the TIFF file has no readable image directory", path) from None
            tags = page.tags
            if 50706 in tags:
                raise ImageFileError("unsupported", "DNG camera raw files are not supported", path)
            width = _tiff_int(page.imagewidth, "ImageWidth", path)
            _check_pixels(width, _tiff_int(page.imagelength, "ImageLength", path), max_pixels, path)
            offsets = _tiff_ints(page.dataoffsets, "StripOffsets", path)
            counts = _tiff_ints(page.databytecounts, "StripByteCounts", path)
            ends = [o + c for o, c in zip(offsets, counts, strict=False)]
            if any(end > len(data) for end in ends):
                raise ImageFileError("truncated", "the TIFF file is truncated (image data runs past its end)", path)
            _refuse_more_pages(pages, path)
            bits = _tiff_ints(_tiff_tag(tags, 258, 1), "BitsPerSample", path) or (0,)
            sample_format = _tiff_ints(_tiff_tag(tags, 339, 1), "SampleFormat", path)
            samples = _tiff_int(_tiff_tag(tags, 277, 1), "SamplesPerPixel", path)
            photometric = _tiff_int(_tiff_tag(tags, 262, 1), "PhotometricInterpretation", path)
            info: dict[str, Any] = {"tiff_compression": _tiff_int(_tiff_tag(tags, 259, 1), "Compression", path)}
            icc = _tiff_bytes(_tiff_tag(tags, 34675), "ICC profile", path)
            xmp = _tiff_bytes(_tiff_tag(tags, 700), "XMP", path)
            carried = {code: _carried_tag(tags[code]) for code in _TIFF_CARRIED if code in tags}
            orientation = _tiff_int(_tiff_tag(tags, 274, 1), "Orientation", path)
            extra_samples = _tiff_ints(_tiff_tag(tags, 338, ()), "ExtraSamples", path)
    except (tifffile.TiffFileError, ValueError, TypeError, IndexError, KeyError, struct.error, OverflowError) as exc:
        # tifffile parses a damaged directory into values of any type, and fails on some of them itself
        detail = f"{type(exc).__name__}: {exc}"
        raise ImageFileError("corrupt", f"the TIFF image directory is damaged ({detail})", path) from None
    if len(bits) not in (1, samples):
        raise ImageFileError(
            "corrupt", f"the TIFF BitsPerSample tag has {len(bits)} values for {samples} samples", path
        )
    if any(f != 1 for f in sample_format):
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
    try:
        return _strip_exif_prefix(exif.tobytes())
    except Exception:  # a tag Pillow cannot write back (a damaged or odd type): dropped alone, as on save
        _drop_unwritable_tags(exif)
        return _strip_exif_prefix(exif.tobytes()) if len(exif) else None


def _drop_unwritable_tags(exif: Image.Exif) -> None:
    for tag in list(exif):
        if tag not in (0x8769, 0x8825) and not _writable_tag(tag, exif[tag], None):
            del exif[tag]
    for pointer in (0x8769, 0x8825):
        if pointer in exif:
            sub = exif.get_ifd(pointer)  # Pillow's own copy: what tobytes writes
            for tag in [t for t in sub if t != 0xA005 and not _writable_tag(t, sub[t], pointer)]:
                del sub[tag]
            if 0xA005 in sub:
                interop = exif.get_ifd(0xA005)
                for tag in [t for t in interop if not _writable_tag(t, interop[t], 0xA005)]:
                    del interop[tag]


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


# --------------------------------------------------------------------------------------------------
# writing


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
