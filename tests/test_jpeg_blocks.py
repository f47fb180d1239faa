"""Block-exact JPEG patching: what lies away from the faces must decode exactly as the source did.

Every check decodes real JPEG files, made here with Pillow (libjpeg-turbo) or jpeglib, or taken from the
shared real-world photos, and reads headers with a parser of its own rather than the module's.
"""

from __future__ import annotations

import io
import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image, ImageFilter

from facerestore_cli.imagefile.jpeg_blocks import (
    estimate_quality,
    footprint,
    inspect_jpeg,
    patch_jpeg,
    patch_jpeg_with_stats,
    read_source_blocks,
)

jpeglib = pytest.importorskip("jpeglib", reason="jpeglib is not installed (pip install jpeglib)")

#: how much worse (dB) the patched region may be than a whole encode of the new pixels at the source's tables
PSNR_SLACK = 0.5
#: Pillow's names for the sampling of the luma component
PILLOW_SUBSAMPLING = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0"}
BOX = (101, 233, 150, 311)  # rows, columns: off the 8/16 grid on every side

SHARED_WHOLE = "data/eval-dev/realworld/whole"
SHARED_PHOTOS = [
    "serengil_couple.jpg",  # 2280x1588 4:2:0 q94 with restart markers, EXIF x2, IPTC, ICC
    "serengil_selfie-many-people.jpg",  # progressive
    "tencentarc_00.jpg",  # 1297x1920 4:4:4 q98, Adobe APP14
    "tencentarc_Blake_Lively.jpg",  # 4:4:4, APP12 Ducky
    "xpixelgroup_01.jpg",
    "xpixelgroup_Audrey_Hepburn.jpg",
    "xpixelgroup_Harry_Potter.jpg",
    "xpixelgroup_Queen.jpeg",
    "xpixelgroup_real47_1.jpg",  # 10 kB: the kind of file a q95 re-encode doubles
]
SHARED_PAIRS = ["001/neutral.jpg", "001/smiling.jpg", "003/smiling.jpg"]


# --- helpers -----------------------------------------------------------------------------------------


def segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, raw bytes) of every segment before the first scan, plus the SOS itself."""
    assert data[:2] == b"\xff\xd8"
    out, pos = [], 2
    while True:
        while data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        out.append((marker, data[pos : pos + 2 + length]))
        if marker == 0xDA:
            return out
        pos += 2 + length


def app_and_com(data: bytes) -> list[bytes]:
    return [raw for m, raw in segments(data) if 0xE0 <= m <= 0xEF or m == 0xFE]


def metadata_size(data: bytes) -> int:
    return sum(len(raw) for raw in app_and_com(data))


def sof_marker(data: bytes) -> int:
    return next(m for m, _ in segments(data) if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC))


def restart_interval(data: bytes) -> int:
    return next((struct.unpack(">H", raw[4:6])[0] for m, raw in segments(data) if m == 0xDD), 0)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def pillow_jpeg(pixels: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", **options)
    return buf.getvalue()


def jpeglib_jpeg(tmp: Path, pixels: np.ndarray, samp_factor, **options) -> bytes:
    """For what Pillow cannot write: 4:1:1 and 4:4:0 sampling, arithmetic coding."""
    path = tmp / "made.jpg"
    with jpeglib.version("turbo210"):
        image = jpeglib.from_spatial(np.ascontiguousarray(pixels))
        image.samp_factor = np.array(samp_factor)  # (vertical, horizontal) per component
        image.write_spatial(str(path), **options)
    return path.read_bytes()


def coefficients(tmp: Path, data: bytes) -> list[np.ndarray]:
    path = tmp / "coefficients.jpg"
    path.write_bytes(data)
    with jpeglib.version("turbo210"):
        dct = jpeglib.read_dct(str(path))
        return [np.array(dct.Y)] + ([np.array(dct.Cb), np.array(dct.Cr)] if dct.has_chrominance else [])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def blur_box(pixels: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for a restored face: the box blurred, the rest untouched; returns the image and mask."""
    y0, y1, x0, x1 = box
    new = pixels.copy()
    new[y0:y1, x0:x1] = np.asarray(Image.fromarray(pixels[y0:y1, x0:x1]).filter(ImageFilter.GaussianBlur(3)))
    changed = np.zeros(pixels.shape[:2], dtype=bool)
    changed[y0:y1, x0:x1] = True
    return new, changed


def reference_encode(source: bytes, new: np.ndarray, tmp: Path) -> bytes:
    """The new image encoded whole at the source's own tables and sampling, optimised: what a careful
    re-encode would produce, the yardstick for the patched region's quality and size."""
    layout = inspect_jpeg(source)
    im = Image.open(io.BytesIO(source))
    if layout.components == 1 or layout.sampling[0] in PILLOW_SUBSAMPLING:
        options = {"qtables": im.quantization, "optimize": True, "progressive": layout.progressive}
        if layout.components == 3:
            options["subsampling"] = PILLOW_SUBSAMPLING[layout.sampling[0]]
        return pillow_jpeg(new, **options)
    path = tmp / "source.jpg"
    path.write_bytes(source)
    with jpeglib.version("turbo210"):
        dct = jpeglib.read_dct(str(path))
        qt = np.stack([dct.get_component_qt(k) for k in range(3)])
    factors = [[v, h] for h, v in layout.sampling]
    return jpeglib_jpeg(tmp, new, factors, qt=qt, quant_tbl_no=np.arange(3), flags=["+OPTIMIZE_CODING"])


def check_patch(source: bytes, new: np.ndarray, changed: np.ndarray, tmp: Path) -> dict[str, float]:
    """Patch and check every promise; returns the figures for the report."""
    layout = inspect_jpeg(source)
    assert layout.exact_possible, layout.reason
    old = decode(source)
    result = patch_jpeg_with_stats(source, new, changed)
    out = decode(result.data)
    fp = footprint(layout, changed)

    # the footprint is whole 8x8 blocks, covers the change, and everything outside it is bit-identical
    assert fp[changed].all()
    h8, w8 = -(-layout.height // 8) * 8, -(-layout.width // 8) * 8
    blocks = np.pad(fp, ((0, h8 - layout.height), (0, w8 - layout.width)), mode="edge")
    per_block = blocks.reshape(h8 // 8, 8, w8 // 8, 8).mean(axis=(1, 3))
    assert set(np.unique(per_block)) <= {0.0, 1.0}
    assert fp.mean() < 0.5
    assert np.array_equal(out[~fp], old[~fp]), f"{int((out[~fp] != old[~fp]).sum())} values changed outside"

    # inside, about as close to the new pixels as a whole encode at the source's own tables gets
    reference = reference_encode(source, new, tmp)
    got, best = psnr(out[changed], new[changed]), psnr(decode(reference)[changed], new[changed])
    assert got >= best - PSNR_SLACK, (got, best)

    # size: the source's metadata, the untouched share of its image data, and the re-encoded MCUs' share
    # of a whole re-encode's image data (the share is the fraction of MCUs re-encoded)
    share = result.reencoded_fraction
    meta, image = metadata_size(source), len(source) - metadata_size(source)
    budget = meta + (1 - share) * image + share * (len(reference) - metadata_size(reference))
    assert len(result.data) <= 1.05 * budget, (len(result.data), budget)

    # headers: APPn/COM byte for byte and in order, same coding process, restart markers where sequential
    assert app_and_com(result.data) == app_and_com(source)
    assert sof_marker(result.data) == sof_marker(source) or {sof_marker(result.data), sof_marker(source)} == {
        0xC0,
        0xC1,
    }
    if not layout.progressive:
        assert restart_interval(result.data) == restart_interval(source)
    return {"source": len(source), "patched": len(result.data), "psnr": got, "reference_psnr": best}


# --- made here ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo at a size that is a multiple of neither 8 nor 16, so edge MCUs are partial."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:389, :501])


PILLOW_CASES = {
    "baseline-420-q75": {"quality": 75, "subsampling": "4:2:0"},
    "baseline-444-q100": {"quality": 100, "subsampling": "4:4:4"},
    "progressive-420-q90": {"quality": 90, "subsampling": "4:2:0", "progressive": True},
    "baseline-422-q85": {"quality": 85, "subsampling": "4:2:2"},
    "grey-q85": {"quality": 85, "grey": True},
    "restart-420-q80": {"quality": 80, "subsampling": "4:2:0", "restart_marker_blocks": 5},
    "restart-444-rows": {"quality": 92, "subsampling": "4:4:4", "restart_marker_rows": 1},
    "restart-grey": {"quality": 70, "grey": True, "restart_marker_blocks": 3},
    "restart-progressive": {"quality": 88, "progressive": True, "restart_marker_rows": 2},
}


def make_pillow_case(photo: np.ndarray, name: str) -> bytes:
    options = dict(PILLOW_CASES[name])
    pixels = photo[:, :, 0].copy() if options.pop("grey", False) else photo
    return pillow_jpeg(pixels, **options)


@pytest.mark.parametrize("name", sorted(PILLOW_CASES))
def test_patch_keeps_every_block_outside_the_footprint(photo, name, tmp_path):
    source = make_pillow_case(photo, name)
    new, changed = blur_box(decode(source), BOX)
    check_patch(source, new, changed, tmp_path)


@pytest.mark.parametrize(
    "samp_factor",
    [[[1, 4], [1, 1], [1, 1]], [[2, 1], [1, 1], [1, 1]], [[2, 2], [1, 2], [2, 1]]],
    ids=["4:1:1", "4:4:0", "mixed-chroma"],
)
def test_patch_handles_sampling_pillow_cannot_write(photo, samp_factor, tmp_path):
    source = jpeglib_jpeg(tmp_path, photo, samp_factor, qt=82)
    assert inspect_jpeg(source).sampling == tuple((h, v) for v, h in samp_factor)
    new, changed = blur_box(decode(source), BOX)
    check_patch(source, new, changed, tmp_path)


@pytest.mark.parametrize("name", ["baseline-420-q75", "progressive-420-q90", "grey-q85", "restart-420-q80"])
def test_only_the_reencoded_mcus_get_new_coefficients(photo, name, tmp_path):
    source = make_pillow_case(photo, name)
    layout = inspect_jpeg(source)
    new, changed = blur_box(decode(source), BOX)
    out = patch_jpeg(source, new, changed)
    mh, mw = layout.mcu
    y0, y1, x0, x1 = BOX
    for plane_src, plane_out, (h, v) in zip(
        coefficients(tmp_path, source), coefficients(tmp_path, out), layout.sampling, strict=True
    ):
        rows = np.arange(plane_src.shape[0]) // v
        cols = np.arange(plane_src.shape[1]) // h
        inside = ((rows >= y0 // mh) & (rows <= (y1 - 1) // mh))[:, None] & (
            (cols >= x0 // mw) & (cols <= (x1 - 1) // mw)
        )[None, :]
        same = (plane_src == plane_out).all(axis=(2, 3))
        assert same[~inside].all()
        assert not same[inside].all()  # the blur really was re-encoded


@pytest.mark.parametrize("name", ["baseline-420-q75", "progressive-420-q90", "grey-q85", "restart-420-q80"])
def test_blocks_read_ahead_give_the_same_file_and_serve_only_their_own_bytes(photo, name):
    source = make_pillow_case(photo, name)
    new, changed = blur_box(decode(source), BOX)
    want = patch_jpeg_with_stats(source, new, changed).data
    blocks = read_source_blocks(source)
    assert patch_jpeg_with_stats(source, new, changed, source=blocks).data == want
    assert patch_jpeg_with_stats(bytes(source), new, changed, source=blocks).data == want  # used again
    other = make_pillow_case(photo, "baseline-444-q100")  # blocks of another file are not used
    other_new, other_changed = blur_box(decode(other), BOX)
    assert patch_jpeg_with_stats(other, other_new, other_changed, source=blocks).data == patch_jpeg(
        other, other_new, other_changed
    )


def test_blocks_are_not_read_ahead_from_a_file_that_cannot_be_patched(photo, tmp_path):
    for data, words in refusals(photo, tmp_path).values():
        with pytest.raises(ValueError, match=words):
            read_source_blocks(data)


def test_an_empty_mask_returns_the_source_unchanged(photo):
    source = make_pillow_case(photo, "baseline-420-q75")
    result = patch_jpeg_with_stats(source, decode(source), np.zeros(photo.shape[:2], dtype=bool))
    assert result.data == source
    assert result.reencoded_mcus == 0


def test_a_one_pixel_change_reencodes_one_mcu(photo, tmp_path):
    source = make_pillow_case(photo, "baseline-444-q100")
    new, changed = decode(source).copy(), np.zeros(photo.shape[:2], dtype=bool)
    new[200, 300] = 255 - new[200, 300]
    changed[200, 300] = True
    result = patch_jpeg_with_stats(source, new, changed)
    assert result.reencoded_mcus == 1
    assert footprint(inspect_jpeg(source), changed).sum() == 64  # 4:4:4: no upsampling ring
    diff = np.argwhere((decode(result.data) != decode(source)).any(axis=-1))
    assert diff.size and (diff // 8 == [25, 37]).all()


def test_a_standard_coded_source_keeps_the_standard_tables_and_an_optimised_one_stays_optimised(photo):
    def tables(data: bytes) -> list[bytes]:
        return [raw for m, raw in segments(data) if m == 0xC4]

    (r0, c0, r1, c1), changed = BOX, np.zeros(photo.shape[:2], dtype=bool)
    changed[r0:r1, c0:c1] = True
    standard = pillow_jpeg(photo, quality=90)  # libjpeg's defaults: the tables of T.81 Annex K
    optimised = pillow_jpeg(photo, quality=90, optimize=True)
    assert tables(standard) != tables(optimised)
    for source in (standard, optimised):
        new = decode(source).copy()
        new[changed] = 255 - new[changed]
        patched = patch_jpeg_with_stats(source, new, changed).data
        if source is standard:
            assert tables(patched) == tables(standard)
            assert abs(len(patched) - len(source)) < 0.02 * len(source)
        else:
            assert tables(patched) != tables(standard) and len(patched) < len(standard)


def test_the_upsampling_ring_is_needed_for_subsampled_chroma(photo):
    """The footprint is not padding: with 4:2:0, pixels just outside the re-encoded MCUs do change."""
    source = make_pillow_case(photo, "baseline-420-q75")
    layout = inspect_jpeg(source)
    new, changed = decode(source).copy(), np.zeros(photo.shape[:2], dtype=bool)
    y0, y1, x0, x1 = BOX
    new[y0:y1, x0:x1] = 255 - new[y0:y1, x0:x1]
    changed[y0:y1, x0:x1] = True
    moved = (decode(patch_jpeg(source, new, changed)) != decode(source)).any(axis=-1)
    mcus = np.zeros_like(changed)
    mcus[y0 // 16 * 16 : -(-y1 // 16) * 16, x0 // 16 * 16 : -(-x1 // 16) * 16] = True
    assert (moved & ~mcus).any()
    assert not (moved & ~footprint(layout, changed)).any()


def test_markers_survive_byte_for_byte(photo, tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Test camera"
    exif[0x0112] = 1
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    icc = b"\x00\x02\x00\x00mntrRGB XYZ " + bytes(np.random.default_rng(1).integers(0, 256, 150_000, dtype=np.uint8))
    source = pillow_jpeg(photo, quality=90, exif=exif.tobytes(), xmp=xmp, icc_profile=icc, comment=b"a comment")
    iptc = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x0b\x1c\x02\x05\x00\x07Testing\x00"
    adobe = b"Adobe\x00\x64\x00\x00\x00\x00\x01"
    extra = [
        b"\xff\xed" + struct.pack(">H", len(iptc) + 2) + iptc,
        b"\xff\xee" + struct.pack(">H", len(adobe) + 2) + adobe,
    ]
    dqt = 2 + sum(len(raw) for _, raw in itertools.takewhile(lambda s: s[0] != 0xDB, segments(source)))
    source = source[:dqt] + b"".join(extra) + source[dqt:] + b"trailing bytes after EOI"
    kinds = [raw[1] for raw in app_and_com(source)]
    assert kinds.count(0xE2) == 3 and {0xE0, 0xE1, 0xED, 0xEE, 0xFE} <= set(kinds)  # ICC in three chunks

    new, changed = blur_box(decode(source), BOX)
    out = patch_jpeg(source, new, changed)
    assert app_and_com(out) == app_and_com(source)
    assert out.endswith(b"\xff\xd9trailing bytes after EOI")
    check_patch(source, new, changed, tmp_path)
    reopened = Image.open(io.BytesIO(out))
    assert reopened.info["icc_profile"] == icc
    assert reopened.getexif()[0x010F] == "Test camera"


def test_more_segments_than_jpeglib_reads(photo, tmp_path):
    """jpeglib's reader gives up past 50 APPn/COM segments; the patch must not inherit that limit."""
    plain = pillow_jpeg(photo, quality=85)
    comments = b"".join(b"\xff\xfe" + struct.pack(">H", 6) + b"c%03d" % i for i in range(60))
    source = plain[:2] + comments + plain[2:]
    new, changed = blur_box(decode(source), BOX)
    check_patch(source, new, changed, tmp_path)
    assert len(app_and_com(patch_jpeg(source, new, changed))) == 61  # JFIF + 60 comments


@pytest.mark.parametrize("quality", [50, 75, 90, 95, 100])
def test_estimate_quality_recovers_pillow_quality(photo, quality):
    assert abs(estimate_quality(pillow_jpeg(photo, quality=quality)) - quality) <= 1
    assert abs(estimate_quality(pillow_jpeg(photo[:, :, 1].copy(), quality=quality)) - quality) <= 1
    assert inspect_jpeg(pillow_jpeg(photo, quality=quality)).quality == estimate_quality(
        pillow_jpeg(photo, quality=quality)
    )


def test_estimate_quality_across_the_range(photo):
    for quality in range(5, 101, 5):
        assert estimate_quality(pillow_jpeg(photo[:64, :64], quality=quality)) == quality


def test_layout_describes_the_file(photo):
    layout = inspect_jpeg(make_pillow_case(photo, "progressive-420-q90"))
    assert (layout.width, layout.height, layout.components) == (501, 389, 3)
    assert layout.sampling == ((2, 2), (1, 1), (1, 1)) and layout.mcu == (16, 16)
    assert layout.progressive and layout.quality == 90 and layout.exact_possible and layout.reason is None
    grey = inspect_jpeg(make_pillow_case(photo, "grey-q85"))
    assert grey.components == 1 and grey.mcu == (8, 8) and not grey.progressive
    assert inspect_jpeg(pillow_jpeg(photo, subsampling="4:2:2")).mcu == (8, 16)


def test_sequential_arithmetic_coding_is_patched_and_stays_arithmetic(photo, tmp_path):
    source = jpeglib_jpeg(tmp_path, photo, [[2, 2], [1, 1], [1, 1]], qt=85, flags=["+ARITH_CODE"])
    assert sof_marker(source) == 0xC9 and inspect_jpeg(source).arithmetic
    new, changed = blur_box(decode(source), BOX)
    out = patch_jpeg(source, new, changed)
    assert sof_marker(out) == 0xC9
    fp = footprint(inspect_jpeg(source), changed)
    assert np.array_equal(decode(out)[~fp], decode(source)[~fp])


def with_sof(data: bytes, marker: int, precision: int = 8) -> bytes:
    """The same file with its frame header relabelled: for kinds of JPEG no encoder here can write."""
    at = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    return data[:at] + bytes([0xFF, marker]) + data[at + 2 : at + 4] + bytes([precision]) + data[at + 5 :]


def refusals(photo: np.ndarray, tmp: Path) -> dict[str, tuple[bytes, str]]:
    plain = pillow_jpeg(photo, quality=80)
    cmyk = io.BytesIO()
    Image.fromarray(photo).convert("CMYK").save(cmyk, "JPEG", quality=80)
    rotated = Image.Exif()
    rotated[0x0112] = 6
    return {
        "cmyk": (cmyk.getvalue(), "CMYK"),
        "progressive arithmetic": (
            jpeglib_jpeg(tmp, photo, [[2, 2], [1, 1], [1, 1]], qt=80, flags=["+ARITH_CODE", "+PROGRESSIVE_MODE"]),
            "arithmetic",
        ),
        "12-bit (relabelled header)": (with_sof(plain, 0xC1, precision=12), "12-bit"),
        "lossless (relabelled header)": (with_sof(plain, 0xC3), "lossless"),
        "hierarchical (relabelled header)": (with_sof(plain, 0xC5), "hierarchical"),
        "exif orientation 6": (pillow_jpeg(photo, quality=80, exif=rotated.tobytes()), "orientation 6"),
    }


def test_refusals_say_why(photo, tmp_path):
    for name, (data, words) in refusals(photo, tmp_path).items():
        layout = inspect_jpeg(data)
        assert not layout.exact_possible, name
        assert words in layout.reason, (name, layout.reason)
        with pytest.raises(ValueError, match=words):
            patch_jpeg(
                data, np.zeros((layout.height, layout.width, 3), np.uint8), np.ones((layout.height, layout.width), bool)
            )
        assert 1 <= layout.quality <= 100


def test_stored_orientation_lifts_only_the_orientation_refusal(photo, tmp_path):
    rotated = Image.Exif()
    rotated[0x0112] = 6
    source = pillow_jpeg(photo, quality=80, exif=rotated.tobytes())
    assert inspect_jpeg(source).orientation == 6
    new, changed = blur_box(decode(source), BOX)  # Pillow decodes in stored orientation
    out = patch_jpeg(source, new, changed, stored_orientation=True)
    fp = footprint(inspect_jpeg(source), changed)
    assert np.array_equal(decode(out)[~fp], decode(source)[~fp])
    assert app_and_com(out) == app_and_com(source)
    cmyk = io.BytesIO()
    Image.fromarray(photo).convert("CMYK").save(cmyk, "JPEG")
    with pytest.raises(ValueError, match="CMYK"):
        patch_jpeg(cmyk.getvalue(), photo, np.ones(photo.shape[:2], bool), stored_orientation=True)


def test_bad_arguments_are_rejected(photo):
    source = make_pillow_case(photo, "baseline-420-q75")
    changed = np.ones(photo.shape[:2], bool)
    with pytest.raises(ValueError, match="changed mask"):
        patch_jpeg(source, photo, changed[:-1])
    with pytest.raises(ValueError, match="uint8"):
        patch_jpeg(source, photo.astype(np.float32), changed)
    with pytest.raises(ValueError, match="pixels are"):
        patch_jpeg(source, photo[:-1], changed)
    with pytest.raises(ValueError, match="not a JPEG"):
        inspect_jpeg(b"\x89PNG\r\n")


def test_grey_source_accepts_rgb_pixels(photo, tmp_path):
    source = make_pillow_case(photo, "grey-q85")
    new, changed = blur_box(np.repeat(decode(source)[:, :, None], 3, axis=2), BOX)
    out = patch_jpeg(source, new, changed)
    fp = footprint(inspect_jpeg(source), changed)
    assert decode(out).ndim == 2
    assert np.array_equal(decode(out)[~fp], decode(source)[~fp])


# --- the shared real-world photos ---------------------------------------------------------------------


def centre_box(height: int, width: int) -> tuple[int, int, int, int]:
    """About 10% of the photo, off the MCU grid: the size of a face in a group photo."""
    y0, x0 = height // 3 + 3, width // 3 + 5
    return y0, y0 + int(height * 0.3), x0, x0 + int(width * 0.33)


@pytest.mark.shared
@pytest.mark.parametrize("name", SHARED_PHOTOS + [f"pairs/{p}" for p in SHARED_PAIRS])
def test_shared_real_photos(name, tmp_path):
    if name.startswith("pairs/"):
        path = shared_path("data/eval-dev/london-pairs", name.removeprefix("pairs/"))
    else:
        path = shared_path(SHARED_WHOLE, name)
    source = path.read_bytes()
    old = decode(source)
    new, changed = blur_box(old, centre_box(*old.shape[:2]))
    check_patch(source, new, changed, tmp_path)
