"""Seed files and mutations for bench/fuzz_decoders.py: what a damaged photo file can look like.

Kept apart from the driver so the cases can be made (and a failing one regenerated) without starting any
worker: ``make_case(seeds, run_seed, i)`` always returns the same bytes. The mutations know where each
format keeps the fields its decoder trusts (JPEG SOF/DQT/DHT/SOS, PNG IHDR and chunk lengths, TIFF IFD
entries, BMP header sizes, WebP RIFF/VP8/VP8L/VP8X headers, and the EXIF block inside JPEG, PNG and
WebP), because random bit flips alone mostly stop at the first checksum or marker and never reach them.
"""

from __future__ import annotations

import io
import random
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, ImageCms, PngImagePlugin

from facerestore_cli.imagefile import Photo, save_photo

FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")
SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}


@dataclass(frozen=True)
class Seed:
    """A valid file the mutations start from; ``name`` says which variant (and source picture) it is."""

    name: str
    format: str
    data: bytes


@dataclass(frozen=True)
class Case:
    """One mutated file; ``mutations`` says what was done to the seed, for the failure notes."""

    index: int
    seed: Seed
    mutations: tuple[str, ...]
    data: bytes


# --------------------------------------------------------------------------------------------------
# seeds


def shared_pictures(root: Path, sizes: Iterable[tuple[int, int]] = ((64, 64), (130, 97), (192, 256))) -> list:
    """A studio portrait, a real degraded crop and a scanned old photo, resized to ``sizes`` (h, w)."""
    eval_dev = root / "data" / "eval-dev"
    picks = [
        sorted(eval_dev.glob("london-pairs/*/neutral.jpg")),
        sorted(eval_dev.glob("realworld/cropped/*.png")),
        sorted(eval_dev.glob("realworld/old-photos/*.png")),
    ]
    pictures = []
    for files, (h, w) in zip(picks, sizes, strict=False):
        if files:
            with Image.open(files[0]) as im:
                pictures.append(np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)))
    return pictures


def synthetic_pictures(sizes: Iterable[tuple[int, int]] = ((64, 64), (130, 97), (192, 256))) -> list:
    """Gradients, a disc and noise: enough structure for every encoder path when no photos are at hand."""
    rng = np.random.default_rng(7)
    pictures = []
    for h, w in sizes:
        y, x = np.mgrid[0:h, 0:w]
        disc = ((y - h / 2) ** 2 + (x - w / 3) ** 2 < (min(h, w) / 3) ** 2) * 90
        rgb = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), disc + 60], axis=2)
        rgb = rgb + rng.integers(-12, 13, rgb.shape)
        pictures.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return pictures


def make_seeds(pictures: list) -> list[Seed]:
    """Every variant below, for each picture; each must load cleanly (checked by :func:`fuzz`)."""
    seeds = []
    with tempfile.TemporaryDirectory(prefix="fuzz-seeds-") as tmp:
        for i, rgb in enumerate(pictures):
            for name, (fmt, build) in _VARIANTS.items():
                data = build(np.ascontiguousarray(rgb), Path(tmp) / f"{name}{SUFFIX[fmt]}")
                seeds.append(Seed(f"{name}-{i}", fmt, data))
    return seeds


def _exif(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "Canon EOS 5D", orientation
    exif.get_ifd(0x8769)[0x9003] = "1952:07:14 10:00:00"
    exif.get_ifd(0x8825)[0x0001] = "N"
    return exif.tobytes()  # starts with "Exif\0\0"


def _icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


_XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="3"/></rdf:RDF></x:xmpmeta>'
)


def _alpha(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    a = (np.add.outer(np.arange(h), np.arange(w)) * 255 // max(1, h + w - 2)).astype(np.uint8)
    return np.dstack([rgb, a])


def _deep(px: np.ndarray) -> np.ndarray:
    """16-bit samples whose low byte carries information too (a plain x257 would hide 8-bit truncation)."""
    return px.astype(np.uint16) * 257 ^ (np.arange(px.size, dtype=np.uint16).reshape(px.shape) & 0x3F)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return (rgb @ np.array([77, 150, 29]) >> 8).astype(np.uint8)


def _pil(px: np.ndarray, fmt: str, **options) -> bytes:
    im = px if not isinstance(px, np.ndarray) else Image.fromarray(px)
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _ours(px: np.ndarray, path: Path, fmt: str, **meta) -> bytes:
    save_photo(Photo(px, fmt, **meta), path)
    return path.read_bytes()


def _tifffile(px: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, px, metadata=None, **options)
    return buf.getvalue()


def _cv2(px: np.ndarray, suffix: str) -> bytes:
    bgr = px if px.ndim == 2 else cv2.cvtColor(px, cv2.COLOR_RGBA2BGRA if px.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    ok, out = cv2.imencode(suffix, bgr)
    assert ok
    return out.tobytes()


def _png_text(rgb: np.ndarray) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "Grandma at the lake")
    info.add_text("Comment", "scanned " * 40, zip=True)
    info.add_itxt("XML:com.adobe.xmp", _XMP.decode(), zip=True)
    return _pil(rgb, "PNG", pnginfo=info, exif=_exif(8), icc_profile=_icc(), dpi=(300, 300))


def _palette(rgb: np.ndarray, colours: int = 64) -> Image.Image:
    return Image.fromarray(rgb).quantize(colours)


def _bmp(info: bytes, palette: bytes, pixels: bytes) -> bytes:
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def _bmp_rows(rows: np.ndarray) -> bytes:
    """Bottom-up rows padded to 4 bytes, as every uncompressed BMP stores them."""
    rows = rows[::-1].reshape(rows.shape[0], -1)
    pad = -rows.shape[1] % 4
    return np.hstack([rows, np.zeros((rows.shape[0], pad), np.uint8)]).tobytes()


def _bmp_core24(rgb: np.ndarray) -> bytes:
    h, w = rgb.shape[:2]
    return _bmp(struct.pack("<IHHHH", 12, w, h, 1, 24), b"", _bmp_rows(rgb[:, :, ::-1]))


def _bmp_rgb565(rgb: np.ndarray) -> bytes:
    h, w = rgb.shape[:2]
    r, g, b = (rgb[:, :, i].astype(np.uint16) for i in range(3))
    px = ((r >> 3) << 11 | (g >> 2) << 5 | b >> 3).astype("<u2").view(np.uint8).reshape(h, w * 2)
    data = _bmp_rows(px)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 16, 3, len(data), 2835, 2835, 0, 0)
    return _bmp(info + struct.pack("<III", 0xF800, 0x07E0, 0x001F), b"", data)


def _bmp_rle8(rgb: np.ndarray) -> bytes:
    im = _palette(rgb, 32)
    idx = np.asarray(im)
    h, w = idx.shape
    out = bytearray()
    for row in idx[::-1]:
        start = 0
        while start < w:
            end = start
            while end < w and end - start < 255 and row[end] == row[start]:
                end += 1
            out += bytes((end - start, int(row[start])))
            start = end
        out += b"\x00\x00"
    out += b"\x00\x01"
    pal = im.getpalette()[: 3 * 32]
    palette = b"".join(bytes((pal[3 * i + 2], pal[3 * i + 1], pal[3 * i], 0)) for i in range(32))
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(out), 2835, 2835, 32, 0)
    return _bmp(info, palette, bytes(out))


SeedBuilder = Callable[[np.ndarray, Path], bytes]
# fmt: off
_VARIANTS: dict[str, tuple[str, SeedBuilder]] = {
    "jpeg-baseline": ("JPEG", lambda rgb, p: _pil(rgb, "JPEG", quality=90)),
    "jpeg-progressive": ("JPEG", lambda rgb, p: _pil(rgb, "JPEG", quality=85, progressive=True)),
    "jpeg-444-optimised-restart": ("JPEG", lambda rgb, p: _pil(rgb, "JPEG", subsampling=0, optimize=True,
                                                              restart_marker_blocks=3)),
    "jpeg-grey": ("JPEG", lambda rgb, p: _pil(_grey(rgb), "JPEG")),
    "jpeg-cmyk": ("JPEG", lambda rgb, p: _pil(_palette(rgb, 256).convert("CMYK"), "JPEG")),
    "jpeg-exif-icc-xmp": ("JPEG", lambda rgb, p: _pil(rgb, "JPEG", exif=_exif(6), icc_profile=_icc(), xmp=_XMP,
                                                     comment=b"lake")),
    "png-rgb8": ("PNG", lambda rgb, p: _pil(rgb, "PNG")),
    "png-rgba8": ("PNG", lambda rgb, p: _pil(_alpha(rgb), "PNG")),
    "png-grey8": ("PNG", lambda rgb, p: _pil(_grey(rgb), "PNG")),
    "png-grey-alpha8": ("PNG", lambda rgb, p: _pil(_alpha(_grey(rgb)[:, :, None]), "PNG")),
    "png-palette-trns": ("PNG", lambda rgb, p: _pil(_palette(rgb, 16), "PNG", transparency=0)),
    "png-1bit": ("PNG", lambda rgb, p: _pil(_palette(rgb).convert("1"), "PNG")),
    "png-colour-key": ("PNG", lambda rgb, p: _pil(rgb, "PNG", transparency=tuple(int(v) for v in rgb[0, 0]))),
    "png-text-exif-icc": ("PNG", lambda rgb, p: _png_text(rgb)),
    "png-rgb16-exif-icc-xmp": ("PNG", lambda rgb, p: _ours(_deep(rgb), p, "PNG", exif=_exif(6), icc_profile=_icc(),
                                                          xmp=_XMP)),
    "png-grey-alpha16": ("PNG", lambda rgb, p: _ours(_deep(_alpha(_grey(rgb)[:, :, None])), p, "PNG")),
    "png-rgba16": ("PNG", lambda rgb, p: _cv2(_deep(_alpha(rgb)), ".png")),
    "png-grey16": ("PNG", lambda rgb, p: _cv2(_deep(_grey(rgb)), ".png")),
    "webp-lossy": ("WEBP", lambda rgb, p: _pil(rgb, "WEBP", quality=80)),
    "webp-lossless": ("WEBP", lambda rgb, p: _pil(rgb, "WEBP", lossless=True)),
    "webp-lossy-alpha": ("WEBP", lambda rgb, p: _pil(_alpha(rgb), "WEBP", quality=70)),
    "webp-lossless-alpha": ("WEBP", lambda rgb, p: _pil(_alpha(rgb), "WEBP", lossless=True)),
    "webp-exif-icc-xmp": ("WEBP", lambda rgb, p: _pil(rgb, "WEBP", exif=_exif(3), icc_profile=_icc(), xmp=_XMP)),
    "tiff-raw-rgb8": ("TIFF", lambda rgb, p: _pil(rgb, "TIFF")),
    "tiff-lzw-rgb8": ("TIFF", lambda rgb, p: _pil(rgb, "TIFF", compression="tiff_lzw")),
    "tiff-deflate-grey8": ("TIFF", lambda rgb, p: _pil(_grey(rgb), "TIFF", compression="tiff_deflate")),
    "tiff-packbits-rgba8": ("TIFF", lambda rgb, p: _pil(_alpha(rgb), "TIFF", compression="packbits")),
    "tiff-jpeg-rgb8": ("TIFF", lambda rgb, p: _pil(rgb, "TIFF", compression="jpeg")),
    "tiff-raw-rgb16-strips": ("TIFF", lambda rgb, p: _tifffile(_deep(rgb), photometric="rgb", rowsperstrip=8)),
    "tiff-zlib-rgb16": ("TIFF", lambda rgb, p: _tifffile(_deep(rgb), photometric="rgb", compression="zlib")),
    "tiff-bigendian-rgba16": ("TIFF", lambda rgb, p: _tifffile(_deep(_alpha(rgb)), photometric="rgb", byteorder=">",
                                                              extrasamples=["unassalpha"], rowsperstrip=16)),
    "tiff-tiled-grey16": ("TIFF", lambda rgb, p: _tifffile(_deep(_grey(rgb)), photometric="minisblack",
                                                          tile=(16, 16))),
    "tiff-lzw-rgb16": ("TIFF", lambda rgb, p: _cv2(_deep(rgb), ".tiff")),
    "tiff-ours-rgb16-exif-icc-xmp": ("TIFF", lambda rgb, p: _ours(_deep(rgb), p, "TIFF", exif=_exif(6),
                                                                 icc_profile=_icc(), xmp=_XMP)),
    "tiff-ours-rgba8": ("TIFF", lambda rgb, p: _ours(_alpha(rgb), p, "TIFF")),
    "bmp-rgb24": ("BMP", lambda rgb, p: _pil(rgb, "BMP")),
    "bmp-palette8": ("BMP", lambda rgb, p: _pil(_palette(rgb), "BMP")),
    "bmp-grey8": ("BMP", lambda rgb, p: _pil(_grey(rgb), "BMP")),
    "bmp-1bit": ("BMP", lambda rgb, p: _pil(_palette(rgb).convert("1"), "BMP")),
    "bmp-rgba32": ("BMP", lambda rgb, p: _ours(_alpha(rgb), p, "BMP")),
    "bmp-core24": ("BMP", lambda rgb, p: _bmp_core24(rgb)),
    "bmp-rgb565": ("BMP", lambda rgb, p: _bmp_rgb565(rgb)),
    "bmp-rle8": ("BMP", lambda rgb, p: _bmp_rle8(rgb)),
}
# fmt: on


# --------------------------------------------------------------------------------------------------
# structure: where the fields that decoders trust are, found leniently (a damaged file must not stop us)


@dataclass(frozen=True)
class Field:
    """An integer field of a file; ``crc`` = (start, end) when a PNG CRC of data[start:end] sits at end."""

    name: str
    offset: int
    size: int
    order: str  # "little" or "big"
    weight: float = 1.0
    crc: tuple[int, int] | None = None


def _u(data: bytes, offset: int, size: int, order: str) -> int:
    return int.from_bytes(data[offset : offset + size], order)  # type: ignore[arg-type]


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment; an SOS segment runs to the end of its scan data."""
    out: list[tuple[int, int, int]] = []
    pos, n = 2, len(data)
    while pos + 4 <= n and len(out) < 1024 and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            out.append((marker, pos, pos + 2))
            break
        end = pos + 2 + _u(data, pos + 2, 2, "big")
        if marker == 0xDA:
            while True:
                end = data.find(b"\xff", end)
                if end < 0 or end + 1 >= n:
                    end = n
                    break
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7 or data[end + 1] == 0xFF:
                    end += 1
                    continue
                break
        out.append((marker, pos, min(end, n)))
        pos = end
    return out


def jpeg_fields(data: bytes) -> list[Field]:
    spec: list[tuple[str, int, int, float]] = []  # name, offset, size, weight
    for marker, s, _ in jpeg_segments(data):
        if marker == 0xD9:
            continue
        spec.append((f"len-FF{marker:02X}", s + 2, 2, 0.5))
        if marker in _JPEG_SOF:
            spec += [("SOF.precision", s + 4, 1, 2), ("SOF.height", s + 5, 2, 3), ("SOF.width", s + 7, 2, 3)]
            spec.append(("SOF.components", s + 9, 1, 3))
            for k in range(min(data[s + 9] if s + 9 < len(data) else 0, 4)):
                spec += [(f"SOF.sampling{k}", s + 11 + 3 * k, 1, 1), (f"SOF.qt{k}", s + 12 + 3 * k, 1, 1)]
        elif marker == 0xDB:
            spec.append(("DQT.pq-tq", s + 4, 1, 1))
        elif marker == 0xC4:
            spec += [("DHT.tc-th", s + 4, 1, 1)] + [(f"DHT.count{k}", s + 5 + k, 1, 0.2) for k in range(16)]
        elif marker == 0xDA and s + 4 < len(data):
            ncomp = min(data[s + 4], 4)
            spec.append(("SOS.components", s + 4, 1, 2))
            for k in range(ncomp):
                spec += [(f"SOS.selector{k}", s + 5 + 2 * k, 1, 1), (f"SOS.tables{k}", s + 6 + 2 * k, 1, 1)]
            spec += [(n, s + 5 + 2 * ncomp + i, 1, 1) for i, n in enumerate(("SOS.Ss", "SOS.Se", "SOS.AhAl"))]
        elif marker == 0xDD:
            spec.append(("DRI.interval", s + 4, 2, 2))
    return [Field(n, o, z, "big", w) for n, o, z, w in spec if o + z <= len(data)]


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start of the length field, end after the CRC) of each complete chunk."""
    out: list[tuple[bytes, int, int]] = []
    pos = 8
    while pos + 12 <= len(data) and len(out) < 4096:
        end = pos + 12 + _u(data, pos, 4, "big")
        if end > len(data):
            break
        out.append((bytes(data[pos + 4 : pos + 8]), pos, end))
        pos = end
    return out


def png_fields(data: bytes) -> list[Field]:
    fields = []
    chunks = png_chunks(data)
    if chunks and chunks[0][0] == b"IHDR" and chunks[0][2] >= 33:
        crc = (12, 29)
        names = (("width", 16, 4), ("height", 20, 4), ("depth", 24, 1), ("colour-type", 25, 1))
        names += (("compression", 26, 1), ("filter", 27, 1), ("interlace", 28, 1))
        fields += [Field(f"IHDR.{n}", o, s, "big", 3, crc) for n, o, s in names]
    fields += [Field(f"len-{t.decode('latin-1')}", s, 4, "big") for t, s, _ in chunks]
    return fields


def riff_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(fourcc, start, end after padding) of the RIFF chunks of a WebP file."""
    out: list[tuple[bytes, int, int]] = []
    pos = 12
    while pos + 8 <= len(data) and len(out) < 1024:
        size = _u(data, pos + 4, 4, "little")
        end = pos + 8 + size + (size & 1)
        out.append((bytes(data[pos : pos + 4]), pos, min(end, len(data))))
        if end > len(data):
            break
        pos = end
    return out


def webp_fields(data: bytes) -> list[Field]:
    fields = [Field("RIFF.size", 4, 4, "little", 2)]
    for fourcc, s, _ in riff_chunks(data):
        name = fourcc.decode("latin-1").strip()
        fields.append(Field(f"{name}.size", s + 4, 4, "little", 2))
        if fourcc == b"VP8 ":
            fields += [Field("VP8.frame-tag", s + 8, 3, "little"), Field("VP8.width", s + 14, 2, "little", 3)]
            fields += [Field("VP8.height", s + 16, 2, "little", 3), Field("VP8.start-code", s + 11, 3, "little")]
        elif fourcc == b"VP8L":
            fields += [Field("VP8L.signature", s + 8, 1, "little"), Field("VP8L.size-bits", s + 9, 4, "little", 4)]
        elif fourcc == b"VP8X":
            fields += [Field("VP8X.flags", s + 8, 1, "little", 2), Field("VP8X.width", s + 12, 3, "little", 2)]
            fields.append(Field("VP8X.height", s + 15, 3, "little", 2))
        elif fourcc == b"ALPH":
            fields.append(Field("ALPH.header", s + 8, 1, "little", 2))
    return [f for f in fields if f.offset + f.size <= len(data)]


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}
_TIFF_NAMES = {256: "ImageWidth", 257: "ImageLength", 258: "BitsPerSample", 259: "Compression",
               262: "Photometric", 273: "StripOffsets", 274: "Orientation", 277: "SamplesPerPixel",
               278: "RowsPerStrip", 279: "StripByteCounts", 284: "PlanarConfig", 317: "Predictor",
               322: "TileWidth", 323: "TileLength", 324: "TileOffsets", 325: "TileByteCounts",
               338: "ExtraSamples", 339: "SampleFormat", 34665: "ExifIFD", 34853: "GPSIFD", 34675: "ICC"}  # fmt: skip


def tiff_fields(data: bytes, base: int = 0, prefix: str = "TIFF", crc: tuple[int, int] | None = None) -> list[Field]:
    """Header, IFD entry counts, entries' type/count/value and their first array elements, next-IFD links.

    ``base`` is where the TIFF structure starts (an EXIF block inside a JPEG, PNG or WebP file).
    """
    order = {b"II": "little", b"MM": "big"}.get(bytes(data[base : base + 2]))
    if order is None or base + 8 > len(data) or _u(data, base + 2, 2, order) != 42:
        return []
    fields = [Field(f"{prefix}.IFD0-offset", base + 4, 4, order, 2, crc)]
    queue, seen = [_u(data, base + 4, 4, order)], set()
    while queue and len(seen) < 6:
        ifd = base + queue.pop(0)
        if ifd in seen or ifd + 2 > len(data):
            continue
        seen.add(ifd)
        count = _u(data, ifd, 2, order)
        fields.append(Field(f"{prefix}.entry-count", ifd, 2, order, 3, crc))
        for k in range(min(count, 64)):
            e = ifd + 2 + 12 * k
            if e + 12 > len(data):
                break
            tag, typ, n = _u(data, e, 2, order), _u(data, e + 2, 2, order), _u(data, e + 4, 4, order)
            name = f"{prefix}.{_TIFF_NAMES.get(tag, tag)}"
            weight = 3.0 if tag in _TIFF_NAMES else 0.5
            size = _TIFF_TYPE_SIZES.get(typ, 1)
            inline = n * size <= 4
            value_size = 2 if inline and size == 2 and order == "big" else 4  # a big-endian SHORT sits first
            fields += [
                Field(f"{name}.type", e + 2, 2, order, weight / 2, crc),
                Field(f"{name}.count", e + 4, 4, order, weight, crc),
            ]
            fields.append(Field(f"{name}.value", e + 8, value_size, order, weight, crc))
            if not inline and size in (2, 4):
                at = base + _u(data, e + 8, 4, order)
                fields += [Field(f"{name}[{j}]", at + j * size, size, order, weight / 2, crc) for j in range(min(n, 4))]
            if tag in (34665, 34853):
                queue.append(_u(data, e + 8, 4, order))
        fields.append(Field(f"{prefix}.next-IFD", ifd + 2 + 12 * count, 4, order, 1, crc))
        if len(seen) == 1:
            queue.append(_u(data, ifd + 2 + 12 * count, 4, order))
    return [f for f in fields if f.offset + f.size <= len(data)]


def bmp_fields(data: bytes) -> list[Field]:
    header = _u(data, 14, 4, "little")
    fields = [Field("file-size", 2, 4, "little"), Field("pixel-offset", 10, 4, "little", 3)]
    fields.append(Field("header-size", 14, 4, "little", 3))
    if header == 12:
        names = (("width", 18, 2), ("height", 20, 2), ("planes", 22, 2), ("bpp", 24, 2))
    else:
        names = (("width", 18, 4), ("height", 22, 4), ("planes", 26, 2), ("bpp", 28, 2), ("compression", 30, 4))
        names += (("image-size", 34, 4), ("x-ppm", 38, 4), ("colours-used", 46, 4), ("colours-important", 50, 4))
        names += tuple((f"mask{k}", 54 + 4 * k, 4) for k in range(4))
    fields += [
        Field(n, o, s, "little", 3 if n in ("width", "height", "bpp", "compression") else 1) for n, o, s in names
    ]
    return [f for f in fields if f.offset + f.size <= len(data)]


def exif_fields(data: bytes, fmt: str) -> list[Field]:
    """Fields of the EXIF block embedded in a JPEG (APP1), PNG (eXIf, CRC kept valid) or WebP (EXIF)."""
    if fmt == "JPEG":
        for marker, s, _ in jpeg_segments(data):
            if marker == 0xE1 and data[s + 4 : s + 10] == b"Exif\x00\x00":
                return tiff_fields(data, s + 10, "EXIF")
    elif fmt == "PNG":
        for ctype, s, e in png_chunks(data):
            if ctype == b"eXIf":
                return tiff_fields(data, s + 8, "EXIF", (s + 4, e - 4))
    elif fmt == "WEBP":
        for fourcc, s, _ in riff_chunks(data):
            if fourcc == b"EXIF":
                return tiff_fields(data, s + 8 + (6 if data[s + 8 : s + 14] == b"Exif\x00\x00" else 0), "EXIF")
    return []


# --------------------------------------------------------------------------------------------------
# mutations: each edits ``data`` in place and returns what it did, or None where it does not apply

_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 63, 64, 127, 128, 255, 256, 0x7FFF, 0x8000, 0xFFFF)
_INTERESTING += (0x10000, 0xFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


#: How a field's value is changed: the classic boundaries, off-by-a-few, scaled, a bit flipped, anything.
_VALUE_EDITS: tuple[tuple[float, Callable[[random.Random, int, int], int]], ...] = (
    (30, lambda rng, old, bits: rng.choice(_INTERESTING)),
    (25, lambda rng, old, bits: old + rng.choice((-3, -2, -1, 1, 2, 3))),
    (15, lambda rng, old, bits: old * rng.choice((2, 3, 4, 16, 256))),
    (10, lambda rng, old, bits: old // rng.choice((2, 4, 256))),
    (10, lambda rng, old, bits: old ^ (1 << rng.randrange(bits))),
    (10, lambda rng, old, bits: rng.getrandbits(bits)),
)


def _interesting(rng: random.Random, old: int, size: int) -> int:
    edit = rng.choices([e for _, e in _VALUE_EDITS], weights=[w for w, _ in _VALUE_EDITS])[0]
    return edit(rng, old, 8 * size) & ((1 << (8 * size)) - 1)


def _fix_crc(data: bytearray, span: tuple[int, int]) -> None:
    start, end = span
    if end + 4 <= len(data):
        data[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(data[start:end])))


def _edit_field(rng: random.Random, data: bytearray, fields: list[Field]) -> str | None:
    if not fields:
        return None
    f = rng.choices(fields, weights=[f.weight for f in fields])[0]
    old = _u(data, f.offset, f.size, f.order)
    new = _interesting(rng, old, f.size)
    data[f.offset : f.offset + f.size] = new.to_bytes(f.size, f.order)  # type: ignore[arg-type]
    fixed = f.crc is not None and rng.random() < 0.8
    if fixed:
        _fix_crc(data, f.crc)  # type: ignore[arg-type]
    return f"field {f.name}: {old}->{new}" + (" (CRC fixed)" if fixed else "")


def _position(rng: random.Random, n: int) -> int:
    """Half the edits land in the first KB, where the headers are."""
    return rng.randrange(min(n, 1024)) if rng.random() < 0.5 else rng.randrange(n)


def bit_flips(rng: random.Random, data: bytearray, fmt: str) -> str | None:
    n = min(32, int(2 ** (rng.random() * 5.0)))
    for _ in range(n):
        data[_position(rng, len(data))] ^= 1 << rng.randrange(8)
    return f"{n} bit flips"


def byte_run(rng: random.Random, data: bytearray, fmt: str) -> str | None:
    at, length = _position(rng, len(data)), int(2 ** (rng.random() * 6.0))
    length = min(length, len(data) - at)
    kind = rng.choice(("random", "zero", "ff", "copy"))
    if kind == "random":
        run = rng.randbytes(length)
    elif kind == "copy":
        src = rng.randrange(len(data) - length + 1)
        run = bytes(data[src : src + length])
    else:
        run = (b"\x00" if kind == "zero" else b"\xff") * length
    data[at : at + length] = run
    return f"{length} {kind} bytes at {at}"


def truncation(rng: random.Random, data: bytearray, fmt: str) -> str | None:
    n, r = len(data), rng.random()
    lo, hi = (0, min(n, 512)) if r < 0.3 else (max(0, n - 64), n) if r < 0.6 else (0, n)  # header, tail, anywhere
    cut = rng.randrange(lo, hi)
    del data[cut:]
    return f"truncated to {cut} of {n} bytes"


def range_op(rng: random.Random, data: bytearray, fmt: str) -> str | None:
    at = _position(rng, len(data))
    length = min(int(2 ** (rng.random() * 12.0)), len(data) - at)
    op = rng.choice(("duplicated", "deleted", "inserted"))
    if op == "duplicated":
        data[at:at] = data[at : at + length]
    elif op == "deleted":
        del data[at : at + length]
    else:
        length = min(length, 64)
        data[at:at] = rng.randbytes(length)
    return f"{op} {length} bytes at {at}"


def _chunk_op(rng: random.Random, data: bytearray, chunks: list[tuple[bytes, int, int]], kind: str) -> str | None:
    if not chunks:
        return None
    ctype, s, e = rng.choice(chunks)
    name = f"{kind} " + (ctype.decode("latin-1").strip() if isinstance(ctype, bytes) else f"FF{ctype:02X}")
    piece = bytes(data[s:e])
    op = rng.choice(("duplicated", "deleted", "moved"))
    if op == "duplicated":
        times = rng.choice((1, 1, 2, 50, 1000))  # a flood of scans or chunks costs some decoders dearly
        times = max(1, min(times, (2 << 20) // max(1, len(piece))))
        data[e:e] = piece * times
        return f"{name} duplicated x{times}"
    del data[s:e]
    if op == "moved":
        others = [c[1] for c in chunks if c[1] < s] + [c[2] - (e - s) for c in chunks if c[1] > s]
        at = rng.choice(others) if others else s
        data[at:at] = piece
    return f"{name} {op}"


def _png_chunk_bytes(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def png_payload(rng: random.Random, data: bytearray, fmt: str) -> str | None:
    """Damage a chunk's payload and fix its CRC, so the damage reaches the parser instead of the checksum."""
    chunks = [c for c in png_chunks(data) if c[2] - c[1] > 12]
    if not chunks:
        return None
    ctype, s, e = rng.choices(chunks, weights=[1 if c[0] in (b"IHDR", b"IDAT") else 3 for c in chunks])[0]
    n = rng.choice((1, 2, 4, 8))
    for _ in range(n):
        at = s + 8 + rng.randrange(e - s - 12)
        data[at] = rng.randrange(256) if rng.random() < 0.5 else data[at] ^ (1 << rng.randrange(8))
    _fix_crc(data, (s + 4, e - 4))
    return f"{n} bytes of {ctype.decode('latin-1')} payload (CRC fixed)"


def png_resize_chunk(rng: random.Random, data: bytearray, fmt: str) -> str | None:
    """Shorten or lengthen a chunk, with a valid CRC: a PLTE of 3 colours, an IHDR of 12 bytes, ..."""
    chunks = png_chunks(data)
    if not chunks:
        return None
    ctype, s, e = rng.choice(chunks)
    payload = bytes(data[s + 8 : e - 4])
    new = _interesting(rng, len(payload), 2) % 4096
    grow = max(0, new - len(payload))
    payload = payload[:new] + (rng.randbytes(grow) if rng.random() < 0.5 else bytes(grow))
    data[s:e] = _png_chunk_bytes(ctype, payload[:new])
    return f"chunk {ctype.decode('latin-1')} resized to {new} bytes (CRC fixed)"


def png_idat_remix(rng: random.Random, data: bytearray, fmt: str) -> str | None:
    """Change the inflated scanlines (filter bytes, length, values) and recompress: valid zlib, bad image."""
    chunks = png_chunks(data)
    idats = [c for c in chunks if c[0] == b"IDAT"]
    if not idats:
        return None
    inflater = zlib.decompressobj()
    try:
        raw = bytearray(inflater.decompress(b"".join(bytes(data[s + 8 : e - 4]) for _, s, e in idats), 1 << 26))
    except zlib.error:
        return None
    op = rng.choice(("shortened", "lengthened", "filter bytes", "flipped"))
    if op == "shortened" and raw:
        del raw[rng.randrange(len(raw)) :]
    elif op == "lengthened":
        raw += rng.randbytes(rng.choice((1, 100, 10_000)))
    elif op == "filter bytes" and raw:
        for _ in range(rng.choice((1, 3, 10))):
            raw[rng.randrange(len(raw))] = rng.choice((5, 6, 255, rng.randrange(256)))
    elif raw:
        for _ in range(8):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    first, last = idats[0][1], idats[-1][2]
    rest = b"".join(bytes(data[s:e]) for t, s, e in chunks if t != b"IDAT" and first < s < last)
    data[first:last] = _png_chunk_bytes(b"IDAT", zlib.compress(bytes(raw), 6)) + rest
    return f"IDAT scanlines {op} and recompressed"


Mutator = Callable[[random.Random, bytearray, str], "str | None"]


def _fields_of(parse: Callable[[bytes], list[Field]]) -> Mutator:
    return lambda rng, data, fmt: _edit_field(rng, data, parse(data))


def _chunks_of(parse: Callable[[bytes], list], kind: str) -> Mutator:
    return lambda rng, data, fmt: _chunk_op(rng, data, parse(data), kind)


def _exif_field(rng: random.Random, data: bytearray, fmt: str) -> str | None:
    return _edit_field(rng, data, exif_fields(data, fmt))


_GENERIC: list[tuple[float, Mutator]] = [(20, bit_flips), (10, byte_run), (15, truncation), (8, range_op)]
_BY_FORMAT: dict[str, list[tuple[float, Mutator]]] = {
    "JPEG": [(30, _fields_of(jpeg_fields)), (10, _chunks_of(jpeg_segments, "segment")), (8, _exif_field)],
    "PNG": [(15, _fields_of(png_fields)), (15, png_payload), (10, png_idat_remix), (5, png_resize_chunk)],
    "WEBP": [(30, _fields_of(webp_fields)), (10, _chunks_of(riff_chunks, "chunk")), (5, _exif_field)],
    "TIFF": [(45, _fields_of(tiff_fields))],
    "BMP": [(40, _fields_of(bmp_fields))],
}
_BY_FORMAT["PNG"] += [(8, _chunks_of(png_chunks, "chunk")), (5, _exif_field)]


def make_case(seeds: dict[str, list[Seed]], run_seed: int, index: int) -> Case:
    """Case ``index`` of run ``run_seed``: always the same bytes, whatever else the run does."""
    rng = random.Random(f"{run_seed}:{index}")
    fmt = FORMATS[index % len(FORMATS)]
    seed = rng.choice(seeds[fmt])
    data = bytearray(seed.data)
    table = _GENERIC + _BY_FORMAT[fmt]
    done = []
    for _ in range(rng.choices((1, 2, 3), weights=(70, 20, 10))[0]):
        if not data:
            break  # truncated to nothing: the empty file is a case too
        mutate = rng.choices([m for _, m in table], weights=[w for w, _ in table])[0]
        done.append(mutate(rng, data, fmt) or bit_flips(rng, data, fmt))
    return Case(index, seed, tuple(done), bytes(data))
