"""Which detected faces to restore: all of them, the largest or the most central, above a minimum size.

Every detected face gets a report, chosen or not, so that a user can see why a face was left alone.
"""

from __future__ import annotations

from facerestore_cli.face.detect import Face
from facerestore_cli.report import FaceReport

__all__ = ["FACE_CHOICES", "select_faces"]

FACE_CHOICES = ("all", "largest", "center")


def select_faces(
    faces: list[Face], shape: tuple[int, int], *, which: str = "all", min_face: int = 0
) -> tuple[list[tuple[Face, FaceReport]], list[FaceReport]]:
    """(faces to restore with their reports, every face's report in detection order).

    ``shape`` is the photo's (height, width), for ``center``. A skipped face's report says why.
    """
    if which not in FACE_CHOICES:
        raise ValueError(f"--faces must be one of {', '.join(FACE_CHOICES)}, not {which!r}")
    reports = [
        FaceReport(
            index=i,
            box=[round(float(v), 1) for v in f.box],
            score=round(float(f.score), 4),
            size=round(float(f.size), 1),
        )
        for i, f in enumerate(faces)
    ]
    keep = []
    for f, r in zip(faces, reports, strict=True):
        if f.size < min_face:
            r.skipped = f"smaller than --min-face ({f.size:.0f} px < {min_face} px)"
        else:
            keep.append((f, r))
    if which != "all" and len(keep) > 1:
        if which == "largest":
            chosen = max(keep, key=lambda fr: fr[0].size)
        else:
            cy, cx = shape[0] / 2, shape[1] / 2
            chosen = min(keep, key=lambda fr: (fr[0].center[0] - cx) ** 2 + (fr[0].center[1] - cy) ** 2)
        for f, r in keep:
            if f is not chosen[0]:
                r.skipped = f"not the {which} face (--faces {which})"
        keep = [chosen]
    return keep, reports
