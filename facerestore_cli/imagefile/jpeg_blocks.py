"""Write a restored JPEG in which only the MCUs around the faces are new.

Re-encoding a whole JPEG changes every pixel of the photo (a quality-100 source loses up to 23 levels far
from any face) and often doubles the size of small, low-quality files. A JPEG is a grid of MCUs whose
quantised DCT coefficients are independent of each other, so this module keeps the source's own
coefficients for every MCU that no changed pixel touches and re-encodes only the others, from the new
pixels, with the source's own quantisation tables and sampling factors. The untouched MCUs then decode
bit-identically, except for the thin ring that chroma upsampling mixes across MCU edges: `footprint` says
exactly which 8x8 blocks may differ.

The entropy coding is libjpeg's, through ``jpeglib``: libjpeg-turbo writes sequential files (Huffman with
optimised tables, or arithmetic when the source is), MozJPEG writes progressive ones (its defaults make a
transcode progressive). jpeglib cannot ask libjpeg for restart markers when writing coefficients, so a
sequential Huffman source with restart markers is coded here instead, in numpy. libjpeg writes its own
JFIF/Adobe header and renumbers the components, so the header is rebuilt around its tables and scans:
the source's APPn and COM segments byte for byte and in order, the source's component ids.

Files that cannot be patched exactly are refused with a reason; `estimate_quality` then tells the caller
which IJG quality re-encodes the photo at the source's own quality rather than a fixed one.
"""

from __future__ import annotations

import functools
import re
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facerestore_cli.imagefile.jpeg_huffman import ZIGZAG as _ZIGZAG
from facerestore_cli.imagefile.jpeg_huffman import encode_sequential, segment

__all__ = [
    "JpegLayout",
    "PatchResult",
    "SourceBlocks",
    "estimate_quality",
    "footprint",
    "inspect_jpeg",
    "patch_jpeg",
    "patch_jpeg_with_stats",
    "read_source_blocks",
]

# The libjpeg flavours used: turbo reads and writes sequential files the way most software does;
# MozJPEG's defaults turn coefficient transcoding into progressive output with optimised scans.
_READ_VERSION = "turbo210"
_BASELINE_VERSION = "turbo210"
_PROGRESSIVE_VERSION = "mozjpeg403"

# jpeglib keeps libjpeg state (the selected library, marker buffers) in module globals.
_JPEGLIB_LOCK = threading.Lock()

_EOI, _SOS, _DQT, _DRI, _DHP, _EXP, _COM, _APP14 = 0xD9, 0xDA, 0xDB, 0xDD, 0xDE, 0xDF, 0xFE, 0xEE
_DHT = 0xC4
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_ARITHMETIC_SOF = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
_HIERARCHICAL_SOF = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# A marker inside entropy-coded data: 0xFF followed by anything but a stuffed zero, a restart marker or fill.
_NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")

# The IJG example tables (ITU-T T.81 Annex K), natural order: what libjpeg, Pillow and most cameras scale.
# fmt: off
_STD_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
])
# fmt: on
_STD_CHROMA = np.full((8, 8), 99, dtype=np.int64)
_STD_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


@dataclass(frozen=True)
class JpegLayout:
    """What a JPEG is, as far as patching it block by block is concerned.

    ``sampling`` holds each component's (horizontal, vertical) factors in frame order; ``mcu`` is the MCU
    size in pixels as (height, width), the unit that is either copied or re-encoded.
    """

    width: int
    height: int
    components: int
    sampling: tuple[tuple[int, int], ...]
    mcu: tuple[int, int]
    progressive: bool
    quality: int
    exact_possible: bool
    reason: str | None
    orientation: int = 1
    restart_interval: int = 0
    arithmetic: bool = False


@dataclass(frozen=True)
class PatchResult:
    """A patched file and how much of it was re-encoded, for logs and size budgets."""

    data: bytes
    layout: JpegLayout
    reencoded_mcus: int
    total_mcus: int

    @property
    def reencoded_fraction(self) -> float:
        return self.reencoded_mcus / self.total_mcus if self.total_mcus else 0.0


@dataclass
class _Frame:
    marker: int
    precision: int
    height: int
    width: int
    ids: list[int]
    sampling: list[tuple[int, int]]
    tables: list[int]


@dataclass
class _Parsed:
    """A JPEG cut into its segments: ``spans`` are (marker, start, end) in file order, a scan's span
    running to the end of its entropy-coded data."""

    spans: list[tuple[int, int, int]] = field(default_factory=list)
    segments: list[bytes] = field(default_factory=list)  # APPn and COM segments, raw, in file order
    frame: _Frame | None = None
    qtables: dict[int, np.ndarray] = field(default_factory=dict)
    restart_interval: int = 0
    trailing: bytes = b""
    has_dhp: bool = False
    scans: int = 0
    adobe_transform: int | None = None
    orientation: int = 1
    #: the Huffman tables, each as its class/id byte + code counts + symbols
    huffman: list[bytes] = field(default_factory=list)


def _parse(data: bytes) -> _Parsed:
    """Split a JPEG into segments, reading only what patching needs; raises ValueError on non-JPEG."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
    parsed = _Parsed()
    pos, n = 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise ValueError(f"corrupt JPEG: expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker, start = data[pos], pos - 1
        pos += 1
        if marker == _EOI:
            parsed.trailing = data[pos:]
            return parsed
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        if pos + 2 > n:
            raise ValueError("truncated JPEG segment header")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        end = pos + length
        if length < 2 or end > n:
            raise ValueError(f"corrupt JPEG: segment 0xFF{marker:02X} runs past the end of the file")
        payload = data[pos + 2 : end]
        if marker == _SOS:
            match = _NEXT_MARKER.search(data, end)
            end = match.start() if match else n
            parsed.scans += 1
        _readsegment(parsed, marker, payload, data[start:end])
        parsed.spans.append((marker, start, end))
        pos = end
    return parsed  # no EOI: libjpeg tolerates a missing one, so do the same


def _readsegment(parsed: _Parsed, marker: int, payload: bytes, raw: bytes) -> None:
    if 0xE0 <= marker <= 0xEF or marker == _COM:
        parsed.segments.append(raw)
        if marker == _APP14 and payload[:5] == b"Adobe" and len(payload) >= 12:
            parsed.adobe_transform = payload[11]
        elif marker == 0xE1 and payload[:6] == b"Exif\x00\x00" and parsed.orientation == 1:
            parsed.orientation = _exif_orientation(payload[6:])
    elif marker in _SOF_MARKERS and parsed.frame is None:
        precision, height, width, count = struct.unpack(">BHHB", payload[:6])
        comps = [payload[6 + 3 * i : 9 + 3 * i] for i in range(count)]
        ids, sampling, tables = [c[0] for c in comps], [(c[1] >> 4, c[1] & 15) for c in comps], [c[2] for c in comps]
        parsed.frame = _Frame(marker, precision, height, width, ids, sampling, tables)
    elif marker == _DQT and parsed.scans == 0:
        i = 0
        while i < len(payload):
            wide, table_id = payload[i] >> 4, payload[i] & 15
            size = 128 if wide else 64
            values = np.frombuffer(payload[i + 1 : i + 1 + size], dtype=">u2" if wide else np.uint8)
            natural = np.zeros(64, dtype=np.int64)
            natural[_ZIGZAG] = values
            parsed.qtables[table_id] = natural.reshape(8, 8)
            i += 1 + size
    elif marker == _DHT:
        i = 0
        while i + 17 <= len(payload):
            size = 17 + sum(payload[i + 1 : i + 17])
            parsed.huffman.append(payload[i : i + size])
            i += size
    elif marker == _DRI and parsed.scans == 0:
        (parsed.restart_interval,) = struct.unpack(">H", payload[:2])
    elif marker in (_DHP, _EXP):
        parsed.has_dhp = True


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag of IFD0, 1 when absent or unreadable (a broken EXIF must not block a patch)."""
    try:
        endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(endian + "I", tiff[4:8])
        (count,) = struct.unpack(endian + "H", tiff[ifd : ifd + 2])
        for k in range(count):
            tag, kind, _, value = struct.unpack(endian + "HHI4s", tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k])
            if tag == 0x0112 and kind == 3:
                orientation = struct.unpack(endian + "H", value[:2])[0]
                return orientation if 1 <= orientation <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1


def _refusal(parsed: _Parsed, *, orientation_matters: bool = True) -> str | None:
    """Why the file's blocks cannot be copied exactly, or None when they can."""
    frame = parsed.frame
    if frame is None:
        return "no frame header (SOF): not a complete JPEG image"
    if frame.marker in _LOSSLESS_SOF:
        return "lossless JPEG (predictive, no DCT blocks to copy)"
    if frame.marker in _HIERARCHICAL_SOF or parsed.has_dhp:
        return "hierarchical JPEG: its frames refine each other, so blocks cannot be copied one by one"
    if frame.marker in _ARITHMETIC_SOF and frame.marker in _PROGRESSIVE_SOF:
        return (
            "progressive arithmetic-coded JPEG: MozJPEG, which writes progressive transcodes, has no "
            "arithmetic coder, and libjpeg-turbo's transcoder writes sequential scans only"
        )
    if frame.precision != 8:
        return f"{frame.precision}-bit samples: the libjpeg builds used here handle 8-bit JPEG only"
    if len(frame.ids) == 4 or parsed.adobe_transform == 2:
        kind = "YCCK" if parsed.adobe_transform == 2 else "CMYK"
        return f"{kind} JPEG (4 components): the restored pixels are RGB and cannot be re-encoded as ink"
    if len(frame.ids) not in (1, 3):
        return f"{len(frame.ids)}-component JPEG: only grey and YCbCr are supported"
    if len(frame.ids) == 3 and (parsed.adobe_transform == 0 or bytes(frame.ids) == b"RGB"):
        return "RGB-coded JPEG (no YCbCr transform): the encoder used here writes YCbCr only"
    if frame.height == 0:
        return "the height is set by a DNL marker after the scan, which the libjpeg builds used here refuse"
    if not all(1 <= h <= 4 and 1 <= v <= 4 for h, v in frame.sampling) or not parsed.qtables:
        return "corrupt frame header (sampling factors outside 1-4, or no quantisation tables)"
    hmax = max(h for h, _ in frame.sampling)
    vmax = max(v for _, v in frame.sampling)
    if any(hmax % h or vmax % v for h, v in frame.sampling):
        return f"fractional chroma sampling {frame.sampling}: libjpeg cannot decode it"
    if parsed.orientation != 1 and orientation_matters:
        return (
            f"EXIF orientation {parsed.orientation}: pixels in display orientation do not line up with the "
            "stored blocks (pass stored_orientation=True with pixels rotated back to stored orientation)"
        )
    return None


def _ijg_table(base: np.ndarray, quality: int, baseline: bool) -> np.ndarray:
    """libjpeg's jpeg_quality_scaling + jpeg_add_quant_table."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255 if baseline else 32767)


def _estimate(parsed: _Parsed) -> int:
    frame = parsed.frame
    if frame is None or not parsed.qtables:
        return 75  # libjpeg's default: the least surprising guess for a file without tables
    luma = np.maximum(parsed.qtables.get(frame.tables[0], next(iter(parsed.qtables.values()))), 1)
    chroma = parsed.qtables.get(frame.tables[1]) if len(frame.tables) > 1 else None
    chroma = None if chroma is None else np.maximum(chroma, 1)
    baseline = max(t.max() for t in parsed.qtables.values()) <= 255

    # log ratios weigh a factor-of-two miss the same on a coarse and a fine coefficient
    err = np.abs(np.log(luma) - _log_ijg_tables("luma", baseline)).sum(axis=(1, 2))
    if chroma is not None:
        err += np.abs(np.log(chroma) - _log_ijg_tables("chroma", baseline)).sum(axis=(1, 2))
    return int(100 - np.argmin(err))  # qualities from 100 down: ties go to the higher, never coarser


@functools.cache
def _log_ijg_tables(which: str, baseline: bool) -> np.ndarray:
    """log of the IJG tables at qualities 100, 99, ..., 1: (100, 8, 8)."""
    base = _STD_LUMA if which == "luma" else _STD_CHROMA
    return np.log(np.stack([_ijg_table(base, q, baseline) for q in range(100, 0, -1)]).astype(np.float64))


def _layout(parsed: _Parsed) -> JpegLayout:
    frame = parsed.frame
    reason = _refusal(parsed)
    if frame is None:
        return JpegLayout(0, 0, 0, (), (8, 8), False, 75, False, reason)
    sampling = tuple(frame.sampling) if len(frame.ids) > 1 else ((1, 1),)
    mcu = (8 * max(v for _, v in sampling), 8 * max(h for h, _ in sampling))
    return JpegLayout(
        width=frame.width,
        height=frame.height,
        components=len(frame.ids),
        sampling=sampling,
        mcu=mcu,
        progressive=frame.marker in _PROGRESSIVE_SOF,
        quality=_estimate(parsed),
        exact_possible=reason is None,
        reason=reason,
        orientation=parsed.orientation,
        restart_interval=parsed.restart_interval,
        arithmetic=frame.marker in _ARITHMETIC_SOF,
    )


def inspect_jpeg(data: bytes) -> JpegLayout:
    """Describe a JPEG from its headers alone (no decoding), so callers can choose a path cheaply."""
    return _layout(_parse(data))


def estimate_quality(data: bytes) -> int:
    """The IJG quality (1-100) whose standard tables best match the file's luma and chroma tables.

    For files that must be re-encoded whole, so that they keep the source's own quality instead of a
    fixed one. Tables written by libjpeg-based software (Pillow, OpenCV, most tools) are recovered
    exactly; camera tables get the nearest IJG quality.
    """
    return _estimate(_parse(data))


def _mcu_grid(layout: JpegLayout) -> tuple[int, int]:
    mh, mw = layout.mcu
    return -(-layout.height // mh), -(-layout.width // mw)


def _mcu_mask(layout: JpegLayout, changed: np.ndarray) -> np.ndarray:
    """Which MCUs (rows x cols) contain at least one changed pixel."""
    if changed.shape != (layout.height, layout.width):
        raise ValueError(f"changed mask is {changed.shape}, the image is {(layout.height, layout.width)}")
    mh, mw = layout.mcu
    rows, cols = _mcu_grid(layout)
    padded = np.zeros((rows * mh, cols * mw), dtype=bool)
    padded[: layout.height, : layout.width] = changed
    return padded.reshape(rows, mh, cols, mw).any(axis=(1, 3))


def footprint(layout: JpegLayout, changed: np.ndarray) -> np.ndarray:
    """Pixels (bool HxW) that may decode differently from the source once the changed MCUs are re-encoded.

    That is the re-encoded MCUs themselves plus, where chroma is subsampled, one ring of 8x8 blocks
    around them: libjpeg-turbo's fancy upsampling (what Pillow, browsers and most viewers use) blends
    each output pixel with the neighbouring chroma sample, which can lie in the next MCU. One block
    covers any upsampler that reaches at most one chroma sample (8 px >= 4 px, the widest sample).
    Everything outside is bit-identical to the source with any decoder that decodes it the same way.
    """
    mcu_mask = _mcu_mask(layout, np.asarray(changed, dtype=bool))
    mh, mw = layout.mcu
    blocks = np.repeat(np.repeat(mcu_mask, mh // 8, axis=0), mw // 8, axis=1)
    blocks = blocks[: -(-layout.height // 8), : -(-layout.width // 8)]
    for axis, factor in ((0, 1), (1, 0)):  # vertical factors are index 1 of (h, v); rows are axis 0
        if any(s[factor] != max(t[factor] for t in layout.sampling) for s in layout.sampling):
            grown = blocks.copy()
            if axis == 0:
                grown[1:] |= blocks[:-1]
                grown[:-1] |= blocks[1:]
            else:
                grown[:, 1:] |= blocks[:, :-1]
                grown[:, :-1] |= blocks[:, 1:]
            blocks = grown
    pixels = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)
    return pixels[: layout.height, : layout.width]


def _as_pixels(pixels: np.ndarray, layout: JpegLayout) -> np.ndarray:
    """The new image as HxWxC uint8 matching the JPEG's colour model."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, not {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[:2] != (layout.height, layout.width):
        raise ValueError(f"pixels are {pixels.shape[:2]}, the JPEG is {(layout.height, layout.width)}")
    if layout.components == 1 and pixels.shape[2] == 3:
        # the luma weights libjpeg uses for RGB -> grey, so a grey source gets what its encoder would make
        grey = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        pixels = np.clip(np.floor(grey + 0.5), 0, 255).astype(np.uint8)[:, :, None]
    if pixels.shape[2] != (1 if layout.components == 1 else 3):
        raise ValueError(f"pixels have {pixels.shape[2]} channels for a {layout.components}-component JPEG")
    return np.ascontiguousarray(pixels)


def _strip(data: bytes, parsed: _Parsed) -> bytes:
    """The source without APPn/COM segments or trailing bytes: what libjpeg is given, so that it neither
    copies markers we rebuild ourselves nor trips over jpeglib's 50-marker limit."""
    kept = [data[s:e] for m, s, e in parsed.spans if not (0xE0 <= m <= 0xEF or m == _COM)]
    return b"\xff\xd8" + b"".join(kept) + b"\xff\xd9"


def _coefficients(dct) -> list[np.ndarray]:
    planes = [dct.Y] + ([dct.Cb, dct.Cr] if dct.has_chrominance else [])
    return [np.array(p, dtype=np.int16) for p in planes]


def _encode_region(
    jpeglib, work: Path, crop: np.ndarray, samp_factor: np.ndarray, tables: np.ndarray
) -> list[np.ndarray]:
    """Encode pixels with the source's tables and sampling and return their quantised coefficients."""
    image = jpeglib.from_spatial(crop)
    image.samp_factor = samp_factor
    path = work / "region.jpg"
    # one table per component, numbered like the components: jpeglib fills slot i from table i
    image.write_spatial(str(path), qt=tables, quant_tbl_no=np.arange(len(tables)))
    encoded = jpeglib.read_dct(str(path))
    got = np.stack([encoded.get_component_qt(k) for k in range(len(tables))])
    if not np.array_equal(got.astype(np.int64), tables.astype(np.int64)):
        raise RuntimeError("libjpeg did not keep the source's quantisation tables when re-encoding")
    return _coefficients(encoded)


@dataclass
class SourceBlocks:
    """A JPEG's headers and quantised coefficients, read once: :func:`read_source_blocks` can run ahead,
    while the photo's faces are still being found, and :func:`patch_jpeg_with_stats` takes the result."""

    data: bytes
    parsed: _Parsed
    layout: JpegLayout
    dct: object
    planes: list[np.ndarray]
    tables: np.ndarray


def read_source_blocks(data: bytes) -> SourceBlocks:
    """Parse ``data`` and read its coefficients; ValueError with the reason for a file that cannot be
    patched exactly (the refusals of :func:`patch_jpeg`, EXIF orientation included)."""
    parsed = _parse(data)
    layout = _layout(parsed)
    if layout.reason is not None:
        raise ValueError(layout.reason)
    return _read_blocks(data, parsed, layout)


def _read_blocks(data: bytes, parsed: _Parsed, layout: JpegLayout) -> SourceBlocks:
    import jpeglib

    with _JPEGLIB_LOCK, tempfile.TemporaryDirectory(prefix="facerestore-jpeg-") as tmp:
        path = Path(tmp) / "source.jpg"
        path.write_bytes(_strip(data, parsed))
        with jpeglib.version(_READ_VERSION):
            dct = jpeglib.read_dct(str(path))
            planes = _coefficients(dct)  # reads the file: jpeglib loads lazily
            tables = np.stack([dct.get_component_qt(k) for k in range(len(planes))]).astype(np.uint16)
    return SourceBlocks(data, parsed, layout, dct, planes, tables)


def _transcode(
    data: bytes,
    pixels: np.ndarray,
    mcu_mask: np.ndarray,
    layout: JpegLayout,
    parsed: _Parsed,
    luma_only: bool,
    source: SourceBlocks | None = None,
) -> bytes:
    """The patched file: the source's coefficients with the masked MCUs' replaced, entropy-coded again."""
    import jpeglib  # a dependency of this module only: the rest of the package runs without it

    mh, mw = layout.mcu
    if source is None:
        source = _read_blocks(data, parsed, layout)
    dct, tables = source.dct, source.tables
    planes = [p.copy() for p in source.planes]
    # MozJPEG's transcodes are progressive with optimised Huffman tables already; a sequential source
    # coded with the standard tables keeps them (its size, at two thirds of the coding time)
    optimise = not layout.progressive and not _standard_coded(parsed)  # before the lock: it takes it
    with _JPEGLIB_LOCK, tempfile.TemporaryDirectory(prefix="facerestore-jpeg-") as tmp:
        work = Path(tmp)
        with jpeglib.version(_READ_VERSION):
            if mcu_mask.any():
                rows, cols = np.nonzero(mcu_mask.any(axis=1))[0], np.nonzero(mcu_mask.any(axis=0))[0]
                r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                # the crop starts on the MCU grid, so its blocks are the full image's blocks
                crop = pixels[r0 * mh : r1 * mh, c0 * mw : c1 * mw]
                factors = np.array([[v, h] for h, v in layout.sampling], dtype=np.int32)
                region = _encode_region(jpeglib, work, crop, factors, tables)
                sub_mask = mcu_mask[r0:r1, c0:c1]
                replaced = 1 if luma_only else len(planes)
                for plane, new, (h, v) in zip(planes[:replaced], region[:replaced], layout.sampling, strict=False):
                    take = np.repeat(np.repeat(sub_mask, v, axis=0), h, axis=1)[: new.shape[0], : new.shape[1]]
                    target = plane[r0 * v : r0 * v + new.shape[0], c0 * h : c0 * h + new.shape[1]]
                    target[take] = new[take]
        frame = parsed.frame
        assert frame is not None
        same_tables = all(
            np.array_equal(parsed.qtables.get(t), tables[k]) for k, t in enumerate(frame.tables[: len(planes)])
        )
        if layout.restart_interval and not (layout.progressive or layout.arithmetic) and same_tables:
            result = _sequential_file(parsed, planes, layout)
        else:
            dct.Y = planes[0]
            if len(planes) == 3:
                dct.Cb, dct.Cr = planes[1], planes[2]
            dct.markers = []
            flavour = _PROGRESSIVE_VERSION if layout.progressive else _BASELINE_VERSION
            flags = ["+ARITH_CODE"] if layout.arithmetic else ["+OPTIMIZE_CODING"] if optimise else []
            with jpeglib.version(flavour):
                dct.write_dct(str(work / "written.jpg"), flags=flags)
            result = _rebuild(parsed, (work / "written.jpg").read_bytes())
        # read the result back: the one guarantee callers rely on is checked, not assumed
        (work / "check.jpg").write_bytes(_strip(result, _parse(result)))
        with jpeglib.version(_READ_VERSION):
            back = _coefficients(jpeglib.read_dct(str(work / "check.jpg")))
    if not all(np.array_equal(a, b) for a, b in zip(planes, back, strict=True)):
        raise RuntimeError("the written JPEG does not hold the intended coefficients")
    return result


@functools.cache
def _standard_huffman() -> frozenset[bytes]:
    """The Huffman tables libjpeg codes with when not asked to optimise (ITU-T T.81 Annex K.3), as
    written by libjpeg itself into a small colour JPEG."""
    import jpeglib

    with _JPEGLIB_LOCK, tempfile.TemporaryDirectory(prefix="facerestore-jpeg-") as tmp:
        path = Path(tmp) / "tables.jpg"
        with jpeglib.version(_BASELINE_VERSION):
            jpeglib.from_spatial(np.zeros((16, 16, 3), np.uint8)).write_spatial(str(path), flags=[])
        tables = _parse(path.read_bytes()).huffman
    if len(tables) != 4:
        raise RuntimeError(f"libjpeg wrote {len(tables)} Huffman tables for a colour JPEG, not 4")
    return frozenset(tables)


def _standard_coded(parsed: _Parsed) -> bool:
    """Whether every Huffman table of the source is one of the standard ones: re-coding it with them
    keeps its size (optimised tables would shrink a few percent of what the camera chose, at twice the
    coding time)."""
    return bool(parsed.huffman) and all(t in _standard_huffman() for t in parsed.huffman)


def _sequential_file(source: _Parsed, planes: list[np.ndarray], layout: JpegLayout) -> bytes:
    """The whole output for a sequential source with restart markers, headers written here."""
    frame = source.frame
    assert frame is not None
    dht, scan = encode_sequential(planes, layout, source.restart_interval)
    parts = [b"\xff\xd8", *source.segments]
    wide = any(source.qtables[t].max() > 255 for t in frame.tables)  # 16-bit tables: extended, not baseline
    for t in sorted(set(frame.tables)):
        q = source.qtables[t].ravel()[_ZIGZAG]
        parts.append(segment(_DQT, bytes([16 * wide | t]) + q.astype(">u2" if wide else np.uint8).tobytes()))
    comps = [bytes([i, h << 4 | v, t]) for i, (h, v), t in zip(frame.ids, frame.sampling, frame.tables, strict=True)]
    sof = struct.pack(">BHHB", 8, frame.height, frame.width, len(frame.ids)) + b"".join(comps)
    parts += [segment(0xC1 if wide else 0xC0, sof), dht, segment(_DRI, struct.pack(">H", source.restart_interval))]
    sos = b"".join(bytes([i, 0 if k == 0 else 0x11]) for k, i in enumerate(frame.ids))
    parts.append(segment(_SOS, bytes([len(frame.ids)]) + sos + b"\x00\x3f\x00"))
    return b"".join([*parts, scan, b"\xff\xd9", source.trailing])


def _rebuild(source: _Parsed, written: bytes) -> bytes:
    """libjpeg's tables, frame and scans under the source's own APPn/COM segments and component ids."""
    out = _parse(written)
    if out.frame is None or source.frame is None:
        raise RuntimeError("libjpeg wrote no frame header")
    for kind in (_PROGRESSIVE_SOF, _ARITHMETIC_SOF):
        if (out.frame.marker in kind) != (source.frame.marker in kind):
            raise RuntimeError("libjpeg changed the coding process (sequential/progressive, Huffman/arithmetic)")
    ids = dict(zip(out.frame.ids, source.frame.ids, strict=True))
    parts = [b"\xff\xd8", *source.segments]
    for marker, start, end in out.spans:
        if 0xE0 <= marker <= 0xEF or marker == _COM:
            continue  # libjpeg's own JFIF/Adobe header: the source's segments replace it
        segment = bytearray(written[start:end])
        if marker in _SOF_MARKERS:
            for i in range(segment[9]):
                segment[10 + 3 * i] = ids[segment[10 + 3 * i]]
        elif marker == _SOS:
            for i in range(segment[4]):
                segment[5 + 2 * i] = ids[segment[5 + 2 * i]]
        parts.append(bytes(segment))
    parts.append(b"\xff\xd9")
    parts.append(source.trailing)
    return b"".join(parts)


def patch_jpeg_with_stats(
    data: bytes,
    pixels: np.ndarray,
    changed: np.ndarray,
    *,
    stored_orientation: bool = False,
    luma_only: bool = False,
    source: SourceBlocks | None = None,
) -> PatchResult:
    """`patch_jpeg`, also saying how many MCUs were re-encoded (what the size budget scales with).

    ``luma_only``: only the luma blocks are re-encoded and the chroma blocks are the source's, for
    monochrome and toned photos whose chroma must come back exactly as it was. ``source``: ``data``'s
    blocks, read ahead by :func:`read_source_blocks` (ignored unless read from these very bytes).
    """
    if source is not None and source.data is not data and source.data != data:
        source = None
    parsed = source.parsed if source is not None else _parse(data)
    layout = source.layout if source is not None else _layout(parsed)
    reason = _refusal(parsed, orientation_matters=not stored_orientation)
    if reason is not None:
        raise ValueError(reason)
    image = _as_pixels(pixels, layout)
    mcu_mask = _mcu_mask(layout, np.asarray(changed, dtype=bool))
    if not mcu_mask.any():
        return PatchResult(data, layout, 0, int(mcu_mask.size))  # nothing to re-encode: the source as it is
    patched = _transcode(data, image, mcu_mask, layout, parsed, luma_only, source)
    return PatchResult(patched, layout, int(mcu_mask.sum()), int(mcu_mask.size))


def patch_jpeg(data: bytes, pixels: np.ndarray, changed: np.ndarray, *, stored_orientation: bool = False) -> bytes:
    """Return the source JPEG with every MCU that ``changed`` touches re-encoded from ``pixels``.

    ``pixels`` is the full new image (HxWx3 RGB, or HxW for grey) in the file's stored orientation and
    ``changed`` a bool HxW mask of where it may differ from the source's decoded pixels; pixels outside
    the changed MCUs are ignored, since those MCUs keep the source's coefficients. The re-encoded MCUs use
    the source's quantisation tables and sampling; all APPn/COM segments are kept byte for byte; baseline
    stays baseline and progressive stays progressive. Raises ValueError with the reason when the file
    cannot be patched exactly (see `JpegLayout.reason`); ``stored_orientation=True`` lifts only the EXIF
    orientation refusal, for callers that rotated their pixels back to the stored orientation.
    """
    return patch_jpeg_with_stats(data, pixels, changed, stored_orientation=stored_orientation).data
