"""``--review FILE.html`` and ``--compare``: let people see what was done to an album before trusting it.

The review page is one self-contained HTML file (images inline as JPEG data URIs, no external scripts,
styles or fonts) so it can be mailed, archived next to the album or opened on a machine without network.
A Content-Security-Policy with hashes of the page's own script and style makes that a guarantee rather
than a habit: the browser refuses to fetch anything, and a file name that somehow slipped past escaping
still could not run a script.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facerestore_cli.imagefile import atomic_write, rgb8
from facerestore_cli.report import OK_STATUSES

__all__ = ["ReviewFace", "ReviewPage", "side_by_side"]

#: JPEG quality of every image on the page: faces stay judgeable while a photo costs tens of kB.
JPEG_QUALITY = 85

# C0/C1 controls (but tab and newline) are invalid in HTML text and can garble a terminal-copied name.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


# --------------------------------------------------------------------------------------------------
# images


def _fit(img: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longest side is at most ``max_side``; never enlarge (that only adds bytes)."""
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"cannot show an empty {img.shape} image")
    scale = max_side / max(h, w)
    if scale >= 1:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _jpeg_uri(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV only fails here for empty or absurd arrays
        raise ValueError(f"could not encode a {img.shape} image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


@dataclass(frozen=True)
class _Image:
    uri: str
    width: int
    height: int


def _encode(img: np.ndarray, max_side: int) -> _Image:
    small = _fit(rgb8(img), max_side)
    return _Image(_jpeg_uri(np.ascontiguousarray(small)), small.shape[1], small.shape[0])


# --------------------------------------------------------------------------------------------------
# text


def _clean(value: object) -> str:
    """Any value as displayable text: non-UTF-8 bytes of a file name (surrogate escapes) become U+FFFD."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    else:
        text = str(value)
        try:
            # surrogateescape reassembles the original bytes, so valid UTF-8 split by os.fsdecode survives
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # lone surrogates that are not escapes (from JSON, say)
            text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub("\ufffd", text)


def _esc(value: object) -> str:
    return html.escape(_clean(value), quote=True)


def _basename(path: str) -> str:
    # this system's separators only: on POSIX a backslash is part of a file name, not a folder break
    return Path(path).name or path


def _num(value: object) -> str:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _esc(value)
    return f"{v:.2f}" if math.isfinite(v) else "n/a"


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


# --------------------------------------------------------------------------------------------------
# the page


@dataclass
class ReviewFace:
    """One face as the review page shows it (the pipeline fills this from its aligned crops)."""

    before: np.ndarray
    after: np.ndarray | None
    index: int
    person: str | None = None
    strength: float | None = None
    degradation: dict[str, float] | None = None
    skipped: str | None = None


#: status -> (group used by the filter, symbol, label). The symbol keeps statuses apart without colour.
_STATUS = {
    "restored": ("restored", "✓", "restored"),
    "unchanged": ("unchanged", "=", "unchanged: no face needed restoring"),
    "no-faces": ("no-faces", "○", "no faces"),
    "exists": ("exists", "↷", "skipped: output exists"),
}
_FAILED = ("failed", "✕", "failed")


@dataclass
class _Entry:
    seq: int
    key: str
    group: str
    name: str
    reason: str
    faces_found: int
    faces_restored: int
    card: str = field(repr=False)


class ReviewPage:
    """The ``--review`` page, built up photo by photo.

    :meth:`add` is called from the worker threads as each photo finishes. It shrinks and encodes the
    images at once and keeps only the rendered card (about 25 kB a photo plus 18 kB a restored face),
    so a 2,000-photo album holds about 100 MB rather than 2,000 full-size photos. :meth:`write` only
    joins the cards and can therefore run every few photos, which is what gives an interrupted album a
    page that covers everything finished so far.
    """

    def __init__(
        self, path: Path, *, title: str = "facerestore review", thumb_size: int = 320, face_size: int = 160
    ) -> None:
        if thumb_size < 16 or face_size < 16:
            raise ValueError("thumb_size and face_size must be at least 16 pixels")
        self.path = Path(path)
        self.title = title
        self.thumb_size = thumb_size
        self.face_size = face_size
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._next = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def add(self, report: dict[str, Any], thumbnail: np.ndarray | None, faces: list[ReviewFace]) -> None:
        """Record one photo; ``report`` is an :meth:`ImageReport.to_json` dict, ``thumbnail`` the result."""
        with self._lock:
            seq = self._next
            self._next += 1
        status = _clean(report.get("status") or "failed")
        group, _, _ = _STATUS.get(status, _FAILED)
        source = _clean(report.get("input"))
        restored = _int(report.get("faces_restored")) if status in OK_STATUSES else 0
        thumb = _encode(thumbnail, self.thumb_size) if thumbnail is not None else None
        card = self._card(seq, report, status, thumb, faces)
        entry = _Entry(
            seq=seq,
            key=source.casefold(),
            group=group,
            name=_basename(source),
            reason=_clean(report.get("reason") or report.get("error") or ""),
            faces_found=_int(report.get("faces_found")),
            faces_restored=restored,
            card=card,
        )
        with self._lock:
            self._entries.append(entry)

    def write(self) -> Path:
        """Publish the page as it stands (atomically: a reader never sees half a page)."""
        with self._lock:
            entries = sorted(self._entries, key=lambda e: (e.key, e.seq))
        page = _render_page(self.title, entries, self.face_size)
        # concurrent writes are serialised so an older snapshot never replaces a newer one
        with self._write_lock, atomic_write(self.path) as tmp:
            tmp.write_bytes(page.encode("utf-8"))
        return self.path

    # ---------------------------------------------------------------------------------------------

    def _card(
        self, seq: int, report: dict[str, Any], status: str, thumb: _Image | None, faces: list[ReviewFace]
    ) -> str:
        group, symbol, label = _STATUS.get(status, _FAILED)
        source = _clean(report.get("input"))
        name = _esc(_basename(source))
        pid = f"p{seq}"
        found, restored = _int(report.get("faces_found")), _int(report.get("faces_restored"))
        if thumb is not None:
            alt = f"{'Restored photo' if group == 'restored' else 'Photo'} {name}"
            media = (
                f'<img class="thumb" src="{thumb.uri}" width="{thumb.width}" height="{thumb.height}" '
                f'alt="{alt}" decoding="async">'
            )
        else:
            media = '<div class="thumb none" role="img" aria-label="No preview">no preview</div>'
        facts = [f'<span class="badge {group}">{symbol} {_esc(label if group != "failed" else status)}</span>']
        if found:
            facts.append(f"{restored} of {found} face{'s' if found != 1 else ''} restored")
        seconds = report.get("seconds")
        if isinstance(seconds, int | float) and seconds > 0:
            facts.append(f"{seconds:.1f} s")
        parts = [
            f'<article class="card" id="{pid}" data-status="{group}" aria-labelledby="{pid}-name">',
            media,
            '<div class="body">',
            f'<h3 class="name" id="{pid}-name" title="{_esc(source)}">{name}</h3>',
            f'<p class="facts">{" · ".join(facts)}</p>',
        ]
        output = report.get("output")
        if output and group != "failed":
            parts.append(f'<p class="output" title="{_esc(output)}">→ {_esc(_basename(_clean(output)))}</p>')
        if group == "failed" or report.get("error"):
            reason = _esc(report.get("reason") or "unknown reason")
            parts.append(f'<div class="failure"><p><strong>Failed:</strong> {reason}</p>')
            if report.get("error"):
                parts.append(f"<pre>{_esc(report['error'])}</pre>")
            parts.append("</div>")
        elif report.get("reason"):
            parts.append(f'<p class="reason">{_esc(report["reason"])}</p>')
        if faces:
            parts.append('<div class="faces">')
            parts.extend(self._face(f"{pid}-f{k}", name, face) for k, face in enumerate(faces))
            parts.append("</div>")
        parts.append("</div></article>")
        return "\n".join(parts)

    def _face(self, rid: str, photo_name: str, face: ReviewFace) -> str:
        before = rgb8(face.before)
        label = f"Face {int(face.index)}"
        b = _encode(before, self.face_size)
        rows: list[str] = []
        if face.after is not None and face.skipped is None:
            after = rgb8(face.after)
            if after.shape[:2] != before.shape[:2]:  # compare like with like, pixel for pixel
                after = cv2.resize(after, (before.shape[1], before.shape[0]), interpolation=cv2.INTER_AREA)
            a = _encode(after, self.face_size)
            view = (
                f'<div class="compare" title="Click to flip between before and after">'
                f'<img class="before" src="{b.uri}" width="{b.width}" height="{b.height}" '
                f'alt="{label} of {photo_name} before restoration">'
                f'<img class="after" src="{a.uri}" width="{a.width}" height="{a.height}" '
                f'alt="{label} of {photo_name} after restoration">'
                '<span class="divider" aria-hidden="true"></span>'
                '<span class="tag tag-after" aria-hidden="true">after</span>'
                '<span class="tag tag-before" aria-hidden="true">before</span></div>'
                f'<div class="controls"><label class="sr-only" for="{rid}">How much of the restored {label} '
                f"of {photo_name} to show</label>"
                f'<input type="range" class="reveal" id="{rid}" min="0" max="100" step="1" value="50" '
                f'aria-valuetext="50% restored">'
                '<button type="button" class="toggle">Show after</button></div>'
            )
        else:
            view = (
                f'<div class="compare single"><img class="before" src="{b.uri}" width="{b.width}" '
                f'height="{b.height}" alt="{label} of {photo_name}, not restored"></div>'
            )
            rows.append(f"<dt>Not restored</dt><dd>{_esc(face.skipped or 'skipped')}</dd>")
        if face.person or face.skipped is None:
            rows.append(f"<dt>Person</dt><dd>{_esc(face.person) if face.person else 'generic (no match)'}</dd>")
        if face.strength is not None:
            rows.append(f"<dt>Strength</dt><dd>{_num(face.strength)}</dd>")
        if face.degradation:
            # one unbreakable item per measure, so a narrow caption wraps between measures, not inside one
            items = " ".join(f'<span class="m">{_esc(k)}&nbsp;{_num(v)}</span>' for k, v in face.degradation.items())
            rows.append(f"<dt>Degraded</dt><dd>{items}</dd>")
        return f'<figure class="face">{view}<figcaption><b>{label}</b><dl>{"".join(rows)}</dl></figcaption></figure>'


_CSS = """
:root{color-scheme:light dark;--bg:#f6f6f4;--fg:#1d1d1f;--muted:#5f6368;--card:#fff;--line:#dcdcd8;
--ok:#1a7f37;--warn:#9a6700;--bad:#c62828;--badbg:#fdecea;--accent:#0b57d0}
@media (prefers-color-scheme:dark){:root{--bg:#161617;--fg:#ececec;--muted:#a0a4a8;--card:#222224;
--line:#3a3a3d;--ok:#4ac26b;--warn:#d4a72c;--bad:#ff7b72;--badbg:#3b1d1b;--accent:#8ab4f8}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.45;
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header,main,footer{max-width:1400px;margin:0 auto;padding:1rem 1.25rem}
h1{font-size:1.5rem;margin:.25rem 0 .75rem}h2{font-size:1.1rem;margin:1rem 0 .5rem}
a{color:var(--accent)}
[hidden]{display:none!important}
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
.totals{display:flex;flex-wrap:wrap;gap:.5rem;margin:0;padding:0}
.totals div{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.4rem .8rem;min-width:7rem}
.totals dt{font-size:.8rem;color:var(--muted)}.totals dd{margin:0;font-size:1.3rem;font-weight:600}
.totals .bad dd{color:var(--bad)}
.filter{border:0;padding:0;margin:1rem 0 0;display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}
.filter legend{float:left;margin-right:.5rem;color:var(--muted)}
.filter label{border:1px solid var(--line);border-radius:999px;padding:.2rem .75rem;cursor:pointer;
background:var(--card)}
.filter input{accent-color:var(--accent)}
.filter label:has(input:checked){border-color:var(--accent);outline:1px solid var(--accent)}
.failures{border-left:4px solid var(--bad);background:var(--badbg);padding:.5rem 1rem;border-radius:0 8px 8px 0;
margin-top:1rem}
.failures h2{margin:.25rem 0;color:var(--bad)}.failures ul{margin:.25rem 0;padding-left:1.25rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,340px),1fr));gap:1rem;
align-items:start}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden;
content-visibility:auto;contain-intrinsic-size:auto 480px}
.card[data-status=failed]{border:2px solid var(--bad)}
.card:target{outline:3px solid var(--accent)}
.thumb{display:block;width:100%;height:auto;max-height:24rem;object-fit:contain;background:var(--line)}
.thumb.none{aspect-ratio:4/1;display:grid;place-items:center;color:var(--muted)}
.body{padding:.6rem .8rem .8rem}
.name{font-size:1rem;margin:0;overflow-wrap:anywhere}
.facts,.output,.reason{margin:.2rem 0;color:var(--muted);font-size:.9rem;overflow-wrap:anywhere}
.badge{font-weight:600}.badge.restored{color:var(--ok)}.badge.exists,.badge.no-faces,.badge.unchanged{color:var(--warn)}
.badge.failed{color:var(--bad)}
.failure{background:var(--badbg);color:var(--fg);border-radius:6px;padding:.4rem .6rem;margin:.4rem 0}
.failure p{margin:0}.failure strong{color:var(--bad)}
.failure pre{margin:.3rem 0 0;white-space:pre-wrap;overflow-wrap:anywhere;max-height:12rem;overflow:auto;
font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.faces{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:.6rem}
.face{margin:0;width:min(100%,FACEpx)}
.compare{position:relative;line-height:0;border-radius:6px;overflow:hidden;cursor:pointer;user-select:none}
.compare.single{cursor:default;opacity:.8}
.compare img{display:block;width:100%;height:auto}
.compare .after{position:absolute;inset:0;clip-path:inset(0 50% 0 0)}
.divider{position:absolute;top:0;bottom:0;left:50%;width:2px;margin-left:-1px;background:#fff;
box-shadow:0 0 0 1px rgba(0,0,0,.45);pointer-events:none}
.tag{position:absolute;top:4px;font:600 10px/1 system-ui,sans-serif;color:#fff;background:rgba(0,0,0,.55);
padding:2px 4px;border-radius:3px;pointer-events:none}
.tag-after{left:4px}.tag-before{right:4px}
.controls{display:none;gap:.4rem;align-items:center;margin-top:.3rem}
.js .controls{display:flex}
.controls input{flex:1;min-width:0;accent-color:var(--accent)}
.controls button{font:inherit;font-size:.8rem;padding:.15rem .5rem;border-radius:5px;border:1px solid var(--line);
background:var(--bg);color:var(--fg);cursor:pointer;white-space:nowrap}
:focus-visible{outline:2px solid var(--accent);outline-offset:2px}
figcaption{font-size:.82rem;margin-top:.3rem}
figcaption dl{margin:.1rem 0 0;display:grid;grid-template-columns:auto 1fr;gap:0 .4rem}
figcaption dt{color:var(--muted)}figcaption dd{margin:0;overflow-wrap:anywhere}
.m{white-space:nowrap;margin-right:.35rem}
footer{color:var(--muted);font-size:.85rem}
"""

_JS = """
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  function setPos(face, value) {
    var v = Math.max(0, Math.min(100, Math.round(Number(value) || 0)));
    var range = face.querySelector(".reveal"), button = face.querySelector(".toggle");
    face.querySelector(".after").style.clipPath = "inset(0 " + (100 - v) + "% 0 0)";
    face.querySelector(".divider").style.left = v + "%";
    range.value = String(v);
    range.setAttribute("aria-valuetext", v + "% restored");
    button.textContent = v === 100 ? "Show before" : "Show after";
  }
  function flip(face) {
    setPos(face, Number(face.querySelector(".reveal").value) === 100 ? 0 : 100);
  }
  document.addEventListener("input", function (e) {
    if (e.target.classList && e.target.classList.contains("reveal")) setPos(e.target.closest(".face"), e.target.value);
  });
  document.addEventListener("click", function (e) {
    var t = e.target.closest ? e.target.closest(".toggle, .compare:not(.single)") : null;
    if (t) flip(t.closest(".face"));
  });
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  var status = document.getElementById("shown");
  function show(which) {
    var n = 0;
    cards.forEach(function (c) {
      c.hidden = !(which === "all" || c.dataset.status === which);
      if (!c.hidden) n += 1;
    });
    status.textContent = "Showing " + n + " of " + cards.length + " photos";
  }
  var filter = document.getElementById("filter");
  filter.hidden = false;
  filter.addEventListener("change", function (e) { show(e.target.value); });
  document.addEventListener("click", function (e) {
    var a = e.target.closest ? e.target.closest("a.jump") : null;
    if (!a) return;
    var card = document.getElementById(a.getAttribute("href").slice(1));
    if (card && card.hidden) { document.getElementById("filter-all").checked = true; show("all"); }
  });
  show("all");
})();
"""


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def _render_page(title: str, entries: list[_Entry], face_size: int) -> str:
    counts = {"restored": 0, "unchanged": 0, "no-faces": 0, "exists": 0, "failed": 0}
    for e in entries:
        counts[e.group] += 1
    found = sum(e.faces_found for e in entries)
    restored_faces = sum(e.faces_restored for e in entries)
    tiles = [
        ("photos", "Photos", len(entries)),
        ("restored", "Restored", counts["restored"]),
        ("unchanged", "Unchanged", counts["unchanged"]),
        ("no-faces", "No faces", counts["no-faces"]),
        ("exists", "Skipped", counts["exists"]),
        ("failed", "Failed", counts["failed"]),
    ]
    totals = "".join(
        f'<div class="{"bad" if key == "failed" and n else key}" data-total="{key}"><dt>{label}</dt><dd>{n}</dd></div>'
        for key, label, n in tiles
    )
    totals += f'<div data-total="faces"><dt>Faces restored / found</dt><dd>{restored_faces} / {found}</dd></div>'
    options = [("all", "All", len(entries)), ("restored", "Restored", counts["restored"])]
    shown = (("unchanged", "Unchanged"), ("no-faces", "No faces"), ("exists", "Skipped"))
    options += [(k, lbl, counts[k]) for k, lbl in shown if counts[k]]
    options.append(("failed", "Failed", counts["failed"]))
    radios = "".join(
        f'<label><input type="radio" name="filter" value="{k}" id="filter-{k}"{" checked" if k == "all" else ""}> '
        f"{lbl} ({n})</label>"
        for k, lbl, n in options
    )
    failures = ""
    failed = [e for e in entries if e.group == "failed"]
    if failed:
        items = "".join(
            f'<li><a class="jump" href="#p{e.seq}">{_esc(e.name)}</a>: {_esc(e.reason or "unknown reason")}</li>'
            for e in failed
        )
        failures = (
            f'<nav class="failures" id="failures" aria-labelledby="failures-title">'
            f'<h2 id="failures-title">✕ {len(failed)} failed photo{"s" if len(failed) != 1 else ""}</h2>'
            f"<ul>{items}</ul></nav>"
        )
    jump = ' · <a href="#failures">jump to failures</a>' if failed else ""
    cards = "\n".join(e.card for e in entries) or "<p>No photos yet.</p>"
    written = time.strftime("%Y-%m-%d %H:%M:%S")
    css = _CSS.replace("FACEpx", f"{face_size}px")
    csp = (
        f"default-src 'none'; img-src data:; style-src {_csp_hash(css)}; script-src {_csp_hash(_JS)}; "
        "base-uri 'none'; form-action 'none'"
    )
    t = _esc(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="generator" content="facerestore">
<link rel="icon" href="data:,">
<title>{t}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{t}</h1>
<dl class="totals" aria-label="Totals">{totals}</dl>
<fieldset class="filter" id="filter" hidden><legend>Show</legend>{radios}
<span id="shown" role="status" aria-live="polite"></span>{jump}</fieldset>
{failures}
</header>
<main>
<h2 class="sr-only">Photos</h2>
<div class="grid">
{cards}
</div>
</main>
<footer>Written by facerestore on {written}. Drag a face's slider or click it to compare before and after.</footer>
<script>{_JS}</script>
</body>
</html>
"""


# --------------------------------------------------------------------------------------------------
# --compare


@dataclass(frozen=True)
class _Label:
    text: np.ndarray  # HxW uint8 coverage of the letters, from the panel's top-left corner
    outline: np.ndarray  # the same, dilated: the dark halo that keeps the letters legible on any photo
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive): every pixel drawing may change


def _label_layout(text: str, panel_h: int, panel_w: int) -> _Label:
    """About 3% of the panel's height, never wider than 90% of it, in the top-left corner.

    The halo is a dilation of the rendered letters rather than a second, thicker ``putText``: OpenCV 5
    renders its fonts differently and no longer widens strokes much with ``thickness``, so a stroke
    outline that looked right with OpenCV 4 would all but vanish there.
    """
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(panel_h / 700, 0.5)
    (tw, _), _ = cv2.getTextSize(text, font, scale, 1)
    if tw > 0.9 * panel_w:
        scale *= 0.9 * panel_w / tw
    thick = max(1, round(scale * 2))
    radius = max(1, round(scale * 1.5))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    margin = max(4, round(panel_h * 0.02))
    origin = (margin + radius, margin + radius + th)
    # a canvas with room to spare around getTextSize's estimate, but never the size of a 40 Mpx scan
    ch = min(panel_h, origin[1] + base + th // 2 + 2 * radius + 4)
    cw = min(panel_w, origin[0] + tw + tw // 4 + 2 * radius + 8)
    letters = np.zeros((ch, cw), np.uint8)
    cv2.putText(letters, text, origin, font, scale, 255, thick, cv2.LINE_AA)
    outline = cv2.dilate(letters, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    ys, xs = np.nonzero(outline)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, 0, 0)
    return _Label(letters, outline, box)


def _put_label(img: np.ndarray, text: str) -> None:
    lay = _label_layout(text, *img.shape[:2])
    h, w = lay.text.shape
    region = img[:h, :w].astype(np.float32)
    halo = lay.outline[..., None].astype(np.float32) / 255
    letters = lay.text[..., None].astype(np.float32) / 255
    region *= 1 - halo  # black halo ...
    region += (255 - region) * letters  # ... under white letters
    img[:h, :w] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def _divider_width(height: int, width: int) -> int:
    """Width of :func:`side_by_side`'s divider: visible at thumbnail size, thin on a 40 Mpx scan."""
    return max(3, round(min(height, width) / 150))


def side_by_side(before: np.ndarray, after: np.ndarray, *, labels: tuple[str, str] = ("before", "after")) -> np.ndarray:
    """The ``--compare`` image: ``before | after``, labelled, split by a white bar with dark edges.

    Without labels a side-by-side of two near-identical photos is easy to read the wrong way round,
    which is exactly the mistake a reviewer must not make. ``after`` is resized to ``before``'s size if
    they differ (``--upscale`` callers should enlarge ``before`` themselves, as the pipeline does).
    """
    left = np.array(rgb8(before), copy=True)
    right = rgb8(after)
    h, w = left.shape[:2]
    if right.shape[:2] != (h, w):
        right = cv2.resize(right, (w, h), interpolation=cv2.INTER_AREA)
    right = np.array(right, copy=True)
    d = _divider_width(h, w)
    bar = np.full((h, d, 3), 255, np.uint8)
    bar[:, 0] = bar[:, -1] = 32  # dark edges keep a white bar visible against white backgrounds
    for panel, text in zip((left, right), labels, strict=True):
        if text:
            _put_label(panel, text)
    return np.concatenate([left, bar, right], axis=1)
