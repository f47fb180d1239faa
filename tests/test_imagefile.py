"""Tests for facerestore_cli.imagefile: photo files go in and come out with nothing lost.

Every source file is made here in tmp_path; where possible the result is checked with a decoder other
than the one under test (Pillow, OpenCV or tifffile), so a symmetric bug in read and write cannot pass.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import io
import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin

from facerestore_cli import imagefile
from facerestore_cli.imagefile import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    ImageFileError,
    Photo,
    atomic_write,
    format_for_suffix,
    is_colourless,
    load_photo,
    rgb8,
    save_photo,
)

HAVE_HEIF = importlib.util.find_spec("pillow_heif") is not None
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
TITLE = b"Grandma at the lake, 1952"


def xmp_packet(orientation: int) -> bytes:
    return (
        b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        b' tiff:Orientation="%d"><dc:title>' % orientation + TITLE + b"</dc:title></rdf:Description>"
        b'</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )


def exif_block(orientation: int = 6) -> bytes:
    """A realistic EXIF block: camera, date and GPS in their sub-IFDs, no 'Exif' prefix."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif[0x0131] = "scanner 1.0"
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "1952:07:14 15:30:00"
    exif.get_ifd(0x8825)[1] = "N"
    exif.get_ifd(0x8825)[2] = (52.0, 22.0, 12.34)
    data = exif.tobytes()
    return data[6:] if data.startswith(b"Exif\x00\x00") else data


def expected_tags(exif: Image.Exif) -> dict:
    return {
        "make": exif.get(0x010F),
        "model": exif.get(0x0110),
        "software": exif.get(0x0131),
        "date": exif.get_ifd(0x8769).get(0x9003),
        "gps": dict(exif.get_ifd(0x8825)),
    }


SOURCE_TAGS = {
    "make": "Canon",
    "model": "Canon EOS 5D",
    "software": "scanner 1.0",
    "date": "1952:07:14 15:30:00",
    "gps": {1: "N", 2: (52.0, 22.0, 12.34)},
}


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def insert_png_chunks(png: bytes, *chunks: bytes) -> bytes:
    """Insert raw chunks after IHDR (signature 8 + IHDR 25 bytes)."""
    return png[:33] + b"".join(chunks) + png[33:]


def png_chunk_types(data: bytes) -> list[bytes]:
    pos, out = 8, []
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        out.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return out


def raw_png(pixels: np.ndarray, colour_type: int, depth: int) -> bytes:
    """A minimal PNG written by hand, for layouts no library here writes (16-bit grey+alpha)."""
    height, width = pixels.shape[:2]
    dtype = ">u2" if depth == 16 else "u1"
    rows = b"".join(b"\x00" + pixels[y].astype(dtype).tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def noise(shape: tuple[int, ...], dtype=np.uint8, seed: int = 0) -> np.ndarray:
    high = 65536 if dtype == np.uint16 else 256
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --------------------------------------------------------------------------------------------------
# lossless round trips, 8 and 16 bits, every layout


def write_source(path: Path, pixels: np.ndarray) -> None:
    """Write a source file with an independent encoder (Pillow, OpenCV, tifffile or by hand)."""
    fmt = path.suffix.lower()
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if fmt == ".png" and pixels.dtype == np.uint16:
        if channels == 2:
            path.write_bytes(raw_png(pixels, 4, 16))
        else:
            bgr = (
                pixels
                if channels == 1
                else cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if channels == 4 else cv2.COLOR_RGB2BGR)
            )
            path.write_bytes(cv2.imencode(".png", bgr)[1].tobytes())
    elif fmt == ".tif":
        photometric = "minisblack" if channels <= 2 else "rgb"
        extrasamples = ["unassalpha"] if channels in (2, 4) else None
        tifffile.imwrite(path, pixels, photometric=photometric, extrasamples=extrasamples, compression="zlib")
    elif fmt == ".webp":
        Image.fromarray(pixels).save(path, "WEBP", lossless=True, exact=True)
    elif fmt == ".bmp" and channels == 4:
        path.write_bytes(bmp_with_alpha(pixels))
    else:
        Image.fromarray(pixels).save(path)


def bmp_with_alpha(pixels: np.ndarray) -> bytes:
    """A top-down 32-bit BMP with an alpha mask in a BITMAPV5HEADER (Pillow writes no alpha mask)."""
    height, width = pixels.shape[:2]
    data = pixels[:, :, [2, 1, 0, 3]].tobytes()
    header = struct.pack("<IiiHHIIiiII", 124, width, -height, 1, 32, 3, len(data), 2835, 2835, 0, 0)
    header += struct.pack("<IIII", 0xFF0000, 0xFF00, 0xFF, 0xFF000000) + bytes(124 - 56)
    offset = 14 + len(header)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + header + data


def independent_decode(path: Path) -> np.ndarray:
    if path.suffix == ".tif":
        return tifffile.imread(path)
    data = path.read_bytes()
    if data[24] == 16 and path.suffix == ".png":  # IHDR bit depth
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded.ndim == 3 and data[25] == 4:  # grey+alpha comes back as BGRA
            return decoded[:, :, [0, 3]]
        return decoded if decoded.ndim == 2 else decoded[:, :, [2, 1, 0, 3][: decoded.shape[2]]]
    return np.array(Image.open(path))


LAYOUTS = {"L": (24, 20), "LA": (24, 20, 2), "RGB": (24, 20, 3), "RGBA": (24, 20, 4)}
ROUND_TRIPS = (
    [(".png", layout, np.uint8) for layout in LAYOUTS]
    + [(".png", layout, np.uint16) for layout in LAYOUTS]
    + [(".tif", layout, np.uint8) for layout in LAYOUTS]
    + [(".tif", layout, np.uint16) for layout in LAYOUTS]
    + [(".bmp", "L", np.uint8), (".bmp", "RGB", np.uint8), (".bmp", "RGBA", np.uint8)]
    + [(".webp", "RGB", np.uint8), (".webp", "RGBA", np.uint8)]
)


@pytest.mark.parametrize(("suffix", "layout", "dtype"), ROUND_TRIPS, ids=lambda v: getattr(v, "__name__", v))
def test_lossless_round_trip_is_pixel_identical(tmp_path, suffix, layout, dtype):
    pixels = noise(LAYOUTS[layout], dtype)
    if layout in ("LA", "RGBA"):
        pixels[:5, :, -1] = 0  # fully transparent pixels whose colour must survive too
    source = tmp_path / f"source{suffix}"
    write_source(source, pixels)

    photo = load_photo(source)
    assert photo.pixels.dtype == dtype
    assert photo.channels == len(layout)
    assert photo.is_grey == layout.startswith("L")
    assert photo.has_alpha == layout.endswith("A")
    assert photo.bit_depth == (16 if dtype == np.uint16 else 8)
    np.testing.assert_array_equal(photo.pixels, pixels)

    out = tmp_path / f"out{suffix}"
    save_photo(photo, out)
    np.testing.assert_array_equal(load_photo(out).pixels, pixels)
    np.testing.assert_array_equal(independent_decode(out), pixels)


def test_16bit_png_depth_is_read_from_the_header(tmp_path):
    pixels = noise((8, 9, 3), np.uint16)
    source = tmp_path / "deep.png"
    write_source(source, pixels)
    out = tmp_path / "out.png"
    save_photo(load_photo(source), out)
    data = out.read_bytes()
    assert data[24] == 16  # IHDR bit depth
    assert Image.open(out).mode == "RGB"  # Pillow would have lost the low byte; we did not


def test_big_endian_16bit_tiff(tmp_path):
    pixels = noise((7, 5, 3), np.uint16, seed=5)
    source = tmp_path / "motorola.tif"
    tifffile.imwrite(source, pixels, photometric="rgb", byteorder=">")
    assert source.read_bytes()[:2] == b"MM"
    photo = load_photo(source)
    assert photo.pixels.dtype == np.uint16
    np.testing.assert_array_equal(photo.pixels, pixels)


def test_16bit_lzw_tiff_is_decoded_exactly(tmp_path):
    # OpenCV writes LZW TIFFs, which tifffile cannot decode without imagecodecs
    pixels = noise((30, 20, 3), np.uint16, seed=3)
    source = tmp_path / "lzw.tif"
    source.write_bytes(cv2.imencode(".tiff", pixels[:, :, ::-1])[1].tobytes())
    with tifffile.TiffFile(source) as tif:
        assert tif.pages[0].compression == 5  # really LZW
    photo = load_photo(source)
    assert photo.pixels.dtype == np.uint16
    np.testing.assert_array_equal(photo.pixels, pixels)


def test_uncompressed_tiff_stays_uncompressed_and_grey_stays_grey(tmp_path):
    pixels = noise((10, 12), np.uint16)
    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, pixels, photometric="minisblack")
    out = tmp_path / "out.tif"
    save_photo(load_photo(source), out)
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.compression == 1
        assert page.photometric == 1
        assert page.bitspersample == 16
        np.testing.assert_array_equal(page.asarray(), pixels)


# --------------------------------------------------------------------------------------------------
# orientation


def pillow_upright(path: Path) -> np.ndarray:
    return np.array(ImageOps.exif_transpose(Image.open(path)))


UPRIGHT = {  # what each EXIF orientation asks a viewer to do to the stored pixels
    1: lambda s: s,
    2: lambda s: s[:, ::-1],  # mirror
    3: lambda s: np.rot90(s, 2),
    4: lambda s: s[::-1],  # flip
    5: lambda s: s.transpose(1, 0, 2),
    6: lambda s: np.rot90(s, -1),  # 90 degrees clockwise
    7: lambda s: np.rot90(s, -1)[::-1],
    8: lambda s: np.rot90(s, 1),  # 90 degrees counter-clockwise
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_orientations_are_applied(tmp_path, orientation):
    stored = noise((5, 7, 3), seed=orientation)
    png = tmp_path / "o.png"
    Image.fromarray(stored).save(png, exif=exif_block(orientation))
    photo = load_photo(png)
    np.testing.assert_array_equal(photo.pixels, UPRIGHT[orientation](stored))
    np.testing.assert_array_equal(photo.pixels, pillow_upright(png))
    assert photo.info.get("orientation", 1) == orientation

    jpg = tmp_path / "o.jpg"
    Image.fromarray(stored).save(jpg, quality=90, exif=exif_block(orientation))
    np.testing.assert_array_equal(load_photo(jpg).pixels, pillow_upright(jpg))


@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
@pytest.mark.parametrize("kind", ["8-bit", "16-bit deflate", "16-bit lzw"])
def test_tiff_orientation_applied_once(tmp_path, orientation, kind):
    stored8 = noise((5, 7, 3), seed=orientation)
    reference = tmp_path / "ref.png"
    Image.fromarray(stored8).save(reference, exif=exif_block(orientation))
    upright8 = pillow_upright(reference)
    source = tmp_path / "o.tif"
    if kind == "8-bit":
        Image.fromarray(stored8).save(source, exif=exif_block(orientation))
        expected = upright8
    else:
        stored = stored8.astype(np.uint16) * 257 + 1
        expected = upright8.astype(np.uint16) * 257 + 1
        if kind == "16-bit lzw":  # decoded by OpenCV, which would apply the tag on its own
            encoded = cv2.imencode(".tiff", stored[:, :, ::-1])[1].tobytes()
            source.write_bytes(add_orientation_tag(encoded, orientation))
            with tifffile.TiffFile(source) as tif:
                assert tif.pages[0].compression == 5 and tif.pages[0].tags[274].value == orientation
        else:
            tags = [(274, 3, 1, orientation, True)]
            tifffile.imwrite(source, stored, photometric="rgb", compression="zlib", extratags=tags)
    np.testing.assert_array_equal(load_photo(source).pixels, expected)


def add_orientation_tag(tiff: bytes, orientation: int) -> bytes:
    """Give a little-endian TIFF an Orientation tag by appending a re-sorted copy of IFD0."""
    assert tiff[:4] == b"II*\x00"
    ifd = struct.unpack("<I", tiff[4:8])[0]
    count = struct.unpack("<H", tiff[ifd : ifd + 2])[0]
    entries = [tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(count)]
    entries.append(struct.pack("<HHIHH", 274, 3, 1, orientation, 0))
    entries.sort(key=lambda entry: struct.unpack("<H", entry[:2])[0])
    padded = tiff + b"\x00" * (len(tiff) & 1)
    new_ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    return padded[:4] + struct.pack("<I", len(padded)) + padded[8:] + new_ifd


def test_save_resets_orientation_and_reload_is_not_rotated_again(tmp_path):
    source = tmp_path / "turned.png"
    Image.fromarray(noise((6, 10, 3))).save(source, exif=exif_block(6))
    photo = load_photo(source)
    assert photo.pixels.shape[:2] == (10, 6)
    out = tmp_path / "out.png"
    save_photo(photo, out)
    assert Image.open(out).getexif()[0x0112] == 1
    np.testing.assert_array_equal(load_photo(out).pixels, photo.pixels)


# --------------------------------------------------------------------------------------------------
# metadata


def make_source_with_metadata(path: Path, pixels: np.ndarray) -> None:
    exif, xmp = exif_block(6), xmp_packet(6)
    fmt = path.suffix.lower()
    if fmt == ".png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode(), zip=True)  # compressed iTXt
        Image.fromarray(pixels).save(path, exif=exif, icc_profile=ICC, pnginfo=info)
    elif fmt == ".tif":
        tags = Image.Exif()
        tags.load(exif)
        tags[700] = xmp
        Image.fromarray(pixels).save(path, exif=tags, icc_profile=ICC)
    elif fmt == ".webp":
        Image.fromarray(pixels).save(path, lossless=True, exif=exif, icc_profile=ICC, xmp=xmp)
    elif fmt == ".jpg":
        Image.fromarray(pixels).save(path, quality=92, exif=b"Exif\x00\x00" + exif, icc_profile=ICC, xmp=xmp)
    elif fmt == ".heic":
        import pillow_heif

        pillow_heif.encode(
            "RGB",
            (pixels.shape[1], pixels.shape[0]),
            pixels.tobytes(),
            path,
            quality=90,
            exif=exif,
            xmp=xmp,
            icc_profile=ICC,
        )
    else:
        raise AssertionError(fmt)


def check_metadata(path: Path) -> None:
    """Orientation says 1 everywhere; every other tag, the ICC profile and the XMP survived."""
    photo = load_photo(path)
    # read the EXIF with Pillow's own parser where Pillow can open the file
    exif = _exif(photo.exif) if path.suffix == ".heic" else Image.open(path).getexif()
    assert exif.get(0x0112, 1) == 1
    assert expected_tags(exif) == SOURCE_TAGS
    assert photo.icc_profile == ICC
    assert photo.xmp is not None and TITLE in photo.xmp
    assert b'tiff:Orientation="1"' in photo.xmp
    assert b'tiff:Orientation="6"' not in photo.xmp


METADATA_FORMATS = [".jpg", ".png", ".webp", ".tif"] + ([".heic"] if HAVE_HEIF else [])


@pytest.mark.parametrize("suffix", METADATA_FORMATS)
def test_exif_icc_xmp_survive_same_format(tmp_path, suffix):
    source = tmp_path / f"source{suffix}"
    make_source_with_metadata(source, noise((16, 24, 3)))
    photo = load_photo(source)
    assert photo.icc_profile == ICC
    assert expected_tags(Image.Exif() if photo.exif is None else _exif(photo.exif)) == SOURCE_TAGS
    out = tmp_path / f"out{suffix}"
    save_photo(photo, out)
    check_metadata(out)


@pytest.mark.parametrize("source_suffix", [".jpg", ".tif"])
@pytest.mark.parametrize("out_suffix", [".png", ".webp", ".tif", ".jpg"])
def test_metadata_survives_format_change(tmp_path, source_suffix, out_suffix):
    source = tmp_path / f"source{source_suffix}"
    make_source_with_metadata(source, noise((16, 24, 3)))
    out = tmp_path / f"out{out_suffix}"
    save_photo(load_photo(source), out)
    check_metadata(out)


def _exif(block: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(block)
    return exif


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_exif_block_is_copied_byte_for_byte_except_orientation(tmp_path, suffix):
    source = tmp_path / f"source{suffix}"
    make_source_with_metadata(source, noise((16, 24, 3)))
    photo = load_photo(source)
    out = tmp_path / f"out{suffix}"
    save_photo(photo, out)
    written = load_photo(out).exif
    assert written is not None and len(written) == len(photo.exif)
    differing = [i for i, (a, b) in enumerate(zip(photo.exif, written, strict=True)) if a != b]
    assert 1 <= len(differing) <= 2  # only the Orientation value (a 16-bit SHORT)
    assert _exif(written)[0x0112] == 1


def test_png_ancillary_chunks_are_carried(tmp_path):
    base = io.BytesIO()
    Image.fromarray(noise((8, 8, 3))).save(base, "PNG")
    text = png_chunk(b"tEXt", b"Title\x00Summer 1961")
    gamma = png_chunk(b"gAMA", struct.pack(">I", 45455))
    private = png_chunk(b"prVt", b"keep me")  # unknown, safe-to-copy
    unsafe = png_chunk(b"prVT", b"drop me")  # unknown, not safe-to-copy
    source = tmp_path / "chunks.png"
    source.write_bytes(insert_png_chunks(base.getvalue(), gamma, text, private, unsafe))
    out = tmp_path / "out.png"
    save_photo(load_photo(source), out)
    data = out.read_bytes()
    for chunk in (text, gamma, private):
        assert chunk in data
    assert unsafe not in data
    assert Image.open(out).info["Title"] == "Summer 1961"
    types = png_chunk_types(data)
    assert types[0] == b"IHDR" and types.index(b"gAMA") < types.index(b"IDAT")


def test_png_writes_icc_instead_of_srgb(tmp_path):
    base = io.BytesIO()
    Image.fromarray(noise((8, 8, 3))).save(base, "PNG")
    source = tmp_path / "srgb.png"
    source.write_bytes(insert_png_chunks(base.getvalue(), png_chunk(b"sRGB", b"\x00")))
    photo = load_photo(source)
    assert photo.icc_profile is None
    out = tmp_path / "plain.png"
    save_photo(photo, out)
    assert b"sRGB" in png_chunk_types(out.read_bytes())
    photo.icc_profile = ICC  # e.g. the pipeline attaches a profile: the two must not contradict
    save_photo(photo, out)
    types = png_chunk_types(out.read_bytes())
    assert b"iCCP" in types and b"sRGB" not in types
    assert Image.open(out).info["icc_profile"] == ICC


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
def test_tiff_descriptive_tags_iptc_and_photoshop_are_carried(tmp_path, dtype):
    iptc = b"\x1c\x02\x78\x00\x07Wedding\x00\x00\x00\x00"  # padded to whole LONGs
    resources = b"8BIM\x04\x04\x00\x00\x00\x00\x00\x0c" + iptc
    tags = [
        (271, 2, 0, "Epson", True),
        (315, 2, 0, "Aunt May", True),
        (33432, 2, 0, "(c) the family", True),
        (33723, 4, 4, struct.unpack("<4I", iptc), True),  # Photoshop stores IPTC as LONGs
        (34377, 1, len(resources), resources, True),
        (700, 1, len(xmp_packet(1)), xmp_packet(1), True),
    ]
    source = tmp_path / "scan.tif"
    tifffile.imwrite(
        source,
        noise((6, 5, 3), dtype),
        photometric="rgb",
        iccprofile=ICC,
        resolution=(1200, 1200),
        description="Wedding, 1961",
        metadata=None,
        resolutionunit="INCH",
        extratags=tags,
    )
    out = tmp_path / "out.tif"
    save_photo(load_photo(source), out)
    with tifffile.TiffFile(out) as tif:
        written = {tag.code: tag.value for tag in tif.pages[0].tags.values()}
    assert written[270] == "Wedding, 1961" and written[271] == "Epson"
    assert written[315] == "Aunt May" and written[33432] == "(c) the family"
    assert written[33723] == iptc and written[34377] == resources
    assert written[34675] == ICC and TITLE in written[700]
    assert written[282] == (1200, 1) and int(written[296]) == 2


def test_jpeg_iptc_segment_and_comment_are_carried(tmp_path):
    iptc = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x0b\x1c\x02\x78\x00\x07Wedding\x00"
    segment = b"\xff\xed" + struct.pack(">H", len(iptc) + 2) + iptc
    base = io.BytesIO()
    Image.fromarray(noise((16, 16, 3))).save(base, "JPEG", quality=90, comment=b"scanned 2024")
    data = base.getvalue()
    source = tmp_path / "iptc.jpg"
    source.write_bytes(data[:2] + segment + data[2:])
    out = tmp_path / "out.jpg"
    save_photo(load_photo(source), out)
    written = out.read_bytes()
    assert segment in written
    assert Image.open(out).info.get("comment") == b"scanned 2024"


def test_dpi_is_kept(tmp_path):
    source = tmp_path / "dpi.jpg"
    Image.fromarray(noise((8, 8, 3))).save(source, dpi=(600, 600))
    for suffix in (".jpg", ".png", ".tif"):
        out = tmp_path / f"out{suffix}"
        save_photo(load_photo(source), out)
        assert [round(v) for v in Image.open(out).info["dpi"]] == [600, 600], suffix


# --------------------------------------------------------------------------------------------------
# modes and conversions


def test_palette_images_are_expanded_to_rgb_and_rgba(tmp_path):
    index = noise((6, 8), seed=1) % 4
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]
    im = Image.fromarray(index.astype(np.uint8), "P")
    im.putpalette(palette)
    lut = np.array(palette, np.uint8).reshape(4, 3)

    plain = tmp_path / "plain.png"
    im.save(plain)
    photo = load_photo(plain)
    assert photo.info["converted_from"] == "P"
    np.testing.assert_array_equal(photo.pixels, lut[index])

    clear = tmp_path / "clear.png"
    im.save(clear, transparency=bytes([255, 255, 0, 255]))
    photo = load_photo(clear)
    assert photo.channels == 4
    np.testing.assert_array_equal(photo.pixels[..., :3], lut[index])
    np.testing.assert_array_equal(photo.pixels[..., 3], np.where(index == 2, 0, 255))
    out = tmp_path / "out.png"
    save_photo(photo, out)
    assert Image.open(out).mode == "RGBA"
    np.testing.assert_array_equal(np.array(Image.open(out)), photo.pixels)


def test_one_bit_and_colour_key_images(tmp_path):
    bits = noise((5, 9), seed=2) > 127
    one = tmp_path / "one.png"
    Image.fromarray(bits).save(one)
    photo = load_photo(one)
    assert photo.pixels.dtype == np.uint8 and photo.is_grey
    np.testing.assert_array_equal(photo.pixels, np.where(bits, 255, 0))

    deep = noise((4, 6), np.uint16, seed=4)
    deep_keyed = tmp_path / "deep_keyed.png"
    deep_keyed.write_bytes(
        insert_png_chunks(raw_png(deep, 0, 16), png_chunk(b"tRNS", struct.pack(">H", int(deep[1, 2]))))
    )
    photo = load_photo(deep_keyed)
    assert photo.pixels.dtype == np.uint16 and photo.channels == 2
    np.testing.assert_array_equal(photo.pixels[..., 0], deep)
    np.testing.assert_array_equal(photo.pixels[..., 1], np.where(deep == deep[1, 2], 0, 65535))

    grey = noise((5, 9), seed=3)
    keyed = tmp_path / "keyed.png"
    Image.fromarray(grey).save(keyed, transparency=int(grey[0, 0]))
    photo = load_photo(keyed)
    assert photo.channels == 2
    np.testing.assert_array_equal(photo.pixels[..., 0], grey)
    assert photo.pixels[0, 0, 1] == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
def test_premultiplied_alpha_tiff_is_kept_and_straightened_elsewhere(tmp_path, dtype):
    top = 65535 if dtype == np.uint16 else 255
    alpha = np.array([[0, top // 2, top]], dtype)
    straight = np.array([[[0, 0, 0], [top, top // 3, 0], [top // 5, top, top // 7]]], dtype)
    stored = np.dstack([np.round(straight * (alpha[..., None] / top)).astype(dtype), alpha])
    source = tmp_path / "assoc.tif"
    tifffile.imwrite(source, stored, photometric="rgb", extrasamples=["assocalpha"], compression="zlib")
    photo = load_photo(source)
    assert photo.info["premultiplied_alpha"] is True
    np.testing.assert_array_equal(photo.pixels, stored)  # as stored, not un-premultiplied on read
    out_tif, out_png = tmp_path / "out.tif", tmp_path / "out.png"
    save_photo(photo, out_tif)
    with tifffile.TiffFile(out_tif) as tif:
        assert tif.pages[0].extrasamples == (1,)
        np.testing.assert_array_equal(tif.pages[0].asarray(), stored)
    save_photo(photo, out_png)
    png = load_photo(out_png).pixels
    np.testing.assert_array_equal(png[..., 3], alpha)
    assert np.abs(png[0, 1:, :3].astype(int) - straight[0, 1:]).max() <= top // 255 + 1


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    source = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(source, quality=95)
    photo = load_photo(source)
    assert photo.channels == 3 and photo.info["converted_from"] == "CMYK"
    red = photo.pixels.reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_rgb8_converts_for_detectors():
    deep = np.array([[0, 128, 129, 257, 32896, 65535]], np.uint16)
    np.testing.assert_array_equal(rgb8(deep)[..., 0], [[0, 0, 1, 1, 128, 255]])
    assert rgb8(deep).shape == (1, 6, 3)
    grey_alpha = np.dstack([np.full((2, 2), 7, np.uint8), np.zeros((2, 2), np.uint8)])
    np.testing.assert_array_equal(rgb8(grey_alpha), np.full((2, 2, 3), 7))
    rgba = noise((3, 3, 4))
    np.testing.assert_array_equal(rgb8(rgba), rgba[..., :3])
    rgb = noise((3, 3, 3))
    assert rgb8(Photo(rgb, "PNG")) is rgb  # no copy for what detectors already take
    exact = noise((4, 4, 3)).astype(np.uint16) * 257
    np.testing.assert_array_equal(rgb8(exact), exact // 257)


def test_is_colourless(astronaut_rgb):
    grey = astronaut_rgb.mean(axis=2).astype(np.uint8)
    as_rgb = np.repeat(grey[..., None], 3, axis=2)
    assert is_colourless(as_rgb)
    assert is_colourless(grey)
    jittered = as_rgb.astype(int) + np.random.default_rng(0).integers(-1, 2, as_rgb.shape)
    assert is_colourless(np.clip(jittered, 0, 255).astype(np.uint8))
    assert not is_colourless(astronaut_rgb)
    sepia = np.clip(as_rgb * np.array([1.0, 0.85, 0.65]), 0, 255).astype(np.uint8)
    assert not is_colourless(sepia)
    assert is_colourless(as_rgb.astype(np.uint16) * 257)
    assert is_colourless(Photo(as_rgb, "PNG"))


def test_photo_rejects_pixels_it_cannot_save():
    with pytest.raises(ValueError):
        Photo(np.zeros((4, 4, 3), np.float32), "PNG")
    with pytest.raises(ValueError):
        Photo(np.zeros((4, 4, 5), np.uint8), "PNG")


def test_suffixes_and_formats():
    assert format_for_suffix(".JPG") == "JPEG"
    assert format_for_suffix("tif") == "TIFF"
    assert format_for_suffix(".webp") == "WEBP"
    with pytest.raises(ImageFileError) as info:
        format_for_suffix(".gif")
    assert info.value.reason == "unsupported"
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"} <= SUPPORTED_SUFFIXES
    assert (".heic" in SUPPORTED_SUFFIXES) == HAVE_HEIF
    assert DEFAULT_MAX_PIXELS > 100_000_000


# --------------------------------------------------------------------------------------------------
# JPEG and WebP encoding choices


def test_jpeg_defaults_to_quality_95_and_keeps_subsampling(tmp_path, astronaut_rgb):
    reference = io.BytesIO()
    Image.fromarray(astronaut_rgb).save(reference, "JPEG", quality=95)
    q95 = Image.open(reference).quantization
    for subsampling, code in (("4:2:2", 1), ("4:4:4", 0), ("4:2:0", 2)):
        source = tmp_path / f"s{code}.jpg"
        Image.fromarray(astronaut_rgb).save(source, quality=70, subsampling=subsampling)
        out = tmp_path / f"o{code}.jpg"
        save_photo(load_photo(source), out)
        written = Image.open(out)
        assert written.quantization == q95
        assert JpegImagePlugin.get_sampling(written) == code
    from_png = tmp_path / "from_png.jpg"
    save_photo(Photo(astronaut_rgb, "PNG"), from_png)
    assert JpegImagePlugin.get_sampling(Image.open(from_png)) == 0  # no chroma loss for non-JPEG input
    lower = tmp_path / "q60.jpg"
    save_photo(Photo(astronaut_rgb, "PNG"), lower, quality=60)
    assert Image.open(lower).quantization != q95


def test_webp_lossless_stays_lossless_and_lossy_uses_quality(tmp_path, astronaut_rgb):
    lossless = tmp_path / "lossless.webp"
    Image.fromarray(astronaut_rgb).save(lossless, lossless=True)
    out = tmp_path / "out_lossless.webp"
    save_photo(load_photo(lossless), out)
    assert b"VP8L" in out.read_bytes()[:64]
    np.testing.assert_array_equal(np.array(Image.open(out)), astronaut_rgb)

    lossy = tmp_path / "lossy.webp"
    Image.fromarray(astronaut_rgb).save(lossy, quality=80)
    photo = load_photo(lossy)
    assert photo.info["webp_lossless"] is False
    high, low = tmp_path / "high.webp", tmp_path / "low.webp"
    save_photo(photo, high)
    save_photo(photo, low, quality=30)
    assert b"VP8 " in high.read_bytes()[:64] and b"VP8L" not in high.read_bytes()[:64]
    assert high.stat().st_size > low.stat().st_size * 1.5


def test_conversions_on_save_to_limited_formats(tmp_path):
    deep = noise((6, 6, 3), np.uint16)
    out = tmp_path / "deep.jpg"
    save_photo(Photo(deep, "TIFF"), out)
    assert np.abs(np.array(Image.open(out)).astype(int) - deep // 257).mean() < 6

    with pytest.raises(ImageFileError) as info:
        save_photo(Photo(noise((6, 6, 4)), "PNG"), tmp_path / "alpha.jpg")
    assert info.value.reason == "unsupported" and "transparency" in str(info.value)
    assert not (tmp_path / "alpha.jpg").exists()

    with pytest.raises(ImageFileError) as info:
        save_photo(Photo(noise((6, 6, 3)), "PNG"), tmp_path / "x.gif")
    assert info.value.reason == "unsupported"
    save_photo(Photo(noise((6, 6, 3)), "PNG"), tmp_path / "named.dat", format="png")
    assert (tmp_path / "named.dat").read_bytes().startswith(b"\x89PNG")


# --------------------------------------------------------------------------------------------------
# atomic writes


def test_overwrite_false_refuses_existing_file(tmp_path):
    target = tmp_path / "keep.png"
    target.write_bytes(b"precious")
    with pytest.raises(ImageFileError) as info:
        save_photo(Photo(noise((4, 4, 3)), "PNG"), target, overwrite=False)
    assert info.value.reason == "exists" and info.value.path == target
    assert target.read_bytes() == b"precious"
    assert files_in(tmp_path) == {"keep.png"}
    fresh = tmp_path / "fresh.png"
    save_photo(Photo(noise((4, 4, 3)), "PNG"), fresh, overwrite=False)
    assert fresh.exists()


def interrupted_writer(exc: BaseException):
    def write(path: Path, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise exc

    return write


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (KeyboardInterrupt(), None),
        (OSError(errno.ENOSPC, "No space left on device"), "disk-full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk-full"),
        (OSError(errno.EIO, "Input/output error"), "unwritable"),
    ],
    ids=["ctrl-c", "enospc", "edquot", "eio"],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_interrupted_save_leaves_nothing_behind(tmp_path, monkeypatch, exc, reason, existing):
    target = tmp_path / "photo.png"
    if existing:
        target.write_bytes(b"the old photo")
    before = files_in(tmp_path)
    monkeypatch.setattr(imagefile, "_write_bytes", interrupted_writer(exc))
    with pytest.raises(BaseException) as info:
        save_photo(Photo(noise((32, 32, 3)), "PNG"), target)
    if reason is None:
        assert info.type is KeyboardInterrupt
    else:
        assert isinstance(info.value, ImageFileError) and info.value.reason == reason
        assert "photo.png" in str(info.value)
    assert files_in(tmp_path) == before
    if existing:
        assert target.read_bytes() == b"the old photo"


def test_encoder_interrupt_touches_nothing(tmp_path, monkeypatch):
    def explode(photo, quality, path):
        raise KeyboardInterrupt

    monkeypatch.setitem(imagefile._ENCODERS, "PNG", explode)
    with pytest.raises(KeyboardInterrupt):
        save_photo(Photo(noise((4, 4, 3)), "PNG"), tmp_path / "x.png")
    assert files_in(tmp_path) == set()


def test_atomic_write_publishes_only_on_success(tmp_path):
    target = tmp_path / "doc.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and files_in(tmp_path) == {"doc.bin"}

    with atomic_write(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and files_in(tmp_path) == {"doc.bin"}
    assert target.stat().st_mode & 0o777 == 0o640

    with pytest.raises(ImageFileError) as info, atomic_write(target, overwrite=False):
        pass
    assert info.value.reason == "exists"


def test_atomic_write_no_clobber_race(tmp_path):
    target = tmp_path / "race.png"
    with pytest.raises(ImageFileError) as info, atomic_write(target, overwrite=False) as tmp:
        tmp.write_bytes(b"mine")
        target.write_bytes(b"someone else was faster")
    assert info.value.reason == "exists"
    assert target.read_bytes() == b"someone else was faster"
    assert files_in(tmp_path) == {"race.png"}


def test_unwritable_destinations(tmp_path):
    photo = Photo(noise((4, 4, 3)), "PNG")
    with pytest.raises(ImageFileError) as info:
        save_photo(photo, tmp_path / "missing" / "x.png")
    assert info.value.reason == "unwritable" and "does not exist" in str(info.value)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(ImageFileError) as info:
        save_photo(photo, blocker / "x.png")
    assert info.value.reason == "unwritable"
    if os.name == "posix" and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(ImageFileError) as info:
                save_photo(photo, locked / "x.png")
            assert info.value.reason == "unwritable"
        finally:
            locked.chmod(0o700)


# --------------------------------------------------------------------------------------------------
# bad input


@pytest.fixture
def jpeg_bytes(astronaut_rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(astronaut_rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise((64, 64, 3))).save(buf, "PNG")
    return buf.getvalue()


def corrupt_idat(png: bytes) -> bytes:
    """Replace the image data with garbage that has a valid CRC: only decoding can notice."""
    garbage = bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8))
    ihdr_end = 33
    return png[:ihdr_end] + png_chunk(b"IDAT", garbage) + png_chunk(b"IEND", b"")


def flip_crc(png: bytes) -> bytes:
    data = bytearray(png)
    data[45] ^= 0xFF  # inside the first IDAT payload
    return bytes(data)


def giant_header_png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + bytes((width + 7) // 8)
    idat = zlib.compress(row * 16)  # far too little data: a decoder would fail much later
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


BAD_INPUTS = {
    "empty": ("empty.jpg", lambda j, p: b"", "empty"),
    "truncated-jpeg": ("cut.jpg", lambda j, p: j[: len(j) * 6 // 10], "truncated"),
    "truncated-jpeg-header": ("cut2.jpg", lambda j, p: j[:300], "truncated"),
    "truncated-png": ("cut.png", lambda j, p: p[: len(p) // 2], "truncated"),
    "random-bytes": ("noise.jpg", lambda j, p: bytes(noise((4000,), seed=9)), "not-an-image"),
    "text-as-jpeg": ("notes.jpg", lambda j, p: b"Shopping list\nmilk\neggs\n", "not-an-image"),
    "corrupt-idat": ("bad.png", lambda j, p: corrupt_idat(p), "corrupt"),
    "bad-crc": ("crc.png", lambda j, p: flip_crc(p), "corrupt"),
    "corrupt-jpeg-header": ("bad.jpg", lambda j, p: j[:2] + b"\xff\xc0\x00\x04\x08\x00" + j[2:], "corrupt"),
    "gif": ("anim.gif", lambda j, p: b"GIF89a" + bytes(100), "unsupported"),
    "svg": (
        "logo.svg",
        lambda j, p: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        "unsupported",
    ),
    "bomb": ("bomb.png", lambda j, p: giant_header_png(30000, 30000), "too-large"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_reasons(tmp_path, jpeg_bytes, png_bytes, case):
    name, make, reason = BAD_INPUTS[case]
    path = tmp_path / name
    path.write_bytes(make(jpeg_bytes, png_bytes))
    with pytest.raises(ImageFileError) as info:
        load_photo(path)
    assert info.value.reason == reason, str(info.value)
    assert info.value.path == path
    assert name in str(info.value)


def test_valid_jpeg_variants_are_not_mistaken_for_damaged(tmp_path, astronaut_rgb):
    progressive = tmp_path / "progressive.jpg"
    Image.fromarray(astronaut_rgb).save(progressive, quality=90, progressive=True)
    trailer = tmp_path / "trailer.jpg"
    trailer.write_bytes(progressive.read_bytes() + b"vendor trailer after EOI" * 20)
    mpo = tmp_path / "phone.jpg"
    Image.fromarray(astronaut_rgb).save(mpo, "MPO", save_all=True, append_images=[Image.new("RGB", (32, 32))])
    for path in (progressive, trailer):
        np.testing.assert_array_equal(load_photo(path).pixels, np.array(Image.open(path)))
    photo = load_photo(mpo)  # first picture of a multi-picture file
    assert photo.pixels.shape == (512, 512, 3)
    out = tmp_path / "out.jpg"
    save_photo(photo, out)
    assert b"MPF\x00" not in out.read_bytes()  # the index of pictures we did not carry is not copied


def test_truncation_is_caught_even_when_pillow_is_told_to_accept_it(tmp_path, monkeypatch, jpeg_bytes, png_bytes):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for name, data in (("a.jpg", jpeg_bytes[: len(jpeg_bytes) * 3 // 4]), ("a.png", png_bytes[:-200])):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageFileError) as info:
            load_photo(path)
        assert info.value.reason == "truncated"


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(noise((100, 100, 3))).save(path)
    with pytest.raises(ImageFileError) as info:
        load_photo(path, max_pixels=9_999)
    assert info.value.reason == "too-large" and "100x100" in str(info.value)
    assert load_photo(path, max_pixels=10_000).width == 100
    assert load_photo(path, max_pixels=None).height == 100
    jpg = tmp_path / "big.jpg"
    Image.fromarray(noise((100, 100, 3))).save(jpg)
    with pytest.raises(ImageFileError) as info:
        load_photo(jpg, max_pixels=5_000)
    assert info.value.reason == "too-large"


def test_unreadable_paths(tmp_path, monkeypatch):
    with pytest.raises(ImageFileError) as info:
        load_photo(tmp_path)
    assert info.value.reason == "unreadable" and "folder" in str(info.value)
    with pytest.raises(ImageFileError) as info:
        load_photo(tmp_path / "nope.jpg")
    assert info.value.reason == "unreadable"
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(b"\xff\xd8\xff")

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ImageFileError) as info:
        load_photo(locked)
    assert info.value.reason == "unreadable" and "permission" in str(info.value).lower()


def test_animations_and_multipage_files_are_refused(tmp_path):
    frames = [Image.fromarray(noise((8, 8, 3), seed=s)) for s in range(2)]
    webp = tmp_path / "anim.webp"
    frames[0].save(webp, save_all=True, append_images=frames[1:], duration=100)
    tif = tmp_path / "pages.tif"
    frames[0].save(tif, save_all=True, append_images=frames[1:])
    apng = tmp_path / "anim.png"
    frames[0].save(apng, save_all=True, append_images=frames[1:], duration=100)
    for path in (webp, tif, apng):
        with pytest.raises(ImageFileError) as info:
            load_photo(path)
        assert info.value.reason == "unsupported", path


def test_inputs_are_never_modified(tmp_path, astronaut_rgb):
    sources = []
    for suffix in (".jpg", ".png", ".tif", ".webp"):
        path = tmp_path / f"in{suffix}"
        make_source_with_metadata(path, astronaut_rgb[:64, :64].copy())
        sources.append(path)
    before = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sources}
    out = tmp_path / "out"
    out.mkdir()
    for path in sources:
        save_photo(load_photo(path), out / path.name)
    assert {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sources} == before


# --------------------------------------------------------------------------------------------------
# HEIF


def test_heic_without_pillow_heif_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # makes "import pillow_heif" fail
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    with pytest.raises(ImageFileError) as info:
        load_photo(path)
    assert info.value.reason == "unsupported"
    assert "pip install facerestore-cli[heif]" in str(info.value)
    with pytest.raises(ImageFileError) as info:
        save_photo(Photo(noise((4, 4, 3)), "JPEG"), tmp_path / "out.heic")
    assert info.value.reason == "unsupported" and "pip install facerestore-cli[heif]" in str(info.value)
    assert not (tmp_path / "out.heic").exists()


@pytest.mark.skipif(not HAVE_HEIF, reason="pillow-heif is not installed (optional extra 'heif')")
def test_heic_round_trip(tmp_path, astronaut_rgb):
    source = tmp_path / "phone.heic"
    make_source_with_metadata(source, astronaut_rgb[:128, :96].copy())
    photo = load_photo(source)
    assert photo.format == "HEIF" and photo.pixels.shape == (96, 128, 3)  # libheif applied the rotation
    out = tmp_path / "out.heic"
    save_photo(photo, out)
    again = load_photo(out)
    assert again.pixels.shape == photo.pixels.shape  # not rotated a second time
    assert np.abs(again.pixels.astype(int) - photo.pixels).mean() < 4
    assert _exif(again.exif).get(0x0112, 1) == 1
    assert expected_tags(_exif(again.exif)) == SOURCE_TAGS
    assert again.icc_profile == ICC and TITLE in again.xmp


# --------------------------------------------------------------------------------------------------
# real photos from the shared data set


def test_real_photos_load_and_round_trip(shared, tmp_path):
    folder = shared / "data" / "eval-dev" / "realworld" / "whole"
    photos = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES),
        key=lambda p: p.stat().st_size,
    )
    assert photos
    for path in [*photos[:3], *[p for p in photos if p.suffix == ".png"][:1]]:
        photo = load_photo(path)
        assert photo.source == path and photo.pixels.dtype == np.uint8
        out = tmp_path / (path.stem + ".png")
        save_photo(photo, out)
        np.testing.assert_array_equal(load_photo(out).pixels, photo.pixels)
        if photo.exif:
            assert _exif(load_photo(out).exif).get(0x010F) == _exif(photo.exif).get(0x010F)


def test_a_jpeg_written_like_its_source_changes_only_where_it_is_told_it_may(tmp_path):
    # changed_within (the pasted faces' regions) bounds the comparison: a change outside is not written
    rng = np.random.default_rng(3)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, (160, 240, 3), dtype=np.uint8), (0, 0), 3)
    src = tmp_path / "src.jpg"
    Image.fromarray(pixels).save(src, quality=92)
    data = src.read_bytes()
    original = imagefile.load_photo(src)
    new = original.pixels.copy()
    new[16:48, 16:48] = 255 - new[16:48, 16:48]  # inside the region
    new[120:140, 200:230] = 0  # outside it
    out = tmp_path / "out.jpg"
    how = imagefile.save_like_source(
        imagefile.Photo(new, "JPEG"), out, source=data, original=original.pixels,
        changed_within=[(slice(8, 56), slice(8, 56))],
    )  # fmt: skip
    assert how.startswith("blocks: ")
    back = imagefile.load_photo(out).pixels.astype(int)
    assert np.abs(back[16:48, 16:48] - new[16:48, 16:48]).mean() < 4
    assert np.array_equal(back[64:, 64:], original.pixels[64:, 64:])
