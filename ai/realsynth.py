"""Realistic training synthesis: real lesion masks placed into a real brain whose own lesions are
painted out.

The one labelled 3D brain (``cross_sectional/patient19``) has a high lesion load; a model trained
on it alone learns that patient rather than lesions. Here its lesions are replaced by tissue-like
signal (:func:`inpaint`), and the consensus lesion masks of 27 other patients, drawn in the same
MNI space (``lesion_masks_mni/``), are written into it with the FLAIR/T1 contrast that real lesions
have in that brain (:func:`place_lesions`). Each mask gives one training brain with that patient's
lesion load, shapes and positions: from 0.3 mL to 52 mL.

Contrast (measured on patient19 on the model grid, intensities normalised to the foreground
median): lesion FLAIR 1.12-1.49 (10th-90th percentile) against 0.99 for white matter, i.e. a gain
of about 1.15-1.5; lesion T1 0.81 against 1.08 for white matter, a loss of about 25 %. A placed
lesion gets one gain and one loss drawn per lesion from ``flair_gain`` / ``t1_loss``, applied
multiplicatively (the tissue texture stays) through a mask smoothed by ``edge_sigma`` voxels
(partial volume at the border). Only tissue voxels (inside the brain, outside the ventricles,
not CSF-dark) receive signal; the label is the placed mask on tissue.

:func:`fade_lesions` is a training augmentation on any labelled 2D crop: it scales a lesion's
excess FLAIR signal over its surroundings, so that fainter lesions of the same shapes are seen
(lesion contrast differs between sites: median lesion FLAIR 1.32 x the surrounding tissue on the
3D site, 1.29-1.62 on the clinical 2D patients).

Pure numpy/scipy on arrays (z, y, x); no DICOM, no torch.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: per-lesion FLAIR gain and T1 loss ranges (see the module docstring for the measurement)
FLAIR_GAIN = (1.15, 1.55)
T1_LOSS = (0.10, 0.35)


def inpaint(img: np.ndarray, hole: np.ndarray, support: np.ndarray, sigma: float = 3.0,
            rng: np.random.Generator | None = None, noise_sd: float = 0.0) -> np.ndarray:
    """Fill ``hole`` with the smoothed local mean of ``img`` over ``support & ~hole``.

    The fill is the normalised convolution ``G*(img w) / G*(w)`` with ``w = support & ~hole``
    and a Gaussian of ``sigma`` voxels, repeated with a doubled sigma where no support is within
    reach; optional Gaussian noise of ``noise_sd`` (relative) restores some texture.
    """
    w = (support & ~hole).astype(np.float32)
    out = img.astype(np.float32, copy=True)
    todo = hole.copy()
    s = sigma
    for _ in range(4):
        if not todo.any():
            break
        num = ndi.gaussian_filter(img * w, s)
        den = ndi.gaussian_filter(w, s)
        ok = todo & (den > 1e-3)
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
        s *= 2
    if rng is not None and noise_sd > 0:
        out[hole] *= 1 + rng.normal(0, noise_sd, int(hole.sum())).astype(np.float32)
    return out


def place_lesions(flair: np.ndarray, t1: np.ndarray | None, mask: np.ndarray, tissue: np.ndarray,
                  rng: np.random.Generator, flair_gain=FLAIR_GAIN, t1_loss=T1_LOSS,
                  edge_sigma: float = 0.6) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Write the lesions of ``mask`` into ``flair`` (and ``t1``) where ``tissue`` allows.

    Returns the new FLAIR, the new T1 (or None) and the lesion label (uint8). Each 26-connected
    lesion gets its own FLAIR gain and T1 loss drawn uniformly from the given ranges.
    """
    m = mask & tissue
    lab, n = ndi.label(m, np.ones((3, 3, 3), bool))
    if n == 0:
        return flair.copy(), None if t1 is None else t1.copy(), m.astype(np.uint8)
    gain = np.concatenate([[0.0], rng.uniform(float(flair_gain[0]), float(flair_gain[1]), n) - 1.0]).astype(np.float32)
    soft_f = ndi.gaussian_filter(gain[lab], edge_sigma) * tissue
    f = flair * (1.0 + soft_f)
    t = None
    if t1 is not None:
        loss = np.concatenate([[0.0], rng.uniform(float(t1_loss[0]), float(t1_loss[1]), n)]).astype(np.float32)
        soft_t = ndi.gaussian_filter(loss[lab], edge_sigma) * tissue
        t = t1 * (1.0 - soft_t)
    return f.astype(np.float32), None if t is None else t.astype(np.float32), m.astype(np.uint8)


def fade_lesions(img: np.ndarray, lesion: np.ndarray, alpha: float, sigma_bg: float = 4.0,
                 edge_sigma: float = 0.7) -> np.ndarray:
    """Scale the excess signal of ``lesion`` over its surroundings by ``alpha`` (< 1: fainter).

    The surroundings are the normalised convolution (Gaussian of ``sigma_bg`` pixels) of the
    image over non-lesion tissue (outside the lesion dilated by one pixel, above 0.5 of the
    normalised signal); only signal above them is scaled, through the lesion mask smoothed by
    ``edge_sigma`` pixels, so dark voxels inside a mask and the tissue texture stay. 2D or 3D.
    """
    les = lesion > 0
    if alpha >= 1.0 or not les.any():
        return img
    w = (~ndi.binary_dilation(les, iterations=1) & (img > 0.5)).astype(np.float32)
    den = ndi.gaussian_filter(w, sigma_bg)
    num = ndi.gaussian_filter(img * w, sigma_bg)
    bg = np.where(den > 1e-3, num / np.maximum(den, 1e-3), img)
    soft = np.clip(ndi.gaussian_filter(les.astype(np.float32), edge_sigma), 0.0, 1.0)
    excess = np.maximum(img - bg, 0.0)
    return (img - (1.0 - alpha) * soft * excess).astype(np.float32)
