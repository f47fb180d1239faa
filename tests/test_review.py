"""The ``--review`` page and the ``--compare`` image.

The page is checked twice: as HTML text (structure, escaping, sizes; fast, always run) and in a real
headless Chromium (no console errors, no requests, the slider and filter really work). The browser test
needs Playwright for Python and a system Chromium (``apt-get install chromium``; Playwright's own browser
download is never used) and is skipped with the reason when either is missing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_path

from facerestore_cli.report import FaceReport, ImageReport
from facerestore_cli.review import ReviewFace, ReviewPage, _divider_width, _label_layout, side_by_side

#: A name no file system forbids on POSIX, with everything that breaks naive HTML: markup, an ampersand,
#: both quotes, and a byte that is not UTF-8 (as os.fsdecode hands it over: a surrogate escape).
NASTY = "bad <script>alert(1)<\\script> & \"double\" 'single' \udcff.jpg"

#: Upper bounds of the page's size, stated here and checked below: the fixed part (style, script,
#: header: about 8 kB) and each photo in the worst case (pure noise, which JPEG cannot compress: about
#: 115 kB with three restored faces). Real photos cost far less: about 25 kB for the thumbnail and 18 kB
#: for each restored face's before and after, base64 included; the browser test checks a real album.
PAGE_BASE_BYTES = 12_000
WORST_PHOTO_BYTES = 160_000
REAL_PHOTO_BYTES = 70_000  # a real photo with one restored and one skipped face


class _Dom(HTMLParser):
    """Just enough of a DOM for the assertions: elements with attributes, text per element id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("script", "style"):
            self._in = tag
            (self.scripts if tag == "script" else self.styles).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in == "style":
            self.styles[-1] += data
        else:
            self.text.append(data)

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            a for t, a in self.elements if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def _parse(html_text: str) -> _Dom:
    dom = _Dom()
    dom.feed(html_text)
    dom.close()
    return dom


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth photo-like image (gradients and blobs), so JPEG sizes resemble real photos'."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 200 + 30, y / h * 180 + 40, (x + y) / (w + h) * 150 + 60], axis=2)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.3) * min(h, w)
        img += rng.uniform(-60, 60, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _restored_report(name: str, faces_found: int = 2, faces_restored: int = 1) -> dict:
    faces = [FaceReport(index=i, box=[0, 0, 10, 10], score=0.9, size=100.0) for i in range(faces_found)]
    for f in faces[:faces_restored]:
        f.restored, f.person = True, "Alice"
    for f in faces[faces_restored:]:
        f.skipped = "too small"
    return ImageReport(
        input=f"/album/{name}",
        output=f"/album/restored/{name}",
        status="restored",
        faces_found=faces_found,
        faces_restored=faces_restored,
        faces_skipped=faces_found - faces_restored,
        faces=faces,
        seconds=2.5,
    ).to_json()


def _three_photo_page(path: Path) -> ReviewPage:
    page = ReviewPage(path, title="Summer <2024> & co")
    photo = _picture(1200, 1800, 1)
    crop = _picture(512, 512, 2)
    faces = [
        ReviewFace(crop, 255 - crop, 0, person="Alice <admin>", strength=0.7, degradation={"blur": 0.4, "jpeg": 0.2}),
        ReviewFace(crop[:64, :64], None, 1, skipped="too small (24 px)"),
    ]
    page.add(_restored_report(NASTY), photo, faces)
    page.add(
        ImageReport(input="/album/sea.jpg", output="/album/restored/sea.jpg", status="no-faces").to_json(),
        _picture(600, 800, 3),
        [],
    )
    failed = ImageReport(
        input="/album/broken.jpg",
        status="failed",
        reason="truncated",
        error="JPEG data ends early </pre></script><script>alert(2)</script>",
    )
    page.add(failed.to_json(), None, [])
    return page


def _decode_uri(uri: str) -> np.ndarray:
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    img = cv2.imdecode(np.frombuffer(base64.b64decode(uri[len(prefix) :]), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


# --------------------------------------------------------------------------------------------------
# the page as HTML


def test_page_structure_counts_failures_and_escaping(tmp_path: Path) -> None:
    out = _three_photo_page(tmp_path / "review.html").write()
    raw = out.read_bytes()
    text = raw.decode("utf-8")  # strict: the non-UTF-8 byte must have become U+FFFD, not a lone surrogate
    dom = _parse(text)

    found = dict(re.findall(r'data-total="([\w-]+)"><dt>[^<]*</dt><dd>([^<]*)</dd>', text))
    assert found == {
        "photos": "3", "restored": "1", "unchanged": "0", "no-faces": "1", "exists": "0", "failed": "1",
        "faces": "1 / 2",
    }  # fmt: skip

    cards = dom.all("article")
    assert sorted(c["data-status"] for c in cards) == ["failed", "no-faces", "restored"]
    assert {r["value"] for r in dom.all("input", type="radio")} >= {"all", "restored", "failed"}
    failed_id = next(c["id"] for c in cards if c["data-status"] == "failed")
    assert dom.all("a", href=f"#{failed_id}"), "the failures list links to the failed photo's card"
    body = "".join(dom.text)
    assert "Failed:" in body and "truncated" in body
    assert "JPEG data ends early </pre></script><script>alert(2)</script>" in body  # shown, as text

    # escaping: one script element (the page's own), the names as text, attributes unbroken
    assert len(dom.all("script")) == 1
    shown = NASTY.replace("\udcff", "\ufffd")
    assert shown in body
    assert "Alice <admin>" in body and "Summer <2024> & co" in body
    assert "<script>alert" not in text and "\udcff" not in text
    assert any(a.get("title") == "/album/" + shown for _, a in dom.elements)

    # offline: no external reference of any kind, and a CSP that pins the page's own script and style
    assert "http://" not in text and "https://" not in text
    for _, attrs in dom.elements:
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), attrs
    assert "url(" not in dom.styles[0] and "@import" not in dom.styles[0]
    csp = dom.all("meta", http_equiv="Content-Security-Policy")[0]["content"]
    for source in (dom.scripts[0], dom.styles[0]):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp

    # accessibility: every image has alt text, every slider a label
    imgs = dom.all("img")
    assert imgs and all(i.get("alt") for i in imgs)
    ranges = dom.all("input", type="range")
    assert len(ranges) == 1, "the skipped face has no slider"
    labels = {a.get("for") for a in dom.all("label")}
    assert all(r["id"] in labels for r in ranges)
    assert dom.all("html")[0]["lang"] == "en"


def test_page_images_are_small_and_sized(tmp_path: Path) -> None:
    out = _three_photo_page(tmp_path / "review.html").write()
    dom = _parse(out.read_text("utf-8"))
    imgs = dom.all("img")
    # thumbnails: the 1800x1200 photo and the 800x600 one; faces: before+after of face 0, before of face 1
    assert len(imgs) == 5
    for attrs in imgs:
        img = _decode_uri(attrs["src"])
        assert (img.shape[1], img.shape[0]) == (int(attrs["width"]), int(attrs["height"]))
        limit = 320 if "thumb" in attrs.get("class", "") else 160
        assert max(img.shape[:2]) <= limit
    thumbs = [a for a in imgs if "thumb" in a.get("class", "")]
    assert sorted((int(a["width"]), int(a["height"])) for a in thumbs) == [(320, 213), (320, 240)]
    small = [a for a in imgs if a["alt"].endswith("not restored")]
    assert [(a["width"], a["height"]) for a in small] == [("64", "64")], "small crops are never enlarged"


def test_page_size_bound_for_n_photos(tmp_path: Path) -> None:
    """Pure-noise photos and faces (JPEG's worst case) stay under the stated per-photo bound."""
    n = 12
    rng = np.random.default_rng(0)
    page = ReviewPage(tmp_path / "review.html")
    for i in range(n):
        photo = rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
        faces = [ReviewFace(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), None, k) for k in range(3)]
        for f in faces:
            f.after = 255 - f.before
        page.add(_restored_report(f"noise{i:02d}.jpg", 3, 3), photo, faces)
    size = page.write().stat().st_size
    assert size < PAGE_BASE_BYTES + n * WORST_PHOTO_BYTES, size
    empty = ReviewPage(tmp_path / "empty.html").write().stat().st_size
    assert empty < PAGE_BASE_BYTES, empty


def test_page_add_is_thread_safe_and_write_repeatable(tmp_path: Path) -> None:
    page = ReviewPage(tmp_path / "review.html")
    crop = _picture(128, 128, 5)

    def worker(k: int) -> None:
        for i in range(5):
            page.add(_restored_report(f"w{k}-{i}.jpg"), _picture(90, 120, k), [ReviewFace(crop, crop, 0)])
            if i == 2:
                page.write()  # an album's periodic write, racing the other workers

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(page) == 30
    text = page.write().read_text("utf-8")
    dom = _parse(text)
    ids = [c["id"] for c in dom.all("article")]
    assert len(ids) == len(set(ids)) == 30
    names = re.findall(r'<h3 class="name"[^>]*>([^<]*)</h3>', text)
    assert len(names) == 30 and names == sorted(names, key=str.casefold), "cards are sorted by file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["review.html"], "no temporary files left behind"


def test_page_rejects_nothing_odd_in_reports(tmp_path: Path) -> None:
    """Reports from older versions or hand-edited JSON: missing keys and odd types still give a page."""
    page = ReviewPage(tmp_path / "r.html")
    page.add({"input": b"raw\xffbytes.png", "status": "weird", "faces_found": "x"}, None, [])
    page.add({}, np.zeros((10, 10), np.uint8), [ReviewFace(np.zeros((8, 8, 3), np.uint8), None, 0)])
    text = page.write().read_text("utf-8")
    assert "raw\ufffdbytes.png" in text
    assert text.count('data-status="failed"') == 2  # unknown statuses count as failures, as in Summary


# --------------------------------------------------------------------------------------------------
# side_by_side


@pytest.mark.parametrize(("h", "w"), [(240, 200), (1200, 1600)])
def test_side_by_side_shape_divider_and_labels(h: int, w: int) -> None:
    before = np.full((h, w, 3), 128, np.uint8)
    after = np.full((h, w, 3), 140, np.uint8)
    d = _divider_width(h, w)
    plain = side_by_side(before, after, labels=("", ""))
    out = side_by_side(before, after)
    assert out.shape == (h, 2 * w + d, 3) and out.dtype == np.uint8
    assert plain.shape == out.shape

    # the divider: a white bar with dark edges, the full height
    bar = out[:, w : w + d]
    assert (bar[:, 0] == 32).all() and (bar[:, -1] == 32).all() and (bar[:, 1:-1] == 255).all()
    assert np.array_equal(plain[:, :w], before) and np.array_equal(plain[:, w + d :], after)

    # labels: changed pixels only inside the two label boxes, and plenty of them, white and black
    changed = (out != plain).any(axis=2)
    allowed = np.zeros_like(changed)
    for text, x_off in (("before", 0), ("after", w + d)):
        x0, y0, x1, y1 = _label_layout(text, h, w).box
        assert x1 - x0 < 0.6 * w and y1 - y0 < 0.15 * h, "a label, not a banner"
        region = changed[y0:y1, x0 + x_off : x1 + x_off]
        assert region.mean() > 0.15, f"{text!r} label is missing or faint"
        spot = out[y0:y1, x0 + x_off : x1 + x_off]
        assert (spot >= 230).all(axis=2).sum() > 20 and (spot <= 30).all(axis=2).sum() > 20, "white text, dark outline"
        allowed[y0:y1, x0 + x_off : x1 + x_off] = True
    assert not changed[~allowed].any()
    assert out is not before and np.array_equal(before, np.full((h, w, 3), 128, np.uint8)), "inputs untouched"


def test_side_by_side_scales_labels_and_matches_sizes() -> None:
    small = _label_layout("before", 200, 300)
    large = _label_layout("before", 2000, 3000)
    assert (large.box[3] - large.box[1]) > 5 * (small.box[3] - small.box[1]) / 2
    narrow = _label_layout("a much longer label than fits", 400, 120)
    assert narrow.box[2] <= 120
    before = _picture(300, 200, 7)
    out = side_by_side(before, _picture(150, 100, 8), labels=("input", "restored"))
    assert out.shape == (300, 400 + _divider_width(300, 200), 3)
    grey = side_by_side(before[:, :, 0], before)  # a grey "before" is replicated to RGB
    assert grey.shape == out.shape


# --------------------------------------------------------------------------------------------------
# a real browser

WHOLE = ("data", "eval-dev", "realworld", "whole")
PHOTOS = ("serengil_couple.jpg", "tencentarc_00.jpg", "xpixelgroup_Queen.jpeg", "xpixelgroup_01.jpg")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on PATH: install one (Debian: apt-get install -y chromium) to test the page in a browser")


def _real_page(path: Path) -> ReviewPage:
    """Real photos; their 'faces' are fixed boxes and the 'restoration' an unsharp mask (no model)."""
    page = ReviewPage(path, title="Real photos")
    for name in PHOTOS:
        bgr = cv2.imread(str(shared_path(*WHOLE, name)), cv2.IMREAD_COLOR)
        assert bgr is not None, name
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        s = min(h, w) // 3
        crop = rgb[h // 2 - s // 2 : h // 2 + s // 2, w // 2 - s // 2 : w // 2 + s // 2]
        sharp = cv2.addWeighted(crop, 1.8, cv2.GaussianBlur(crop, (0, 0), 3), -0.8, 0)
        faces = [
            ReviewFace(crop, sharp, 0, person="Alice", strength=0.7, degradation={"blur": 0.4, "score": 0.5}),
            ReviewFace(rgb[: s // 2, : s // 2], None, 1, skipped="too small (30 px)"),
        ]
        page.add(_restored_report(name), rgb, faces)
    failed = ImageReport(input=f"/album/{NASTY}", status="failed", reason="unreadable", error="<b>not</b> a photo")
    page.add(failed.to_json(), None, [])
    return page


@pytest.mark.shared
@pytest.mark.slow
def test_page_in_headless_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")
    executable = _chromium()
    out = _real_page(tmp_path / "review.html").write()
    size = out.stat().st_size
    print(f"review page of {len(PHOTOS)} real photos + 1 failure: {size / 1024:.0f} KiB")
    assert size < PAGE_BASE_BYTES + len(PHOTOS) * REAL_PHOTO_BYTES

    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.goto(out.as_uri(), wait_until="load")

            assert page.evaluate("document.querySelectorAll('script').length") == 1
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert page.evaluate("document.documentElement.classList.contains('js')")

            face = page.locator(".face:has(.reveal)").first
            after, reveal = face.locator(".after"), face.locator(".reveal")
            clip = "e => getComputedStyle(e).clipPath"
            assert after.evaluate(clip) == "inset(0px 50% 0px 0px)"
            reveal.fill("80")
            assert after.evaluate(clip) == "inset(0px 20% 0px 0px)"
            reveal.press("ArrowRight")
            assert reveal.input_value() == "81" and after.evaluate(clip) == "inset(0px 19% 0px 0px)"
            button = face.locator(".toggle")
            button.click()
            assert reveal.input_value() == "100" and button.inner_text() == "Show before"
            shown_after = face.locator(".compare").screenshot()
            button.press("Enter")  # the keyboard toggle
            assert reveal.input_value() == "0" and button.inner_text() == "Show after"
            assert face.locator(".compare").screenshot() != shown_after
            reveal.fill("50")

            page.get_by_label("Failed (1)").check()
            assert page.locator("article.card:visible").count() == 1
            assert page.locator("#shown").inner_text() == f"Showing 1 of {len(PHOTOS) + 1} photos"
            page.get_by_label(f"All ({len(PHOTOS) + 1})").check()
            assert page.locator("article.card:visible").count() == len(PHOTOS) + 1
            page.locator("a.jump").first.click()
            failed_id = page.locator("article[data-status=failed]").get_attribute("id")
            assert page.evaluate("location.hash") == f"#{failed_id}"

            page.evaluate("window.scrollTo(0, 0)")
            shots = {}
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                png = page.screenshot(full_page=True)
                (tmp_path / f"review-{scheme}.png").write_bytes(png)
                shots[scheme] = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        finally:
            browser.close()

    assert problems == []
    assert all(u.startswith(("file:", "data:")) for u in requests), [u for u in requests if not u.startswith("data:")]
    light, dark = shots["light"], shots["dark"]
    assert light.shape[0] > 900 and light.shape[1] == 1280, "a full-page screenshot"
    assert light.std() > 30 and dark.std() > 30, "the screenshot is not blank"
    assert dark.mean() < light.mean() - 60, "prefers-color-scheme: dark gives a dark page"
    print(f"screenshots: {tmp_path / 'review-light.png'} {tmp_path / 'review-dark.png'}")
