"""Seeded synthetic brain phantoms with MS-like lesions (FLAIR + T1 + anatomy + lesion labels).

The phantoms teach the network the anatomy channels used for lesion location (brain, lateral
ventricles, cortex, infratentorial region) and give held-out cases with exactly known lesions and
locations for tests and evaluation. They are deliberately simple geometric models (ellipsoids,
perturbed by smooth random fields), not realistic anatomy; real-data realism comes from the
labelled patient case (see :mod:`ai.data`).

Arrays are ``(z, y, x)`` in the canonical LPS index order used by :mod:`ai.preprocess`: ``x``
increases to the patient's left, ``y`` to posterior, ``z`` to superior. 1 mm isotropic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ai.types import LOCATIONS

#: anatomy channels predicted by the model after the lesion channel
ANATOMY: tuple[str, ...] = ("brain", "ventricles", "cortex", "infratentorial")


@dataclass
class Phantom:
    """One synthetic case on a 1 mm grid, arrays (z, y, x)."""

    flair: np.ndarray  #: float32
    t1: np.ndarray  #: float32
    lesion: np.ndarray  #: uint8 0/1
    location: np.ndarray  #: uint8, 0 = none, k = 1 + LOCATIONS.index(loc)
    anatomy: dict[str, np.ndarray] = field(default_factory=dict)  #: uint8 masks, ANATOMY keys
    lesions: list[dict] = field(default_factory=list)  #: placed lesions (centre, radii, location)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  #: (x, y, z) mm

    def image(self, arr: np.ndarray, pixel=sitk.sitkFloat32) -> sitk.Image:
        """Wrap one array as an LPS-identity sitk image with the phantom's spacing."""
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(self.spacing)
        img.SetOrigin((-0.5 * arr.shape[2] * self.spacing[0], -0.5 * arr.shape[1] * self.spacing[1],
                       -0.5 * arr.shape[0] * self.spacing[2]))
        return sitk.Cast(img, pixel)


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Smooth random field in [0, 1] (computed at 1/4 resolution for speed)."""
    small = tuple(max(4, s // 4) for s in shape)
    n = ndi.gaussian_filter(rng.standard_normal(small), sigma / 4.0)
    n = ndi.zoom(n, [s / t for s, t in zip(shape, small, strict=False)], order=1)[: shape[0], : shape[1], : shape[2]]
    n = (n - n.min()) / (np.ptp(n) + 1e-6)
    return n.astype(np.float32)


def _ellipsoid(zz, yy, xx, c, r) -> np.ndarray:
    """Normalised ellipsoid radius (<1 inside) for centre c=(z,y,x), radii r=(z,y,x)."""
    return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2


def make_phantom(seed: int, shape=(150, 200, 168), n_lesions: int | None = None,
                 skull: bool | None = None) -> Phantom:
    """Generate one phantom.

    Parameters
    ----------
    seed : int
        Seed of the generator; the same seed always gives the same phantom.
    shape : tuple
        (z, y, x) grid size at 1 mm.
    n_lesions : int, optional
        Number of lesions (default: random 8-30).
    skull : bool, optional
        Include skull and scalp (default: random, 70 %).
    """
    rng = np.random.default_rng(seed)
    Z, Y, X = shape
    zz, yy, xx = np.meshgrid(np.arange(Z, dtype=np.float32), np.arange(Y, dtype=np.float32),
                             np.arange(X, dtype=np.float32), indexing="ij")
    if skull is None:
        skull = bool(rng.random() < 0.7)
    s = rng.uniform(0.9, 1.05)  # head size
    c = np.array([Z * 0.55, Y * 0.5, X * 0.5]) + rng.normal(0, 2, 3)
    # cerebrum
    rb = np.array([58, 82, 66]) * s
    fold = _smooth_noise(rng, shape, 4.0)
    fold2 = _smooth_noise(rng, shape, 3.0)
    e_brain = _ellipsoid(zz, yy, xx, c, rb)
    depth = (1.0 - np.sqrt(e_brain)) * rb.mean()  # ~mm inside the surface
    cerebrum = depth > 0
    cerebrum &= zz > c[0] - rb[0] * 0.75  # flat-ish base
    # cerebellum (posterior inferior) and brainstem
    cc = c + np.array([-rb[0] * 0.72, rb[1] * 0.55, 0]) + rng.normal(0, 1.5, 3)
    rcb = np.array([22, 30, 50]) * s
    e_cb = _ellipsoid(zz, yy, xx, cc, rcb)
    cereb = e_cb < 1.0
    cbs = c + np.array([-rb[0] * 0.75, rb[1] * 0.12, 0])
    rbs = np.array([26, 12, 11]) * s
    e_bs = _ellipsoid(zz, yy, xx, cbs, rbs)
    stem = (e_bs < 1.0) & (zz < c[0] - 8)
    infra = cereb | stem
    cerebrum &= ~ndi.binary_dilation(infra, iterations=2)
    brain = cerebrum | infra
    # cortex ribbon with gyri: grey matter between the CSF rim and an undulating WM boundary
    csf_rim = cerebrum & (depth < 0.8 + 2.5 * fold2)
    gm = cerebrum & ~csf_rim & (depth < 3.0 + 7.0 * fold)
    sulci = gm & (fold2 > 0.62) & (depth < 3.0 + 7.0 * fold - 1.5)
    wm = cerebrum & ~csf_rim & ~gm
    # lateral ventricles (two curved ellipsoids) + deep grey matter
    vs = rng.uniform(0.7, 1.6)  # atrophy
    vents = np.zeros(shape, bool)
    deep_gm = np.zeros(shape, bool)
    for side in (-1, 1):
        for dy, rz, ry, rx, dz in [(-10, 9, 24, 6, 6), (18, 7, 14, 5, 2)]:
            vc = c + np.array([dz, dy, side * (6 + 2 * vs)])
            vents |= _ellipsoid(zz, yy, xx, vc, np.array([rz * vs ** 0.5, ry, rx * vs])) < 1.0
        dc = c + np.array([-4, 2, side * (20 + 2 * vs)])
        deep_gm |= _ellipsoid(zz, yy, xx, dc, np.array([10, 14, 7])) < 1.0
    vents &= wm
    deep_gm &= wm & ~ndi.binary_dilation(vents, iterations=3)
    # cerebellar folia: GM outer, WM core
    cb_wm = cereb & (e_cb < 0.35 + 0.2 * fold)
    cb_gm = cereb & ~cb_wm
    # lesions
    location = np.zeros(shape, np.uint8)
    lesion = np.zeros(shape, bool)
    vent_dist = ndi.distance_transform_edt(~vents)
    ctx_dist = ndi.distance_transform_edt(~gm)
    placed: list[dict] = []
    n = int(rng.integers(8, 31)) if n_lesions is None else n_lesions
    kinds = rng.choice(len(LOCATIONS), size=n, p=[0.4, 0.2, 0.15, 0.25])
    cand = {
        0: np.argwhere(wm & (vent_dist > 1) & (vent_dist < 3.5)),
        1: np.argwhere(wm & (ctx_dist > 0.5) & (ctx_dist < 2.0) & (vent_dist > 12)),
        2: np.argwhere((stem | cb_wm) & (ndi.distance_transform_edt(infra) > 4)),
        3: np.argwhere(wm & (vent_dist > 10) & (ctx_dist > 9) & ~deep_gm),
    }
    for kind in kinds:
        pts = cand[int(kind)]
        if len(pts) == 0:
            continue
        p = pts[rng.integers(len(pts))].astype(np.float32)
        r = rng.uniform(1.5, 5.5, 3) if kind != 0 else rng.uniform(2.0, 7.0, 3)
        if kind in (1, 2, 3):
            r = np.minimum(r, 4.0 if kind != 3 else 6.0)
        if kind == 0:  # Dawson finger: elongate away from the ventricle, towards it
            r[1] *= 1.0
            r[0] *= 1.4
        bb = [slice(max(0, int(p[i] - r.max() - 2)), min(shape[i], int(p[i] + r.max() + 3))) for i in range(3)]
        e = _ellipsoid(zz[tuple(bb)], yy[tuple(bb)], xx[tuple(bb)], p, r)
        blob = e < 1.0
        region = {0: wm | vents, 1: wm | gm, 2: infra, 3: wm}[int(kind)]
        blob &= region[tuple(bb)] & ~vents[tuple(bb)]
        if blob.sum() < 8:
            continue
        sub = location[tuple(bb)]
        newvox = blob & (sub == 0) & ~lesion[tuple(bb)]
        # avoid merging with an earlier lesion of another class: require a 2-voxel gap
        near = ndi.binary_dilation(lesion[tuple(bb)], iterations=2)
        if (blob & near).any():
            continue
        sub[newvox] = int(kind) + 1
        lesion[tuple(bb)] |= newvox
        placed.append({"center_zyx": p.tolist(), "radii_zyx": r.tolist(), "location": LOCATIONS[int(kind)]})
    # intensities (FLAIR normalised so that WM ~ 1)
    wmv = 1.0
    f_csf, f_gm, f_dgm = rng.uniform(0.05, 0.25), rng.uniform(1.12, 1.35), rng.uniform(1.05, 1.2)
    f_les = rng.uniform(1.5, 2.1)
    t_csf, t_gm, t_les = rng.uniform(0.15, 0.35), rng.uniform(0.6, 0.75), rng.uniform(0.45, 0.8)
    flair = np.zeros(shape, np.float32)
    t1 = np.zeros(shape, np.float32)

    def put(mask, fv, tv):
        flair[mask] = fv
        t1[mask] = tv

    if skull:
        e_head = _ellipsoid(zz, yy, xx, c - np.array([8, 0, 0]), rb + np.array([22, 16, 16]))
        e_sk = _ellipsoid(zz, yy, xx, c - np.array([6, 0, 0]), rb + np.array([14, 9, 9]))
        e_in = _ellipsoid(zz, yy, xx, c - np.array([4, 0, 0]), rb + np.array([6, 4, 4]))
        head = e_head < 1.0
        put(head, rng.uniform(0.6, 1.3), rng.uniform(0.8, 1.3))  # scalp, fat, muscle
        put(e_sk < 1.0, rng.uniform(0.02, 0.1), rng.uniform(0.05, 0.15))  # skull
        marrow = (e_sk < 1.0) & (e_in >= 1.0) & (fold2 > 0.55)
        put(marrow, rng.uniform(0.5, 1.0), rng.uniform(0.8, 1.2))
        put(e_in < 1.0, f_csf, t_csf)  # CSF around the brain
        # face / neck tissue below the brain
        neck_c, neck_r = c - np.array([60, -10, 0]), np.array([50, 60, 45])
        neck = (zz < c[0] - rb[0] * 0.9) & (_ellipsoid(zz, yy, xx, neck_c, neck_r) < 1)
        put(neck, rng.uniform(0.5, 0.9), rng.uniform(0.6, 1.0))
    put(brain, f_gm, t_gm)
    put(wm | cb_wm | stem, wmv, 1.0)
    put(cb_gm, f_gm, t_gm)
    put(deep_gm, f_dgm, 0.85)
    put(csf_rim | sulci | vents, f_csf, t_csf)
    tex = 0.08 * (_smooth_noise(rng, shape, 1.5) - 0.5)
    put(lesion, 0, 0)
    flair[lesion] = f_les * (1.0 + tex[lesion])
    t1[lesion] = t_les * (1.0 + tex[lesion])
    # periventricular FLAIR hyperintense rim in some phantoms is NOT a lesion label (caps)
    flair = ndi.gaussian_filter(flair, 0.6)
    t1 = ndi.gaussian_filter(t1, 0.6)
    scale_f, scale_t = rng.uniform(50, 400), rng.uniform(100, 1000)
    flair *= scale_f
    t1 *= scale_t
    anatomy = {
        "brain": brain.astype(np.uint8),
        "ventricles": vents.astype(np.uint8),
        "cortex": (gm & ~sulci).astype(np.uint8),
        "infratentorial": infra.astype(np.uint8),
    }
    return Phantom(flair=flair.astype(np.float32), t1=t1.astype(np.float32), lesion=lesion.astype(np.uint8),
                   location=location, anatomy=anatomy, lesions=placed)


def corrupt(img: np.ndarray, rng: np.random.Generator, noise=(0.01, 0.05), bias=0.25) -> np.ndarray:
    """Multiplicative smooth bias field and Rician-like noise (relative to the 99th percentile)."""
    out = img.astype(np.float32)
    if bias > 0:
        field_ = _smooth_noise(rng, img.shape, 40.0)
        out = out * (1.0 - bias / 2 + bias * field_)
    ref = np.percentile(out, 99) + 1e-6
    sd = rng.uniform(*noise) * ref
    re = out + rng.normal(0, sd, out.shape).astype(np.float32)
    im = rng.normal(0, sd, out.shape).astype(np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32)


def thick_slices(arr: np.ndarray, thickness: int, order: int = 1) -> np.ndarray:
    """Simulate a 2D acquisition: average ``thickness`` 1 mm slices along z and keep every one."""
    if thickness <= 1:
        return arr
    n = arr.shape[0] // thickness
    a = arr[: n * thickness].reshape(n, thickness, *arr.shape[1:])
    return a.mean(1) if order else a.max(1)


def write_case(ph: Phantom, out_dir, slice_thickness: int = 1, seed: int = 0) -> None:
    """Write a phantom as an evaluation case folder (FLAIR, T1, lesion_mask, lesion_location)."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    f = corrupt(ph.flair, rng)
    t = corrupt(ph.t1, rng)
    les, loc = ph.lesion, ph.location
    sp = (1.0, 1.0, 1.0)
    if slice_thickness > 1:
        f, t = thick_slices(f, slice_thickness), thick_slices(t, slice_thickness)
        les = (thick_slices(les.astype(np.float32), slice_thickness) >= 0.5).astype(np.uint8)
        loc = thick_slices(loc, slice_thickness, order=0).astype(np.uint8) * les
        sp = (1.0, 1.0, float(slice_thickness))
    ph2 = Phantom(flair=f, t1=t, lesion=les, location=loc, spacing=sp)
    sitk.WriteImage(ph2.image(f), str(out / "FLAIR.nii.gz"))
    sitk.WriteImage(ph2.image(t), str(out / "T1.nii.gz"))
    sitk.WriteImage(ph2.image(les, sitk.sitkUInt8), str(out / "lesion_mask.nii.gz"))
    sitk.WriteImage(ph2.image(loc, sitk.sitkUInt8), str(out / "lesion_location.nii.gz"))
