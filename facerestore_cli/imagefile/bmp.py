"""BMP: no metadata to keep, but truncation to detect and an alpha channel Pillow's writer loses.

Pillow pads a short BMP with black once any library sets its global LOAD_TRUNCATED_IMAGES, so the
declared sizes are checked here; its RLE decoder is replaced by one that cannot be stalled (see
:func:`_decode_rle`), and RGBA is written with an explicit alpha mask so it survives being read back.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import BmpImagePlugin, Image, ImageFile

from facerestore_cli.imagefile.photo import ImageFileError, Photo, _check_pixels, _pixels_8bit, _pixels_from_pil

# --------------------------------------------------------------------------------------------------
# reading


def _bmp_is_truncated(data: bytes) -> bool:
    if len(data) < 26:
        return True
    (declared,) = struct.unpack("<I", data[2:6])
    if declared > len(data) and declared - len(data) > 2:  # some writers count a 2-byte pad
        return True
    offset, header = struct.unpack("<II", data[10:18])
    if header == 12:
        width, height, _, bpp = struct.unpack("<HHHH", data[18:26])
        compression = 0
    elif header >= 40 and len(data) >= 34:
        width, height, _, bpp, compression = struct.unpack("<iiHHI", data[18:34])
    else:
        return False
    if compression not in (0, 3, 6) or bpp == 0:
        return False
    stride = (abs(width) * bpp + 31) // 32 * 4
    return offset + stride * abs(height) > len(data)


def _decode_rle(src: bytes, start: int, width: int, height: int, rle4: bool) -> tuple[bytearray, bool]:
    """Pillow's RLE8/RLE4 rules, one slice per command; returns (pixel indices, whether the data ran out).

    Pillow's own decoder is Python that pads every end of line one byte at a time, so a 45 KB file
    claiming 11000x11000 pixels took 16 s; this gives the same pixels at the cost of one slice per
    command. ``start`` is the file position of ``src``: absolute runs are padded to even positions.
    """
    size = width * height
    out = bytearray()
    x = pos = 0
    while len(out) < size:
        if pos + 2 > len(src):
            return out, True
        count, value = src[pos], src[pos + 1]
        pos += 2
        if count:  # a run of one value (RLE4: two alternating nibbles), clipped at the end of the row
            count = min(count, max(0, width - x))
            pair = bytes((value >> 4, value & 0x0F)) if rle4 else bytes((value, value))
            out += (pair * ((count + 1) // 2))[:count]
            x += count
        elif value == 0:  # end of line
            out += bytes(-len(out) % width)
            x = 0
        elif value == 1:  # end of bitmap
            return out, False
        elif value == 2:  # delta: skip right and down
            if pos + 2 > len(src):
                return out, True
            out += bytes(min(size - len(out), src[pos] + src[pos + 1] * width))
            pos += 2
            x = len(out) % width
        else:  # absolute: ``value`` literal pixels
            count = min(size - len(out), value)
            need = (count + 1) // 2 if rle4 else count
            literal = src[pos : pos + need]
            pos += need
            out += bytes(v for b in literal for v in (b >> 4, b & 0x0F))[:count] if rle4 else literal
            if len(literal) < need:
                return out, True
            if len(out) == size:
                break
            x += value
            pos += (start + pos) % 2
    return out, False


class _RleDecoder(ImageFile.PyDecoder):
    """Stands in for Pillow's ``bmp_rle`` decoder (see :func:`_decode_rle`), with reasons for short data."""

    _pulls_fd = True

    def decode(self, buffer: Any) -> tuple[int, int]:
        assert self.fd is not None
        width, height = self.state.xsize, self.state.ysize
        start = self.fd.tell()
        pixels, ran_out = _decode_rle(self.fd.read(), start, width, height, bool(self.args[1]))
        if len(pixels) < width * height:
            if ran_out:
                raise ImageFileError("truncated", "the BMP's compressed pixel data ends before its last row")
            raise ImageFileError("corrupt", "the BMP's compressed pixel data marks its end before its last row")
        self.set_as_raw(bytes(pixels), "L" if self.mode in ("1", "L") else "P", (0, self.args[-1]))
        return -1, 0


_RLE_DECODER = "facerestore_bmp_rle"
Image.register_decoder(_RLE_DECODER, _RleDecoder)


def _load_bmp(data: bytes, path: Path, max_pixels: int | None) -> Photo:
    if _bmp_is_truncated(data):
        raise ImageFileError("truncated", "the BMP file is truncated (shorter than its header says)", path)
    im = BmpImagePlugin.BmpImageFile(io.BytesIO(data))
    _check_pixels(im.width, im.height, max_pixels, path)
    if im.tile and im.tile[0][0] == "bmp_rle":
        tile = im.tile[0]
        im.tile = [tile._replace(codec_name=_RLE_DECODER) if hasattr(tile, "_replace") else (_RLE_DECODER, *tile[1:])]
    info: dict[str, Any] = {}
    if im.info.get("dpi"):
        info["dpi"] = tuple(float(v) for v in im.info["dpi"])
    im.load()
    pixels, icc = _pixels_from_pil(im, info, None)
    return Photo(pixels, "BMP", None, icc, None, info)


# --------------------------------------------------------------------------------------------------
# writing


def _encode_bmp(photo: Photo, quality: int, path: Path) -> bytes:
    px = _pixels_8bit(photo, "BMP", path, alpha_ok=True, grey_alpha_ok=False)
    dpi = photo.info.get("dpi")
    if px.ndim == 3 and px.shape[2] == 4:
        return _bmp_rgba(px, dpi)
    options: dict[str, Any] = {}
    if dpi:
        options["dpi"] = tuple(round(v) for v in dpi)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "BMP", **options)
    return buf.getvalue()


def _bmp_rgba(px: np.ndarray, dpi: tuple[float, float] | None) -> bytes:
    """32-bit BMP with an explicit alpha mask (BITMAPV4HEADER).

    Pillow writes RGBA as a plain 32-bit BMP whose fourth byte readers (Pillow included) ignore, so
    the alpha would be lost on the way back in.
    """
    height, width = px.shape[:2]
    data = np.ascontiguousarray(px[::-1, :, [2, 1, 0, 3]]).tobytes()  # bottom-up BGRA
    ppm = [round(v / 0.0254) for v in dpi] if dpi else [0, 0]
    info = struct.pack("<IiiHHIIiiII", 108, width, height, 1, 32, 3, len(data), ppm[0], ppm[1], 0, 0)
    info += struct.pack("<IIIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000, 0x73524742)  # 'sRGB'
    info += bytes(36 + 12)  # colour end points and gamma, unused with sRGB
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + data
