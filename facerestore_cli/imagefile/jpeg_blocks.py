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
import heapq
import re
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_ARITHMETIC_SOF = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
_HIERARCHICAL_SOF = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# A marker inside entropy-coded data: 0xFF followed by anything but a stuffed zero, a restart marker or fill.
_NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


def _zigzag_to_natural() -> np.ndarray:
    """Natural (row-major) index of each zig-zag position, as DQT segments list coefficients."""
    order: list[int] = []
    for s in range(15):
        rows = range(min(s, 7), max(0, s - 7) - 1, -1) if s % 2 == 0 else range(max(0, s - 7), min(s, 7) + 1)
        order.extend(r * 8 + (s - r) for r in rows)
    return np.array(order)


_ZIGZAG = _zigzag_to_natural()

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
        _read_segment(parsed, marker, payload, data[start:end])
        parsed.spans.append((marker, start, end))
        pos = end
    return parsed  # no EOI: libjpeg tolerates a missing one, so do the same


def _read_segment(parsed: _Parsed, marker: int, payload: bytes, raw: bytes) -> None:
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
            # MozJPEG's transcodes are progressive with optimised Huffman tables already
            flags = ["+ARITH_CODE"] if layout.arithmetic else [] if layout.progressive else ["+OPTIMIZE_CODING"]
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


def _bit_length(values: np.ndarray) -> np.ndarray:
    """JPEG's magnitude category: the number of bits of |v| (frexp is exact on integers)."""
    return np.frexp(np.abs(values).astype(np.float64))[1].astype(np.int64)


def _huffman_table(freq: np.ndarray) -> tuple[list[int], list[int]]:
    """BITS and HUFFVAL of an optimal code limited to 16 bits, as T.81 Annex K.2 builds it."""
    counts = [int(f) for f in freq] + [1]  # symbol 256 reserves the all-ones code, which is illegal
    depth = [0] * 257
    heap = [(c, i, [i]) for i, c in enumerate(counts) if c]
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, i1, s1 = heapq.heappop(heap)
        c2, i2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            depth[s] += 1
        heapq.heappush(heap, (c1 + c2, min(i1, i2), s1 + s2))
    bits = [0] * 258
    for d in depth:
        if d:
            bits[d] += 1
    for i in range(257, 16, -1):  # move over-long codes up the tree (Annex K, figure K.3)
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    i = 16
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1  # drop the reserved code
    values = sorted((d, s) for s, d in enumerate(depth[:256]) if d)
    return bits[1:17], [s for _, s in values]


def _scan_order(planes: list[np.ndarray], layout: JpegLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every block in sequential-scan order (zig-zag, int16), whether it is real rather than MCU padding,
    and the component of each block position within an MCU."""
    if len(planes) == 1:  # a single component is coded block by block, without MCU padding
        blocks = planes[0].reshape(-1, 64)[:, _ZIGZAG]
        return blocks, np.ones(len(blocks), bool), np.zeros(1, np.int64)
    rows, cols = _mcu_grid(layout)
    parts, reals, comps = [], [], []
    for k, (plane, (h, v)) in enumerate(zip(planes, layout.sampling, strict=True)):
        hb, wb = plane.shape[:2]
        padded = np.zeros((rows * v, cols * h, 64), dtype=np.int16)
        padded[:hb, :wb] = plane.reshape(hb, wb, 64)[:, :, _ZIGZAG]
        real = np.zeros((rows * v, cols * h), dtype=bool)
        real[:hb, :wb] = True
        parts.append(padded.reshape(rows, v, cols, h, 64).transpose(0, 2, 1, 3, 4).reshape(rows * cols, v * h, 64))
        reals.append(real.reshape(rows, v, cols, h).transpose(0, 2, 1, 3).reshape(rows * cols, v * h))
        comps.append(np.full(v * h, k))
    blocks = np.concatenate(parts, axis=1).reshape(-1, 64)
    return blocks, np.concatenate(reals, axis=1).ravel(), np.concatenate(comps)


def _chunk_symbols(
    blocks: np.ndarray, real: np.ndarray, comp: np.ndarray, interval: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Huffman symbols of whole restart intervals of blocks, in coding order: the number of symbols of
    each block, then per symbol its table (0/1 luma DC/AC, 2/3 chroma), value, extra bits and their count."""
    n = len(blocks)
    blocks = blocks.astype(np.int32)
    blocks[~real, 1:] = 0  # MCU padding blocks: flat, with the previous block's DC (a zero difference)
    chroma = 2 * (comp > 0)
    diff = np.empty(n, dtype=np.int32)
    for k in np.unique(comp):
        idx = np.nonzero(comp == k)[0]
        seq = blocks[idx, 0][np.maximum.accumulate(np.where(real[idx], np.arange(len(idx)), 0))]
        prev = np.concatenate(([0], seq[:-1]))
        prev[np.concatenate(([True], interval[idx][1:] != interval[idx][:-1]))] = 0  # predictor reset
        diff[idx] = seq - prev
    b, p = np.nonzero(blocks[:, 1:])
    value = blocks[b, p + 1]
    first = np.concatenate(([True], b[1:] != b[:-1]))
    last = np.concatenate((b[1:] != b[:-1], [True]))
    prev_p = np.concatenate(([-1], p[:-1]))
    prev_p[first] = -1
    run = p - prev_p - 1
    zrl = run >> 4  # runs of 16 zeros before the coefficient
    size_ac, size_dc = _bit_length(value), _bit_length(diff)
    if size_ac.max(initial=0) > 10 or size_dc.max(initial=0) > 11:
        raise RuntimeError("coefficients out of range for 8-bit JPEG")
    last_p = np.full(n, -1)
    last_p[b[last]] = p[last]
    eob = last_p < 62
    per_nonzero = zrl + 1
    count = 1 + np.bincount(b, weights=per_nonzero, minlength=n).astype(np.int64) + eob
    start = np.cumsum(count) - count
    before = np.cumsum(per_nonzero) - per_nonzero
    offset = start[b] + 1 + before - before[first][np.cumsum(first) - 1]
    total = int(start[-1] + count[-1])
    table, symbol = np.empty(total, np.uint8), np.empty(total, np.uint8)
    extra, extra_len = np.zeros(total, np.uint16), np.zeros(total, np.uint8)
    table[start], symbol[start], extra_len[start] = chroma, size_dc, size_dc
    extra[start] = np.where(diff < 0, diff + (1 << size_dc) - 1, diff)
    if zrl.any():
        zero_runs = np.repeat(offset, zrl) + np.arange(zrl.sum()) - np.repeat(np.cumsum(zrl) - zrl, zrl)
        table[zero_runs], symbol[zero_runs] = np.repeat(chroma[b] + 1, zrl), 0xF0
    at = offset + zrl
    table[at], symbol[at], extra_len[at] = chroma[b] + 1, ((run & 15) << 4) | size_ac, size_ac
    extra[at] = np.where(value < 0, value + (1 << size_ac) - 1, value)
    ends = start[eob] + count[eob] - 1
    table[ends], symbol[ends] = chroma[eob] + 1, 0
    return count.astype(np.uint8), table, symbol, extra, extra_len


def _pack_chunk(
    symbols: tuple[np.ndarray, ...], interval: np.ndarray, codes: np.ndarray, lengths: np.ndarray
) -> list[np.ndarray]:
    """The entropy-coded bytes of each restart interval of a chunk, padded with 1-bits and byte-stuffed.

    Every code's bit position follows from cumulative sums, so the stream is assembled by adding
    non-overlapping codes into 32-bit words instead of a bit-by-bit loop."""
    count, table, symbol, extra, extra_len = symbols
    value = (codes[table, symbol] << extra_len) | extra
    length = lengths[table, symbol] + extra_len
    local = interval - interval[0]
    event_interval = np.repeat(local, count)
    interval_bits = np.bincount(event_interval, weights=length).astype(np.int64)
    interval_bytes = (interval_bits + 7) // 8
    byte_start = np.cumsum(interval_bytes) - interval_bytes
    position = np.cumsum(length) - length
    position += (8 * byte_start - (np.cumsum(interval_bits) - interval_bits))[event_interval]
    pad = 8 * interval_bytes - interval_bits
    position = np.concatenate((position, 8 * byte_start + interval_bits))
    value = np.concatenate((value, (1 << pad) - 1))
    length = np.concatenate((length, pad))
    word, end = position >> 5, (position & 31) + length
    fits = end <= 32
    words = np.bincount(
        word, weights=np.where(fits, value << np.maximum(32 - end, 0), value >> np.maximum(end - 32, 0))
    )
    spill = ~fits
    spilled = (value[spill] & ((1 << (end[spill] - 32)) - 1)) << (64 - end[spill])
    words = np.pad(words, (0, 1)) + np.bincount(word[spill] + 1, weights=spilled, minlength=len(words) + 1)
    stream = np.frombuffer(words.astype(np.uint64).astype(">u4").tobytes(), np.uint8)
    pieces = np.split(stream[: int(interval_bytes.sum())], np.cumsum(interval_bytes)[:-1])
    return [np.insert(piece, np.nonzero(piece == 0xFF)[0] + 1, 0) for piece in pieces]


def _encode_sequential(planes: list[np.ndarray], layout: JpegLayout, restart: int) -> tuple[bytes, bytes]:
    """Huffman-code the coefficients as one interleaved sequential scan with a restart marker every
    ``restart`` MCUs (libjpeg cannot be asked for these when writing coefficients): the DHT segments and
    the entropy-coded data. Works on chunks of whole intervals so memory stays bounded."""
    blocks, real, comp_in_mcu = _scan_order(planes, layout)
    per_mcu = len(comp_in_mcu)
    step = per_mcu * restart * max(1, 16384 // (per_mcu * restart))
    chunks = []
    freq = np.zeros((4, 256), np.int64)
    for s in range(0, len(blocks), step):
        index = np.arange(s, min(s + step, len(blocks)))
        interval = index // per_mcu // restart
        symbols = _chunk_symbols(blocks[index], real[index], comp_in_mcu[index % per_mcu], interval)
        freq += np.bincount(symbols[1].astype(np.int64) * 256 + symbols[2], minlength=1024).reshape(4, 256)
        chunks.append((symbols, interval))
    codes, lengths = np.zeros((4, 256), np.int64), np.zeros((4, 256), np.int64)
    dht = []
    for t in np.nonzero(freq.any(axis=1))[0]:
        bits, values = _huffman_table(freq[t])
        code, k = 0, 0
        for size in range(1, 17):
            for _ in range(bits[size - 1]):
                codes[t, values[k]], lengths[t, values[k]] = code, size
                code, k = code + 1, k + 1
            code <<= 1
        dht.append(_segment(0xC4, bytes([(t % 2) << 4 | t // 2, *bits, *values])))
    out, number = [], 0
    for symbols, interval in chunks:
        for piece in _pack_chunk(symbols, interval, codes, lengths):
            if number:
                out.append(bytes([0xFF, 0xD0 + (number - 1) % 8]))
            out.append(piece.tobytes())
            number += 1
    return b"".join(dht), b"".join(out)


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _sequential_file(source: _Parsed, planes: list[np.ndarray], layout: JpegLayout) -> bytes:
    """The whole output for a sequential source with restart markers, headers written here."""
    frame = source.frame
    assert frame is not None
    dht, scan = _encode_sequential(planes, layout, source.restart_interval)
    parts = [b"\xff\xd8", *source.segments]
    wide = any(source.qtables[t].max() > 255 for t in frame.tables)  # 16-bit tables: extended, not baseline
    for t in sorted(set(frame.tables)):
        q = source.qtables[t].ravel()[_ZIGZAG]
        parts.append(_segment(_DQT, bytes([16 * wide | t]) + q.astype(">u2" if wide else np.uint8).tobytes()))
    comps = [bytes([i, h << 4 | v, t]) for i, (h, v), t in zip(frame.ids, frame.sampling, frame.tables, strict=True)]
    sof = struct.pack(">BHHB", 8, frame.height, frame.width, len(frame.ids)) + b"".join(comps)
    parts += [_segment(0xC1 if wide else 0xC0, sof), dht, _segment(_DRI, struct.pack(">H", source.restart_interval))]
    sos = b"".join(bytes([i, 0 if k == 0 else 0x11]) for k, i in enumerate(frame.ids))
    parts.append(_segment(_SOS, bytes([len(frame.ids)]) + sos + b"\x00\x3f\x00"))
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
