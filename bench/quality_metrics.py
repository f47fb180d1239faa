"""Face-quality measures that see what people see, for ``bench/quality.py``.

PSNR and SSIM reward a smooth, slightly blurred face: the average of all plausible faces is the
closest in squared error, so a restorer can gain decibels while its faces carry a tenth of a real
face's detail, or paint local colour blotches that the mean error hides. The measures here look at
what a viewer notices instead:

* :func:`detail_ratio`: how much fine texture (pores, hair, eyelashes) the restored face has compared
  with the original, as the variance of the Laplacian of the luma on the centre of the crop (eyes,
  nose, mouth and cheeks; no background, whose texture would dilute the face's);
* :func:`colour_error_share`: the share of face pixels whose colour is visibly wrong (CIEDE2000
  ΔE > 10) once both images share the original's low frequencies, so a global tone or white-balance
  shift (which a viewer forgives and ``--tone-match`` corrects) does not count, and local errors do;
* :func:`cosine_matrix` and :func:`identity_ranks`: whether the restored face still looks like the
  person in *another* photo of them, and how it ranks among everyone's photos. Training sees dlib
  embeddings of the ground truth, so same-photo identity can be gamed; a different photo cannot.

The module is pure NumPy / OpenCV / scikit-image so it can be tested without weights or data.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "COLOUR_ERROR_THRESHOLD",
    "LOWPASS_SIGMA_FRACTION",
    "centre",
    "colour_error_share",
    "cosine_matrix",
    "detail_ratio",
    "identity_ranks",
    "laplacian_variance",
    "luma",
]

#: CIEDE2000 ΔE above which a colour difference is plainly visible side by side (≈ 2.3 is "just noticeable").
COLOUR_ERROR_THRESHOLD = 10.0
#: σ of the low-pass whose content is taken from the original, as a fraction of the crop side (25.6 px at 512).
LOWPASS_SIGMA_FRACTION = 0.05
#: ITU-R BT.601 luma weights (what JPEG and OpenCV's RGB2GRAY use).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def _as_unit_float(rgb: np.ndarray) -> np.ndarray:
    """RGB as float64 in [0, 1]: uint8 is divided by 255, floats are taken as already in [0, 1]."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma in float64 (0–255 for uint8 input): detail lives in brightness, not in chroma."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {a.shape}")
    return a.astype(np.float64) @ _LUMA


def centre(image: np.ndarray) -> np.ndarray:
    """The central half of each side (the 256x256 centre of a 512 crop): the face without background."""
    h, w = image.shape[:2]
    return image[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]


def laplacian_variance(rgb: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of the luma: the energy of the finest detail (blur drives it to 0)."""
    lap = cv2.Laplacian(luma(rgb), cv2.CV_64F, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    return float(lap.var())


def detail_ratio(restored: np.ndarray, original: np.ndarray) -> float:
    """Fine detail of the restored face's centre relative to the original's: 1 = as much as the real face.

    Below 1 the face is smoother than the real one (blur, over-denoising), above 1 it has more
    high-frequency energy (sharpening halos, noise, hallucinated texture). NaN when the original's
    centre is perfectly flat, where no ratio means anything.
    """
    if restored.shape != original.shape:
        raise ValueError(f"images differ in shape: {restored.shape} vs {original.shape}")
    reference = laplacian_variance(centre(original))
    if reference == 0:
        return float("nan")
    return laplacian_variance(centre(restored)) / reference


def _lowpass(lab: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(lab, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def colour_error_share(
    restored: np.ndarray,
    original: np.ndarray,
    mask: np.ndarray,
    *,
    threshold: float = COLOUR_ERROR_THRESHOLD,
    sigma_fraction: float = LOWPASS_SIGMA_FRACTION,
) -> float:
    """Share (0–1) of the pixels in ``mask`` whose colour is wrong by CIEDE2000 ΔE > ``threshold``.

    Both images go to CIE Lab; the restored one then has its own Gaussian low-pass
    (σ = ``sigma_fraction`` × the crop side) replaced by the original's, so a global or slowly varying
    tone shift cancels and only local colour errors (blotches, speckles, wrong lips or eyes) remain.
    ``mask`` is boolean, or a soft mask in [0, 1] thresholded at 0.5 (``paste.face_mask``).
    """
    if restored.shape != original.shape:
        raise ValueError(f"images differ in shape: {restored.shape} vs {original.shape}")
    from skimage.color import deltaE_ciede2000, rgb2lab

    inside = np.asarray(mask)
    inside = inside if inside.dtype == bool else inside > 0.5
    if inside.shape != original.shape[:2]:
        raise ValueError(f"mask shape {inside.shape} does not match the image {original.shape[:2]}")
    if not inside.any():
        raise ValueError("the face mask is empty")
    lab_restored = rgb2lab(_as_unit_float(restored))
    lab_original = rgb2lab(_as_unit_float(original))
    sigma = sigma_fraction * original.shape[0]
    matched = lab_restored - _lowpass(lab_restored, sigma) + _lowpass(lab_original, sigma)
    delta = deltaE_ciede2000(lab_original[inside], matched[inside], channel_axis=-1)
    return float(np.mean(delta > threshold))


def cosine_matrix(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(N, M) cosines between N query and M gallery embeddings (0 where an embedding is all zeros)."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    g = np.atleast_2d(np.asarray(gallery, dtype=np.float64))
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"embeddings differ in size: {q.shape[1]} vs {g.shape[1]}")
    qn = np.linalg.norm(q, axis=1, keepdims=True)
    gn = np.linalg.norm(g, axis=1, keepdims=True)
    q = np.divide(q, qn, out=np.zeros_like(q), where=qn > 0)
    g = np.divide(g, gn, out=np.zeros_like(g), where=gn > 0)
    return q @ g.T


def identity_ranks(queries: np.ndarray, gallery: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine to the right gallery item and its rank (1 = most similar) for each query.

    ``truth[i]`` is the gallery index of query ``i``'s person. The rank is 1 + the number of *other*
    gallery items strictly more similar than the right one, so a tie counts in the person's favour
    (it cannot happen with real embeddings of different photos, and a query equal to its gallery
    item is rank 1 whatever else the gallery holds).
    """
    sims = cosine_matrix(queries, gallery)
    truth = np.asarray(truth, dtype=np.int64).ravel()
    if truth.shape[0] != sims.shape[0]:
        raise ValueError(f"{sims.shape[0]} queries but {truth.shape[0]} truth indices")
    if truth.size and (truth.min() < 0 or truth.max() >= sims.shape[1]):
        raise ValueError(f"truth indices must be in 0..{sims.shape[1] - 1}")
    right = sims[np.arange(sims.shape[0]), truth]
    ranks = 1 + (sims > right[:, None]).sum(axis=1)
    return right, ranks.astype(np.int64)
