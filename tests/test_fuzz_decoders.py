"""Damaged photo files: each bug the decoder fuzzer (bench/fuzz_decoders.py) found, and the fuzzer itself.

Every file is built here from scratch. The contract under test is load_photo's: any bytes give a Photo or
an ImageFileError with an accurate reason, quickly (an album must not stall on one file) and without
silently inventing pixels. The time limits are loose (several times the fixed cost, a fraction of the
cost before the fix), so that a busy machine does not fail them.
"""

from __future__ import annotations

import importlib
import io
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import BmpImagePlugin, Image

from facerestore_cli.imagefile import ImageFileError, load_photo

BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_module(name: str):
    """A module of bench/ (the fuzzer is a script there, not part of the package)."""
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    return importlib.import_module(name)


def picture(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(3)
    rgb = np.dstack([x * 255 // w, y * 255 // h, (x + y) % 256]) + rng.integers(0, 30, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def encode(px: np.ndarray | Image.Image, fmt: str, **options) -> bytes:
    im = Image.fromarray(px) if isinstance(px, np.ndarray) else px
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def refused(tmp_path: Path, data: bytes, suffix: str, **kw) -> ImageFileError:
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(data)
    with pytest.raises(ImageFileError) as info:
        load_photo(path, **kw)
    assert info.value.path == path
    return info.value


def load_timed(tmp_path: Path, data: bytes, suffix: str, **kw):
    path = tmp_path / f"file{suffix}"
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        result = load_photo(path, **kw)
    except ImageFileError as exc:
        result = exc
    return result, time.perf_counter() - start


# --------------------------------------------------------------------------------------------------
# JPEG


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment; a scan's segment includes its entropy-coded data."""
    return bench_module("fuzz_cases").jpeg_segments(data)


def test_jpeg_scan_bomb_is_refused_before_decoding(tmp_path):
    """A progressive JPEG repeating its scans: libjpeg decodes each one over the whole image (minutes)."""
    data = encode(picture(), "JPEG", progressive=True)
    scans = [(s, e) for m, s, e in jpeg_segments(data) if m == 0xDA]
    assert len(scans) == 10
    flood = b"".join(data[s:e] for s, e in scans) * 11  # 120 scans
    bomb = data[: scans[-1][1]] + flood + data[scans[-1][1] :]
    info = refused(tmp_path, bomb, ".jpg")
    assert info.reason == "too-large" and "scans" in info.detail
    photo, _ = load_timed(tmp_path, data, ".jpg")
    assert not isinstance(photo, ImageFileError)


def test_jpeg_full_of_stuffed_ff_bytes_is_walked_quickly(tmp_path):
    """20 MB of stuffed 0xFF 0x00 in a scan: the marker walk looped once per pair in Python (6.5 s)."""
    data = encode(picture(), "JPEG")
    photo, seconds = load_timed(tmp_path, data[:-2] + b"\xff\x00" * 10_000_000 + b"\xff\xd9", ".jpg")
    assert not isinstance(photo, ImageFileError) and photo.width == 64
    assert seconds < 2.5


@pytest.mark.parametrize("where", ["between segments", "after the scan"])
def test_jpeg_padded_with_megabytes_of_fill_bytes_is_refused_quickly(tmp_path, where):
    """Fill bytes are legal, but the walk took 1.7 s per 3 MB of them and libjpeg under Pillow 6 s per 20 MB."""
    data = encode(picture(), "JPEG")
    fill = b"\xff" * 3_000_000
    padded = data[:2] + fill + data[2:] if where == "between segments" else data[:-2] + fill + data[-2:]
    info, seconds = load_timed(tmp_path, padded, ".jpg")
    assert isinstance(info, ImageFileError) and info.reason == "too-large"
    assert seconds < 2.5
    photo, _ = load_timed(tmp_path, data[:2] + b"\xff" * 1000 + data[2:], ".jpg")  # a little fill is fine
    assert not isinstance(photo, ImageFileError)


def test_jpeg_frame_header_declaring_more_components_than_it_describes(tmp_path):
    """A grey JPEG whose SOF says 3 components: Pillow's sampling lookup raised IndexError."""
    data = bytearray(encode(picture()[:, :, 0], "JPEG"))
    sof = next(s for m, s, _ in jpeg_segments(bytes(data)) if m == 0xC0)
    assert data[sof + 9] == 1
    data[sof + 9] = 3
    info = refused(tmp_path, bytes(data), ".jpg")
    assert info.reason == "corrupt" and "3 components" in info.detail


# --------------------------------------------------------------------------------------------------
# BMP


def rle_bmp(width: int, height: int, body: bytes, *, rle4: bool = False, grey: bool = True) -> bytes:
    colours = 16 if rle4 else 256
    palette = b"".join(
        bytes((i * 255 // (colours - 1),) * 3 + (0,)) if grey else bytes((i, 255 - i, (7 * i) % 256, 0))
        for i in range(colours)
    )
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 4 if rle4 else 8, 2 if rle4 else 1, len(body), 0, 0, 0, 0)
    offset = 14 + 40 + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + palette + body


def test_bmp_rle_on_a_huge_canvas_decodes_quickly(tmp_path):
    """One pixel and an end-of-line per row: Pillow padded each row a byte at a time (16 s at 121 Mpx)."""
    side = 6000
    photo, seconds = load_timed(tmp_path, rle_bmp(side, side, b"\x01\x07\x00\x00" * side + b"\x00\x01"), ".bmp")
    assert not isinstance(photo, ImageFileError), photo
    assert photo.pixels.shape == (side, side)
    row = photo.pixels[side // 2]
    assert row[0] == 7 and not row[1:].any()
    assert seconds < 3.0


@pytest.mark.parametrize("rle4", [False, True], ids=["rle8", "rle4"])
def test_bmp_rle_decoding_matches_pillow(rle4):
    """The replacement decoder must give Pillow's pixels, including its clipping and padding rules."""
    from facerestore_cli.imagefile import bmp

    rng = np.random.default_rng(11)
    for trial in range(300):
        width, height = int(rng.integers(1, 30)), int(rng.choice([1, 3, 17])) * int(rng.choice([1, -1]))
        body = bytearray()
        for _ in range(int(rng.integers(0, 40))):
            kind = rng.random()
            if kind < 0.5:
                body += bytes((int(rng.integers(1, 40)), int(rng.integers(0, 256))))
            elif kind < 0.65:
                body += b"\x00\x00"
            elif kind < 0.72:
                body += bytes((0, 2, int(rng.integers(0, 9)), int(rng.integers(0, 3))))
            elif kind < 0.74:
                body += b"\x00\x01"
            else:
                n = int(rng.integers(3, 30))
                body += bytes((0, n)) + rng.integers(0, 256, int(rng.integers(0, n + 1)), np.uint8).tobytes()
        data = rle_bmp(width, height, bytes(body), rle4=rle4, grey=False)

        def decode(swap: bool, data=data) -> np.ndarray | None:
            im = BmpImagePlugin.BmpImageFile(io.BytesIO(data))
            if swap:
                im.tile = [(bmp._RLE_DECODER, *im.tile[0][1:])]
            try:
                im.load()
            except (ValueError, ImageFileError):
                return None
            return np.asarray(im)

        ours, pillows = decode(True), decode(False)
        assert (ours is None) == (pillows is None), trial
        if ours is not None:
            np.testing.assert_array_equal(ours, pillows, err_msg=str(trial))


def test_bmp_rle_data_ending_early_says_how(tmp_path):
    rows = b"\x02\x09\x00\x00" * 10
    assert refused(tmp_path, rle_bmp(8, 20, rows), ".bmp").reason == "truncated"  # the data ran out
    assert refused(tmp_path, rle_bmp(8, 20, rows + b"\x00\x01"), ".bmp").reason == "corrupt"  # end marker too early
    photo, _ = load_timed(tmp_path, rle_bmp(8, 10, rows + b"\x00\x01"), ".bmp")
    assert not isinstance(photo, ImageFileError) and photo.pixels[:, :2].min() == 9 and not photo.pixels[:, 2:].any()


# --------------------------------------------------------------------------------------------------
# TIFF


def tiff_entries(data: bytes) -> dict[int, int]:
    """Tag -> position of its 12-byte entry in IFD0 of a little-endian TIFF."""
    ifd = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[ifd : ifd + 2])[0]
    entries = {}
    for k in range(count):
        pos = ifd + 2 + 12 * k
        entries[struct.unpack("<H", data[pos : pos + 2])[0]] = pos
    return entries


def test_tiff_tag_of_the_wrong_type_is_corrupt(tmp_path):
    """ImageWidth re-typed as text: tifffile hands over a str, and int() raised ValueError."""
    data = bytearray(encode(picture(), "TIFF"))
    at = tiff_entries(bytes(data))[256]
    data[at + 2 : at + 4] = struct.pack("<H", 2)  # ASCII
    info = refused(tmp_path, bytes(data), ".tif")
    assert info.reason == "corrupt" and "ImageWidth" in info.detail


def test_tiff_tag_with_several_values_where_one_belongs_is_corrupt(tmp_path):
    """Compression re-typed as bytes with a count of 2: int() raised TypeError/ValueError."""
    data = bytearray(encode(picture(), "TIFF", compression="tiff_lzw"))
    at = tiff_entries(bytes(data))[259]
    data[at + 2 : at + 8] = struct.pack("<HI", 1, 2)  # BYTE x 2
    info = refused(tmp_path, bytes(data), ".tif")
    assert info.reason == "corrupt" and "Compression" in info.detail


def test_tiff_cut_before_its_directory_is_truncated(tmp_path):
    """OpenCV (and others) write the directory last, so a cut-off file lost it: was "corrupt (IndexError)"."""
    import cv2

    ok, encoded = cv2.imencode(".tiff", picture().astype(np.uint16) * 257)
    data = encoded.tobytes()
    assert ok and struct.unpack("<I", data[4:8])[0] > len(data) // 2
    assert refused(tmp_path, data[: len(data) // 2], ".tif").reason == "truncated"


def test_tiff_without_an_image_directory_says_so(tmp_path):
    data = bytearray(encode(picture(), "TIFF"))
    data[4:8] = bytes(4)  # IFD0 at offset 0: none
    info = refused(tmp_path, bytes(data), ".tif")
    assert info.reason == "corrupt" and "no readable image directory" in info.detail


def test_tiff_descriptive_tag_that_cannot_be_written_back_does_not_refuse_the_photo(tmp_path):
    """XResolution re-typed as text: building the EXIF block raised TypeError and the photo was refused."""
    data = bytearray(encode(picture(), "TIFF", dpi=(300, 300), description="lake"))
    at = tiff_entries(bytes(data))[282]
    data[at + 2 : at + 4] = struct.pack("<H", 2)  # RATIONAL -> ASCII
    path = tmp_path / "odd.tif"
    path.write_bytes(bytes(data))
    photo = load_photo(path)
    np.testing.assert_array_equal(photo.pixels, picture())
    exif = Image.Exif()
    exif.load(photo.exif)
    assert exif.get(270) == "lake" and 282 not in exif  # the good tag kept, the damaged one dropped


def test_multipage_tiff_is_refused_without_reading_every_page(tmp_path):
    for pages, subfiletype, needle in ((2, 0, "page 2"), (70, 1, "more than 64 pages")):
        buf = io.BytesIO()
        with tifffile.TiffWriter(buf) as tw:
            tw.write(picture(), photometric="rgb", metadata=None)
            for _ in range(pages - 1):
                tw.write(np.zeros((2, 2), np.uint8), metadata=None, subfiletype=subfiletype)
        info = refused(tmp_path, buf.getvalue(), ".tif")
        assert info.reason == "unsupported" and needle in info.detail
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:  # a full image and its reduced-resolution preview: still one photo
        tw.write(picture(), photometric="rgb", metadata=None)
        tw.write(picture()[::2, ::2], photometric="rgb", metadata=None, subfiletype=1)
    photo, _ = load_timed(tmp_path, buf.getvalue(), ".tif")
    assert not isinstance(photo, ImageFileError) and photo.width == 64


# --------------------------------------------------------------------------------------------------
# PNG


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def with_chunk_after_ihdr(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]


def test_png_damaged_compressed_profile_is_corrupt(tmp_path):
    """An iCCP chunk whose CRC is right but whose zlib data is not: zlib.error escaped our inflater."""
    bad = png_chunk(b"iCCP", b"sRGB\x00\x00" + b"\x78\x9c" + b"not deflate data at all")
    info = refused(tmp_path, with_chunk_after_ihdr(encode(picture(), "PNG"), bad), ".png")
    assert info.reason == "corrupt" and "compressed metadata" in info.detail


def test_png_metadata_bomb_is_too_large(tmp_path):
    """64 MB of XMP in a 70 KB chunk: refused as too large instead of as a ValueError."""
    xmp = zlib.compress(b" " * (65 << 20), 9)
    itxt = png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + xmp)
    info = refused(tmp_path, with_chunk_after_ihdr(encode(picture(), "PNG"), itxt), ".png")
    assert info.reason == "too-large"


def test_png_chunk_with_a_wrong_length_is_corrupt_not_truncated(tmp_path):
    """A complete file with a valid CRC on a 9-byte IHDR or 2-byte RGB tRNS: reported as "truncated"."""
    png = encode(picture(), "PNG")
    assert refused(tmp_path, with_chunk_after_ihdr(png, png_chunk(b"IHDR", png[16:25])), ".png").reason == "corrupt"
    assert refused(tmp_path, with_chunk_after_ihdr(png, png_chunk(b"tRNS", b"\x00\x01")), ".png").reason == "corrupt"


def test_png_header_taller_than_its_image_data_is_corrupt(tmp_path):
    """IHDR claims twice the rows the (intact) data holds: Pillow filled them with black without a word."""
    png = bytearray(encode(picture(), "PNG"))
    png[20:24] = struct.pack(">I", 96)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    info = refused(tmp_path, bytes(png), ".png")
    assert info.reason == "corrupt" and "image data" in info.detail
    black_bottom = picture()
    black_bottom[-5:] = 0  # a genuinely black last row is not mistaken for missing data
    for image in (black_bottom, black_bottom[:, :, 0]):
        photo, _ = load_timed(tmp_path, encode(image, "PNG"), ".png")
        assert not isinstance(photo, ImageFileError), photo
        np.testing.assert_array_equal(photo.pixels, image)


# --------------------------------------------------------------------------------------------------
# the fuzzer


@pytest.fixture(scope="module")
def fuzz():
    return bench_module("fuzz_decoders")


@pytest.mark.slow
def test_fuzzer_runs_300_cases_without_a_crash_hang_or_blow_up(fuzz, tmp_path):
    FORMATS, make_case, make_seeds, synthetic_pictures = (
        getattr(bench_module("fuzz_cases"), n) for n in ("FORMATS", "make_case", "make_seeds", "synthetic_pictures")
    )
    seeds = make_seeds(synthetic_pictures())
    by_format = {fmt: [s for s in seeds if s.format == fmt] for fmt in FORMATS}
    assert make_case(by_format, 5, 17).data == make_case(by_format, 5, 17).data  # cases can be regenerated
    report = fuzz.fuzz(seeds, cases=300, seed=5, out_dir=tmp_path / "out", workers=2, timeout=10.0)
    assert report.cases == 300
    assert {fmt for fmt, _ in report.counts} == set(FORMATS)
    assert report.total("loaded") > 0 and report.total("error") > 0
    assert report.failures == [], report.failures
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fuzzer_kills_and_replaces_a_worker_that_hangs(fuzz, tmp_path):
    """A case slower than the timeout is a hang: its worker is killed, the case saved, the run goes on."""
    cases_module = bench_module("fuzz_cases")
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (3000, 3000, 3), np.uint8)
    # 0.27 s to load here, and the largest random PNG the worker's memory limit lets it decode; the
    # timeout is well under that and still 100x what a quick case takes (under 1 ms)
    slow = cases_module.Seed("slow", "PNG", encode(big, "PNG", compress_level=1))
    quick = cases_module.Seed("quick", "PNG", encode(picture(), "PNG"))  # a few ms
    cases = [cases_module.Case(i, seed, (), seed.data) for i, seed in enumerate((quick, slow, quick, quick))]
    report = fuzz.run_cases(cases, workers=1, timeout=0.1, out_dir=tmp_path / "out")
    assert report.counts["PNG", "hang"] == 1 and report.counts["PNG", "loaded"] == 3
    (note,) = report.failures
    assert note["case"] == 1 and Path(note["file"]).read_bytes() == slow.data
