"""Training volumes: the labelled real case (with pseudo-anatomy) and synthetic phantoms.

Every training volume lives on the model grid (canonical LPS, 1 mm in-plane, see
:mod:`ai.preprocess`) and carries

- ``flair``/``t1``: normalised arrays (z, y, x); ``t1`` may be ``None``;
- ``labels``: uint8 (C, z, y, x) for :data:`ai.model.OUTPUTS` (lesion, brain, ventricles, cortex,
  infratentorial);
- ``valid``: float (C,) whether each label channel is known for this volume;
- ``region``: bool (z, y, x) voxels that may be used for training (the held-out part of the real
  case is excluded here AND zeroed in the inputs, so no held-out voxel is ever seen);
- ``slice_mm``: slice spacing on the model grid (thick-slice simulation only for thin slices);
- ``stripped``: skull-stripped image (background stays zero under augmentation).

Sources (:func:`training_volumes` assembles them, leaving out the held-out patients):

- the 3D real case (``cross_sectional/patient19``): anatomy is a pseudo-label derived from its own
  images (documented in :func:`real_case_volume`);
- the clinical 2D cases (``clinical2d/``): raw thick-slice FLAIR with skull, manual lesion and
  lateral-ventricle masks; brain, cortex and infratentorial labels are unknown there
  (``valid`` 0), so those channels learn nothing from these cases;
- real-mask synthesis (:mod:`ai.realsynth`): patient19 with its own lesions painted out and the
  lesion mask of one of 27 other patients written in (anatomy as for patient19);
- synthetic phantoms: anatomy and lesions exact.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ai import preprocess as pp
from ai.model import OUTPUTS
from ai.synth import make_phantom

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_CASE = SHARED / "ms" / "cross_sectional" / "patient19"
CLINICAL2D = SHARED / "ms" / "clinical2d"
MNI_MASKS = SHARED / "ms" / "lesion_masks_mni"

log = logging.getLogger(__name__)

#: site of each labelled source, for per-site reporting
SITE_3D = "3D 1 mm (skull-stripped, MNI)"
SITE_2D = "clinical 2D (raw, skull, 6-8 mm)"

#: honest hold-out of the real case: the patient's LEFT hemisphere (LPS x >= 0 mm) is never used
#: in training; metrics on it are reported as the real-data validation.
HOLDOUT = {"case": "patient19", "rule": "LPS x >= 0 mm (patient's left hemisphere) held out",
           "axis": "lps_x", "threshold_mm": 0.0}


@dataclass
class Volume:
    name: str
    flair: np.ndarray
    t1: np.ndarray | None
    labels: np.ndarray
    valid: np.ndarray
    region: np.ndarray
    slice_mm: float = 1.0
    stripped: bool = True
    grid: sitk.Image | None = None  #: the model grid the arrays lie on
    #: voxels where the lesion label is not known to be right (z, y, x), or None: the lesion
    #: channel's loss leaves them out unless a lesion label is there (:func:`mask_synthetic_volumes`
    #: with ``ignore_painted``); may be shared between volumes (never written)
    ignore: np.ndarray | None = None


def physical_grid(img: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS physical coordinates (x, y, z), each shaped like the image array (z, y, x)."""
    size = img.GetSize()
    d = np.array(img.GetDirection()).reshape(3, 3)
    sp = np.array(img.GetSpacing())
    o = np.array(img.GetOrigin())
    k, j, i = np.meshgrid(np.arange(size[2]), np.arange(size[1]), np.arange(size[0]), indexing="ij")
    idx = np.stack([i, j, k], 0).reshape(3, -1).astype(np.float32)
    pts = (d @ (idx * sp[:, None])) + o[:, None]
    return tuple(p.reshape(size[2], size[1], size[0]).astype(np.float32) for p in pts)


def mni_infratentorial(x_ras: np.ndarray, y_ras: np.ndarray, z_ras: np.ndarray) -> np.ndarray:
    """Approximate infratentorial region (cerebellum + brainstem) in MNI152 millimetres.

    A piecewise plane drawn on the mid-sagittal and para-sagittal slices of the MNI-registered real
    case: posterior fossa below z=-12 behind y=-40, below z=-20 for -40<=y<-25, and the pons/
    medulla (|x|<16) below z=-12 for -25<=y<-5.
    """
    post = (y_ras < -40) & (z_ras < -12)
    mid = (y_ras >= -40) & (y_ras < -25) & (z_ras < -20)
    pons = (np.abs(x_ras) < 16) & (y_ras >= -25) & (y_ras < -5) & (z_ras < -12)
    return post | mid | pons


def real_case_volume(case_dir: Path, holdout: bool = True) -> Volume:
    """The labelled real case on the model grid with pseudo-anatomy.

    Pseudo-anatomy (the case is skull-stripped and in MNI space):
    brain = FLAIR > 0 (holes filled); ventricles = dark on both FLAIR and T1 (< 0.35 / < 0.45 of
    the foreground median), >= 10 mm inside the brain, in a central MNI box, components
    >= 300 voxels; infratentorial = :func:`mni_infratentorial`; cortex = T1 grey-matter range
    (between CSF and white matter, 2-means split) within 12 mm of the brain surface, outside the
    infratentorial region and lesions.
    """
    flair = sitk.ReadImage(str(case_dir / "FLAIR.nii.gz"), sitk.sitkFloat32)
    t1p = case_dir / "T1.nii.gz"
    t1 = sitk.ReadImage(str(t1p), sitk.sitkFloat32) if t1p.exists() else None
    prep = pp.prepare(flair, t1, register=False)
    lesion = _on_grid(case_dir / "lesion_mask.nii.gz", prep.grid)
    f, t = prep.flair, prep.t1
    brain = ndi.binary_fill_holes(f > 0.02)
    brain = ndi.binary_opening(brain, iterations=1)
    x, y, z = physical_grid(prep.grid)
    xr, yr = -x, -y
    infra = mni_infratentorial(xr, yr, z) & brain
    depth = ndi.distance_transform_edt(brain)
    tt = t if t is not None else np.ones_like(f)
    vent = brain & (f < 0.35) & (tt < 0.45) & (depth > 10)
    vent &= (np.abs(xr) < 35) & (yr > -50) & (yr < 40) & (z > -5) & (z < 40)
    lab, n = ndi.label(vent)
    if n:
        sizes = ndi.sum(vent, lab, range(1, n + 1))
        vent = np.isin(lab, 1 + np.nonzero(sizes >= 300)[0])
    vent = ndi.binary_closing(vent, iterations=1)
    if t is not None:
        vals = t[brain & ~lesion & (t > 0.5)]
        thr = pp._otsu(vals)  # grey vs white matter on T1
        gm = brain & (t > 0.45) & (t < thr)
    else:
        gm = brain & (f > 1.08)
    # lesion borders are partial-volumed into the grey-matter range on T1: keep them out of the
    # cortex label, or the model learns "cortex" around every white-matter lesion (and then calls
    # it juxtacortical)
    cortex = gm & (depth < 12) & ~infra & ~ndi.binary_dilation(lesion, iterations=2)
    labels = np.stack([lesion, brain, vent, cortex, infra]).astype(np.uint8)
    region = np.ones(f.shape, bool)
    if holdout:
        region = x < HOLDOUT["threshold_mm"]
        f = f * region
        if t is not None:
            t = t * region
        labels = labels * region[None]
    return Volume(case_dir.name, f.astype(np.float32), None if t is None else t.astype(np.float32), labels,
                  np.ones(len(OUTPUTS), np.float32), region, grid=prep.grid)


#: SAMSEG (FreeSurfer) label values behind each anatomy channel (``samseg`` atlas
#: ``compressionLookupTable.txt``); "brain" is everything inside the skull (every label but
#: unknown, skull, soft non-brain tissue and the eyes), as the skull-stripped patient19 mask is
SAMSEG_LABELS: dict[str, tuple[int, ...]] = {
    "ventricles": (4, 5, 43, 44),                    # lateral and inferior lateral ventricles
    "cortex": (3, 42),                               # cerebral cortex
    "infratentorial": (7, 8, 46, 47, 16, 15),        # cerebellum white matter and cortex, brainstem, 4th ventricle
}
SAMSEG_NOT_BRAIN = (0, 165, 258, 259)


def samseg_anatomy(seg: np.ndarray) -> dict[str, np.ndarray]:
    """The model's anatomy channels (brain, ventricles, cortex, infratentorial) as boolean maps
    from a SAMSEG label volume (FreeSurfer label values; ``ai/recipes/samseg_anatomy.sh``)."""
    out = {"brain": ~np.isin(seg, SAMSEG_NOT_BRAIN)}
    out.update({k: np.isin(seg, v) for k, v in SAMSEG_LABELS.items()})
    return out


#: the channels SAMSEG's anatomy stands in for: the lateral ventricles stay the manual masks (clinical)
#: or the heuristic (patient19), which agree with the manual masks better than SAMSEG's do
SAMSEG_CHANNELS: tuple[str, ...] = ("brain", "cortex", "infratentorial")


def cortex_without_lesions(cortex: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """SAMSEG's cortex less a case's manual lesions and one voxel around them: SAMSEG without its
    lesion mode labels some lesion voxels grey matter (boolean arrays on one grid)."""
    return cortex & ~ndi.binary_dilation(lesion)


def samseg_reference(case_dir: Path, seg_path: Path, grid: sitk.Image) -> np.ndarray:
    """SAMSEG's brain, cortex and infratentorial maps (:data:`SAMSEG_CHANNELS`) on a model grid,
    uint8 (3, z, y, x); the cortex without the case's manual lesions (:func:`cortex_without_lesions`)."""
    img = sitk.ReadImage(str(seg_path), sitk.sitkInt16)
    seg = sitk.GetArrayFromImage(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                               sitk.sitkInt16))
    anat = samseg_anatomy(seg)
    les = case_dir / "lesion_mask.nii.gz"
    if les.exists():
        anat["cortex"] = cortex_without_lesions(anat["cortex"], _on_grid(les, grid))
    return np.stack([anat[k] for k in SAMSEG_CHANNELS]).astype(np.uint8)


def with_samseg_anatomy(vol: Volume, case_dir: Path, samseg: Path | None) -> Volume:
    """``vol`` with its brain, cortex and infratentorial labels replaced by SAMSEG's
    (``<samseg>/<case>/seg.nii.gz``, :func:`samseg_reference`) and marked known; unchanged when
    ``samseg`` is None or has no labels for the case. Voxels outside ``vol.region`` stay zero."""
    if samseg is None or vol.grid is None:
        return vol
    seg = Path(samseg) / case_dir.name / "seg.nii.gz"
    if not seg.exists():
        log.warning("%s: no SAMSEG labels at %s; its anatomy stays as it was", case_dir.name, seg)
        return vol
    idx = [OUTPUTS.index(k) for k in SAMSEG_CHANNELS]
    vol.labels[idx] = samseg_reference(case_dir, seg, vol.grid) * vol.region[None]
    vol.valid[idx] = 1.0
    return vol


def _on_grid(path: Path | sitk.Image, grid: sitk.Image) -> np.ndarray:
    """A label image (a file, or one already read as uint8) resampled (nearest) onto a model
    grid, as a boolean array."""
    src = path if isinstance(path, sitk.Image) else sitk.ReadImage(str(path), sitk.sitkUInt8)
    img = pp.to_canonical(src)
    return sitk.GetArrayFromImage(pp.resample(img, _as_u8(grid), sitk.sitkNearestNeighbor)) > 0


def clinical_volume(case_dir: Path) -> Volume:
    """A clinical 2D case (raw FLAIR with skull, T1 registered to it when present) on the model grid.

    Labels: the manual lesion mask and the manual lateral-ventricle mask; brain, cortex and
    infratentorial are unknown (``valid`` 0 for those channels).
    """
    flair = sitk.ReadImage(str(case_dir / "FLAIR.nii.gz"), sitk.sitkFloat32)
    t1p = case_dir / "T1.nii.gz"
    t1 = sitk.ReadImage(str(t1p), sitk.sitkFloat32) if t1p.exists() else None
    prep = pp.prepare(flair, t1, register=False)
    lesion = _on_grid(case_dir / "lesion_mask.nii.gz", prep.grid)
    vent_path = case_dir / "ventricle_mask.nii.gz"
    has_vent = vent_path.exists()
    zeros = np.zeros_like(lesion)
    vent = _on_grid(vent_path, prep.grid) if has_vent else zeros
    labels = np.stack([lesion, zeros, vent, zeros, zeros]).astype(np.uint8)
    valid = np.array([1, 0, float(has_vent), 0, 0], np.float32)
    return Volume(case_dir.name, prep.flair, prep.t1, labels, valid, np.ones(lesion.shape, bool),
                  slice_mm=float(prep.grid.GetSpacing()[2]), stripped=False, grid=prep.grid)


#: how far (voxels, 6-connected dilation) around the base's own lesions the lesion label of a
#: real-mask volume is left out of the loss with ``ignore_painted``
PAINTED_MARGIN = 2


def mask_synthetic_volumes(base: Volume, masks: list[Path], seed: int, ignore_painted: bool = False) -> list[Volume]:
    """Real-mask synthesis (:mod:`ai.realsynth`): ``base`` (patient19, whole) with its lesions
    painted out and each mask of ``masks`` (same MNI space) written in; one volume per mask.

    ``ignore_painted``: the painted-out lesions and :data:`PAINTED_MARGIN` voxels around them are
    marked ``ignore`` (one array shared by all the volumes): the inpainting leaves lesion-like
    residue there (a model trained with them as negatives still draws about a third of its false
    lesions on these volumes there), so labelling them "no lesion" would teach the model that
    faint real lesions are not lesions. A placed lesion that falls there keeps its label."""
    from ai.realsynth import inpaint, place_lesions

    if base.grid is None:
        raise ValueError(f"{base.name}: real-mask synthesis needs the base volume's model grid")
    grid = base.grid
    rng = np.random.default_rng(seed)
    brain, vent = base.labels[1] > 0, base.labels[2] > 0
    hole = ndi.binary_dilation(base.labels[0] > 0, iterations=1) & brain
    support = brain & ~vent & (base.flair > 0.6)
    f0 = inpaint(base.flair, hole, support, rng=rng, noise_sd=0.03)
    t0 = inpaint(base.t1, hole, support) if base.t1 is not None else None
    tissue = brain & ~ndi.binary_dilation(vent, iterations=1) & (f0 > 0.6)
    ignore = (ndi.binary_dilation(base.labels[0] > 0, iterations=PAINTED_MARGIN) & brain) if ignore_painted else None
    out = []
    for p in masks:
        m = _on_grid(p, grid)
        f, t, les = place_lesions(f0, t0, m, tissue, rng)
        labels = base.labels.copy()
        labels[0] = les
        labels[3] &= ~ndi.binary_dilation(les > 0, iterations=2)  # as in real_case_volume
        out.append(Volume(f"{base.name}+{p.name.split('_')[0]}", f, t, labels, base.valid.copy(),
                          np.ones(f.shape, bool), grid=base.grid, ignore=ignore))
    return out


def training_volumes(held_out: frozenset[str] | set[str] = frozenset(), real_case: Path | None = REAL_CASE,
                     clinical: Path | None = CLINICAL2D, mni_masks: Path | None = MNI_MASKS,
                     seed: int = 0, holdout_hemisphere: bool = False,
                     ignore_painted: bool = False, samseg: Path | None = None) -> dict[str, list[Volume]]:
    """The real and real-mask training volumes by group (``real3d``, ``clinical``, ``masksynth``),
    leaving out every case named in ``held_out`` (a held-out patient19 takes its synthetic
    variants with it: they are its brain). ``ignore_painted``: see :func:`mask_synthetic_volumes`.
    ``samseg``: a folder of SAMSEG labels (``ai/recipes/samseg_anatomy.sh``); the real cases' brain,
    cortex and infratentorial labels are then SAMSEG's (:func:`with_samseg_anatomy`), the
    real-mask volumes inheriting patient19's, instead of the heuristics (patient19) or nothing
    (clinical)."""
    groups: dict[str, list[Volume]] = {"real3d": [], "clinical": [], "masksynth": []}
    if real_case is not None and (Path(real_case) / "lesion_mask.nii.gz").exists() \
            and Path(real_case).name not in held_out:
        base = with_samseg_anatomy(real_case_volume(Path(real_case), holdout=holdout_hemisphere),
                                   Path(real_case), samseg)
        groups["real3d"].append(base)
        if mni_masks is not None and Path(mni_masks).is_dir() and not holdout_hemisphere:
            masks = sorted(Path(mni_masks).glob("*_lesion_mask.nii.gz"))
            groups["masksynth"] = mask_synthetic_volumes(base, masks, seed, ignore_painted=ignore_painted)
    if clinical is not None and Path(clinical).is_dir():
        for d in sorted(Path(clinical).iterdir()):
            if (d / "lesion_mask.nii.gz").exists() and (d / "FLAIR.nii.gz").exists() and d.name not in held_out:
                groups["clinical"].append(with_samseg_anatomy(clinical_volume(d), d, samseg))
    return groups


def _as_u8(ref: sitk.Image) -> sitk.Image:
    out = sitk.Image(ref.GetSize(), sitk.sitkUInt8)
    out.CopyInformation(ref)
    return out


def phantom_volume(seed: int) -> Volume:
    """A synthetic phantom (clean; 2D corruption happens in the sampler) as a training volume."""
    ph = make_phantom(seed)
    fg = pp.foreground_mask(ph.flair)
    f = pp.normalise(ph.flair, fg)
    t = pp.normalise(ph.t1, fg)
    labels = np.stack([ph.lesion] + [ph.anatomy[k] for k in OUTPUTS[1:]]).astype(np.uint8)
    return Volume(f"phantom{seed}", f, t, labels, np.ones(len(OUTPUTS), np.float32), np.ones(f.shape, bool),
                  stripped=False)
