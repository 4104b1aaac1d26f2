"""Inference API: ``Segmenter().segment(flair, t1)`` -> :class:`ai.types.SegmentationResult`."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi

from ai import preprocess as pp
from ai.lesions import STRUCT26, analyse, work_box
from ai.model import OUTPUTS, fuse_conv_bn, model_from_meta
from ai.types import THIN_SLICE_GROW, SegmentationResult

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parent / "weights" / "ms_unet.pt"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (oneDNN's own check, else the CPU flags)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private helper moved or failed: read the flags
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_for(precision: str) -> bool | None:
    """``Segmenter``'s ``bf16`` argument for a precision setting: ``auto`` -> ``None`` (decided
    by :func:`cpu_has_bf16`), ``bf16`` -> True, ``fp32`` -> False."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    return None if precision == "auto" else precision == "bf16"


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Segmenter:
    """Load the shipped (or given) weights once; segment many studies.

    Parameters
    ----------
    weights : path, optional
        Weights file written by ``python -m ai export`` (default: ``ai/weights/ms_unet.pt``).
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda[:n]``.
    threads : int, optional
        CPU threads for torch (default: ``min(2, os.cpu_count())``).
    batch : int, optional
        Axial slices per forward pass (each with its mirror image when ``tta``). Default: 4 on
        CPU, 8 on CUDA. On this VM's CPU (fp32, 2 threads) 4 slices ran the benchmark volume's
        network in about 8.0 s against 10.3 s with 8 (the activations of 16 images of 256 x 256
        overflow the caches), with identical outputs; 2 was no faster than 4.
    bf16 : bool, optional
        CPU bfloat16 autocast. ``None`` (default): on when the CPU computes bf16 natively
        (AVX512-BF16 / AMX; 2.7x faster than fp32 here, same lesion metrics, see the model card),
        fp32 otherwise. On CUDA, fp16 autocast (AMP) is always used.
    tta : bool
        Test-time augmentation: average the outputs of the slices and of their left-right mirror
        images (default on; it removes inconsistent small false positives, see the model card).
    fuse : bool
        Fold the BatchNorms into the convolutions (:func:`ai.model.fuse_conv_bn`; outputs equal
        to 1e-4). Off by default: on this VM's CPU (fp32) it took about 7 % off the network's
        time in one process and nothing the end-to-end benchmark could tell from its noise.
    """

    def __init__(self, weights: str | Path | None = None, device: str = "auto", threads: int | None = None,
                 batch: int | None = None, bf16: bool | None = None, tta: bool = True,
                 fuse: bool = False):
        self.weights = Path(weights) if weights else WEIGHTS
        if not self.weights.exists():
            raise FileNotFoundError(f"model weights not found: {self.weights}")
        self.device = pick_device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(threads or min(2, os.cpu_count() or 1))
        st = torch.load(self.weights, map_location="cpu", weights_only=False)
        self.meta = st.get("meta", {})
        self.context = int(self.meta.get("context", 0))
        self.model = model_from_meta(self.meta)
        self.model.load_state_dict(st["state_dict"])
        self.model.eval().to(self.device)
        self.model_name = str(self.meta.get("name", "ms_unet2d"))
        self.model_version = sha256(self.weights)
        self.batch = batch or (4 if self.device.type == "cpu" else 8)
        self.tta = tta
        self.bf16 = cpu_has_bf16() if bf16 is None else bool(bf16)
        if self.device.type != "cpu":
            self.bf16 = False
        self.precision = "fp16" if self.device.type == "cuda" else ("bf16" if self.bf16 else "fp32")
        # CPU fp32: oneDNN's convolutions run 1.8x faster on NHWC (channels-last) tensors, with
        # logits equal to 5e-5 (bench/inference.py; measured on a CPU without bf16). bf16 and
        # CUDA keep the default layout (not measured here).
        self.channels_last = self.precision == "fp32"
        # each BatchNorm folded into the convolution before it (ai.model.fuse_conv_bn): measured on
        # this VM's CPU fp32 and not the default (model card, "Speed and memory")
        self.fused = bool(fuse)
        if self.fused:
            fuse_conv_bn(self.model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    # ------------------------------------------------------------------ model grid
    def predict_grid(self, prep: pp.Prepared) -> np.ndarray:
        """Sigmoid outputs (C, z, y, x) on the model grid (zeros outside the head crop)."""
        x = slice_input(prep, self.context, 2 ** self.model.depth)
        Z, H, W = prep.flair[prep.crop].shape
        out = np.zeros((len(OUTPUTS),) + prep.flair.shape, np.float32)
        if self.device.type == "cuda":
            ctx = torch.autocast("cuda", dtype=torch.float16)
        else:
            ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)
        res = np.zeros((Z, len(OUTPUTS), H, W), np.float32)
        with torch.inference_mode(), ctx:
            for s in range(0, Z, self.batch):
                xb = torch.from_numpy(x[s:s + self.batch]).to(self.device)
                nb = xb.shape[0]
                if self.tta:  # the mirror images ride in the same forward pass
                    xb = torch.cat([xb, mirror_images(xb, W)], 0)
                if self.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                p = torch.sigmoid(self.model(xb).float())
                if self.tta:
                    p = 0.5 * (p[:nb, :, :H, :W] + torch.flip(p[nb:, :, :H, :W], (-1,)))
                res[s:s + self.batch] = p[:, :, :H, :W].cpu().numpy()
        out[(slice(None),) + prep.crop] = res.transpose(1, 0, 2, 3)
        return out

    # ------------------------------------------------------------------ full pipeline
    def segment(self, flair: sitk.Image, t1: sitk.Image | None = None, threshold: float = 0.5,
                min_voxels: int = 3, min_volume_mm3: float = 10.0,
                grow: float | None = THIN_SLICE_GROW) -> SegmentationResult:
        """Segment and measure MS lesions; every array is on the source FLAIR grid (z, y, x).

        Lesions are found at ``threshold``; on thin-slice (3D) grids they are drawn to ``grow``
        (:func:`ai.lesions.lesion_mask`; None: the plain threshold)."""
        return self.segment_with_maps(flair, t1, threshold, min_voxels, min_volume_mm3, grow)[0]

    def segment_with_maps(self, flair: sitk.Image, t1: sitk.Image | None = None, threshold: float = 0.5,
                          min_voxels: int = 3, min_volume_mm3: float = 10.0,
                          grow: float | None = THIN_SLICE_GROW
                          ) -> tuple[SegmentationResult, dict[str, np.ndarray]]:
        """Like :meth:`segment`, also returning the boolean anatomy maps on the source grid."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        prep = pp.prepare(flair, t1)
        timings["preprocess"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = self.predict_grid(prep)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        timings["inference"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        prob, anatomy = self.to_source(prep, out)
        labels, lesions, summary = analyse(prob, prep.source, anatomy, threshold, min_voxels, min_volume_mm3,
                                           grow=grow)
        timings["postprocess"] = time.perf_counter() - t0
        sp = prep.source.GetSpacing()
        log.info("segmented: %d lesions, %.1f mm3, %s", len(lesions), summary.total_volume_mm3,
                 {k: round(v, 2) for k, v in timings.items()})
        return SegmentationResult(labels=labels, probability=prob, lesions=lesions, summary=summary,
                                  model_name=self.model_name, model_version=self.model_version,
                                  spacing_mm=(float(sp[0]), float(sp[1]), float(sp[2])),
                                  timings_s=timings), anatomy

    @staticmethod
    def brain_mask(brain_prob: np.ndarray, spacing_xyz) -> np.ndarray:
        """Clean brain mask on the model grid: threshold 0.5, open (erode 3 mm / dilate), keep the
        largest 3D component, fill holes per axial slice. Detaches scalp, neck and vertex pieces
        that the brain channel may leave on raw (skull-on) images."""
        full = brain_prob >= 0.5
        if not full.any():
            return full
        box = work_box(full, 1)  # every step below gives inside this box what it gives on the whole grid
        m = full[box]
        r = [max(1, int(round(3.0 / s))) for s in spacing_xyz[::-1]]  # (z, y, x) radii in voxels
        r[0] = min(r[0], 1)
        st = np.zeros([2 * v + 1 for v in r], bool)
        zz, yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
        st[(zz / max(r[0], 1)) ** 2 + (yy / r[1]) ** 2 + (xx / r[2]) ** 2 <= 1.0] = True
        core = ndi.binary_erosion(m, st)
        lab, n = ndi.label(core)
        if n > 1:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            core = lab == int(sizes.argmax())
        elif n == 0:
            return full
        out = np.zeros_like(full)
        out[box] = ndi.binary_dilation(core, st) & m
        return fill_holes_per_slice(out)

    def to_source(self, prep: pp.Prepared, out: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Map model outputs to the source grid: lesion probability + boolean anatomy maps.

        Ventricles = model channel (components >= 300 mm3); when it finds < 5 mL the CSF-dark
        fallback :func:`_dark_ventricles` is added.
        The lesion probability is gated by the cleaned brain mask (:meth:`brain_mask`, dilated by
        2 voxels) when that mask is plausible (> 200 mL), which removes false positives in scalp,
        skull and neck.
        """
        brain_g = self.brain_mask(out[1], prep.grid.GetSpacing())
        lesion = out[0]
        vox = float(np.prod(prep.grid.GetSpacing()))
        if brain_g.sum() * vox > 200_000:
            gate = np.zeros_like(brain_g)
            box = work_box(brain_g, 2)  # a dilation by 2 stays inside
            gate[box] = ndi.binary_dilation(brain_g[box], iterations=2)
            lesion = lesion * gate
            lesion = drop_scalp_lesions(lesion, prep.flair, brain_g, prep.grid.GetSpacing())
        prob = np.clip(prep.to_source(lesion), 0.0, 1.0).astype(np.float32)
        maps = {name: out[k] >= 0.5 for k, name in enumerate(OUTPUTS) if k > 1}
        maps["infratentorial"] = _infratentorial(maps["infratentorial"], brain_g)
        maps["ventricles"] = _drop_small(maps["ventricles"], 300.0 / vox)
        if maps["ventricles"].sum() * vox < 5000.0 and brain_g.sum() * vox > 200_000:
            maps["ventricles"] |= _dark_ventricles(prep.flair, brain_g, prep.grid.GetSpacing(), 300.0 / vox)
        anatomy = {name: prep.mask_to_source(m) for name, m in maps.items()}
        anatomy["brain"] = prep.mask_to_source(brain_g)
        return prob, anatomy


def slice_input(prep: pp.Prepared, context: int, multiple: int) -> np.ndarray:
    """The network input for every axial slice of the head crop, (Z, 2 (2 context + 1), Hp, Wp):
    FLAIR then T1 (zeros when absent) at the slice offsets -context..context (edge slices
    repeated), zero-padded in-plane to multiples of ``multiple``."""
    f = prep.flair[prep.crop]
    t = prep.t1[prep.crop] if prep.t1 is not None else np.zeros_like(f)
    Z, H, W = f.shape
    Hp, Wp = -(-H // multiple) * multiple, -(-W // multiple) * multiple
    n = 2 * context + 1
    x = np.zeros((Z, 2 * n, Hp, Wp), np.float32)
    for k, o in enumerate(range(-context, context + 1)):
        zi = np.clip(np.arange(Z) + o, 0, Z - 1)
        x[:, k, :H, :W] = f[zi]
        x[:, n + k, :H, :W] = t[zi]
    return x


def mirror_images(xb: torch.Tensor, width: int) -> torch.Tensor:
    """The left-right mirror images of a batch of :func:`slice_input` slices (B, C, Hp, Wp) whose
    images are ``width`` pixels wide: those columns flipped, the zero padding kept on the right."""
    return torch.nn.functional.pad(torch.flip(xb[..., :width], (-1,)), (0, xb.shape[-1] - width))


#: lesions reaching within this distance (mm, in-plane) of the skin are dropped on images with a
#: skull (:func:`drop_scalp_lesions`)
SCALP_BAND_MM = 8.0


def head_mask(flair: np.ndarray) -> np.ndarray:
    """The head (skin and everything inside it) on the model grid: foreground, closed and
    hole-filled per axial slice."""
    st = np.zeros((3, 3, 3), bool)
    st[1] = True
    fg = pp.foreground_mask(flair)
    box = work_box(fg, 3)  # the closing reaches 2 voxels in-plane: beyond that it is zero, as past the box
    closed = np.zeros_like(fg)
    closed[box] = ndi.binary_closing(fg[box], st, iterations=2)
    return fill_holes_per_slice(closed)


def drop_scalp_lesions(lesion: np.ndarray, flair: np.ndarray, brain: np.ndarray, spacing_xyz,
                       band_mm: float = SCALP_BAND_MM, skull_ratio: float = 0.85) -> np.ndarray:
    """Zero the lesion candidates (probability >= 0.5, 26-connected) that reach within ``band_mm``
    (in-plane) of the outer surface of the head, on images that have a skull.

    Scalp, skull and CSF lie between the skin and the cortex (about 10 mm or more in adults), so
    nothing that close to the skin is brain; on raw clinical FLAIR the brain channel can leak into
    temporal muscle and scalp, and bright spots there would otherwise pass the brain gate. An
    image counts as having a skull when the brain mask covers less than ``skull_ratio`` of the
    head; on skull-stripped images (head = brain) nothing is dropped, since there the head's
    surface is the cortex.
    """
    head = head_mask(flair)
    nb = int(brain.sum())
    if nb == 0 or nb >= skull_ratio * int(head.sum()):
        return lesion
    seed = lesion >= 0.5
    cbox = work_box(seed, 0)
    cand, n = ndi.label(seed[cbox], STRUCT26)
    if n == 0:
        return lesion
    sy, sx = spacing_xyz[1], spacing_xyz[0]
    # the in-plane distance to the nearest voxel outside the head, computed inside the head's box
    # grown by one voxel: its rim is outside the head, and nearer than anything beyond it
    hbox = work_box(head, 1)[1:]
    near = np.zeros(n + 1, bool)
    for zc in np.nonzero(cand.any((1, 2)))[0]:
        d = np.zeros(head.shape[1:])
        d[hbox] = ndi.distance_transform_edt(head[cbox[0].start + zc][hbox], sampling=(sy, sx))
        c = cand[zc]
        near[np.unique(c[(c > 0) & (d[cbox[1:]] <= band_mm)])] = True
    near[0] = False
    if not near.any():
        return lesion
    log.info("dropped %d lesion candidates within %.0f mm of the skin (scalp, not brain)", int(near.sum()), band_mm)
    drop = np.zeros(lesion.shape, bool)
    drop[cbox] = near[cand]
    return np.where(drop, 0.0, lesion).astype(lesion.dtype, copy=False)


def _dark_ventricles(flair: np.ndarray, brain: np.ndarray, spacing_xyz, min_voxels: float) -> np.ndarray:
    """Fallback when the ventricle channel finds < 5 mL (implausible for an adult brain):
    CSF-dark voxels (normalised FLAIR < 0.4) at least 20 mm inside the brain mask in-plane,
    in the middle 60 % of the brain's slices, components >= 300 mm3."""
    zs = np.nonzero(brain.any((1, 2)))[0]
    out = np.zeros_like(brain)
    if zs.size == 0:
        return out
    r = [max(1, int(round(20.0 / s))) for s in spacing_xyz[:2]]
    z0, z1 = int(zs[0] + 0.3 * (zs[-1] - zs[0])), int(zs[0] + 0.9 * (zs[-1] - zs[0])) + 1
    for z in range(z0, z1):
        if brain[z].any():
            inner = ndi.binary_erosion(brain[z], np.ones((2 * r[1] + 1, 2 * r[0] + 1), bool))
            out[z] = inner & (flair[z] < 0.4)
    return _drop_small(out, min_voxels)


def _drop_small(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    """Remove 26-connected components smaller than ``min_voxels``."""
    box = work_box(mask, 0)
    lab, n = ndi.label(mask[box], np.ones((3, 3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    out = np.zeros_like(mask)
    out[box] = keep[lab]
    return out


def _infratentorial(mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Largest component of the predicted infratentorial map, kept only when its centroid lies in
    the inferior half of the brain (removes spurious islands, e.g. at the vertex)."""
    box = work_box(mask, 0)
    lab, n = ndi.label(mask[box], np.ones((3, 3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    m = np.zeros_like(mask)
    m[box] = lab == int(sizes.argmax())
    zs = np.nonzero(brain.any((1, 2)))[0]
    if zs.size and np.nonzero(m.any((1, 2)))[0].mean() > 0.5 * (zs[0] + zs[-1]):
        return np.zeros_like(mask)
    return fill_holes_per_slice(m)  # lesions inside the cerebellum/brainstem are holes: fill them


#: 4-connectivity within an axial slice, none across slices
_INPLANE4 = np.zeros((3, 3, 3), bool)
_INPLANE4[1] = ndi.generate_binary_structure(2, 1)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` on every axial slice (z, y, x), in one labelling pass.

    A hole is a background region (4-connected within its slice) that does not reach the
    slice's border; the result equals filling each slice separately.
    """
    box = work_box(mask, 1)  # its rim is background joined to everything outside the box
    m = mask[box]
    out = mask.copy()
    lab, n = ndi.label(~m, _INPLANE4)
    if n == 0:
        return out
    outside = np.zeros(n + 1, bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        outside[edge] = True
    outside[0] = True  # label 0 is the mask itself
    out[box] = m | ~outside[lab]
    return out
