"""The face stages, in the order a photo meets them: detect → select → align → landmarks, and the
face embeddings (identity) that routing and references compare.

They work on one photo's pixels and know nothing of references, restorers or files.
"""

from __future__ import annotations

from facerestore_cli._lazy import lazy_exports

_D, _S, _A, _L, _I = (f"facerestore_cli.face.{m}" for m in ("detect", "select", "align", "landmarks", "identity"))
_EXPORTS = {
    "Face": _D, "Detector": _D, "DetectorUnavailable": _D, "create_detector": _D, "available_detectors": _D,
    "DETECTORS": _D,
    "select_faces": _S, "FACE_CHOICES": _S,
    "FACE_SIZE": _A, "FFHQ_TEMPLATE_512": _A, "AlignedFace": _A, "align_face": _A,
    "LandmarkPredictor": _L, "default_predictor": _L,
    "EmbedderUnavailable": _I, "FaceEmbedder": _I, "InsightFaceEmbedder": _I, "create_embedder": _I,
    "resolve_embedder": _I, "available_embedders": _I,
}  # fmt: skip
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
