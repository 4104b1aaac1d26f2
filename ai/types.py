"""Plain result objects shared between the AI engine and the DICOM encoders.

These are the contract between ``ai/`` (which produces them) and ``dicom_node/encode`` (which
turns them into DICOM-SEG, TID 1500 SR and overlay images). Arrays are numpy, indexed
``(z, y, x)`` exactly like ``SimpleITK.GetArrayFromImage`` of the *original* FLAIR image that was
given to the segmenter, so slice ``k`` of every array is slice ``k`` of the source volume.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Location classes, in the order used for segment numbers in the DICOM-SEG (1-based).
LOCATIONS: tuple[str, ...] = (
    "periventricular",
    "juxtacortical",
    "infratentorial",
    "deep_white_matter",
)

#: Human-readable names of the location classes.
LOCATION_LABELS: dict[str, str] = {
    "periventricular": "Periventricular",
    "juxtacortical": "Juxtacortical/cortical",
    "infratentorial": "Infratentorial",
    "deep_white_matter": "Deep white matter",
}


#: thin-slice grids (3D acquisitions: every spacing <= THIN_SLICE_MM) grow each lesion seeded at
#: the threshold into the 26-connected voxels whose probability is >= THIN_SLICE_GROW
#: (:func:`ai.lesions.lesion_mask`). Measured on patient19 with weights that never saw its
#: lesion labels (model card, "Since stage 12: where the lesion boundary is drawn on 3D series"):
#: the 3D site's lesions are fainter than the clinical site's and a plain 0.5 cut drew them too
#: small (Dice 0.571 -> 0.655 grown, lesion F1 0.475 -> 0.486); on the thick-slice clinical site
#: a lower cut over-calls (Dice 0.6998 at 0.5, 0.687 at 0.3), so it keeps the cut. Held here, with
#: the other result vocabulary, so that the node's options take the default without importing
#: the image maths.
THIN_SLICE_MM = 1.5
THIN_SLICE_GROW = 0.3

#: how ``ai train`` takes the lesion channel's soft Dice (``ai.train.loss_fn``); here, torch-free,
#: so that the command line offers the same choices without importing torch
LESION_DICE = ("batch", "image", "both")

#: what the shipped model misses, said in every report (the SR's Comment and the summary image):
#: measured on patients the weights never trained on (model card, "Cross-patient validation":
#: ``by_size``; ``bench/small_lesions.py``): of the reference lesions under 50 mm3 the stage-14
#: fold weights find 15 and 9 of 43 on the 3D site (folds A' and A; stage 13: 14 and 9) and 3 of 23
#: on the clinical 2D site (stage 13: 3); most of the missed 3D ones are juxtacortical. Small
#: lesions decide a count, dissemination in space and "new disease activity", so a negative there
#: is not a negative.
DETECTION_LIMITS = (
    "Detection limits: lesions under 50 mm3 are often missed (on patients the model never saw, a fifth "
    "to a third found on 3D FLAIR, 1 in 8 on 2D clinical FLAIR; most missed 3D ones juxtacortical). A "
    "low count, 'dissemination in space: not met' or 'no new lesions' does not exclude them.")
#: the same in one line of the summary image
DETECTION_LIMITS_SHORT = ("Lesions under 50 mm3 are often missed: 'DIS not met' or 'no new lesions' "
                          "does not exclude them.")


@dataclass
class Lesion:
    """One connected lesion component on the source FLAIR grid."""

    id: int  #: 1-based label value in :attr:`SegmentationResult.labels`
    voxels: int
    volume_mm3: float
    centroid_index: tuple[float, float, float]  #: (z, y, x) voxel index
    centroid_mm: tuple[float, float, float]  #: physical LPS (x, y, z) in mm
    bbox_index: tuple[int, int, int, int, int, int]  #: (z0, y0, x0, z1, y1, x1), end exclusive
    mean_probability: float  #: mean lesion probability over its voxels at or above the threshold
    size_class: str  #: "small" (<100 mm3), "medium" (<1000 mm3) or "large"
    location: str  #: one of :data:`LOCATIONS`
    max_probability: float = 1.0  #: highest lesion probability inside the lesion

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StudySummary:
    """Study-level lesion load."""

    lesion_count: int
    total_volume_mm3: float
    counts_by_location: dict[str, int]
    volume_by_location_mm3: dict[str, float]
    load_category: str  #: "none", "low", "moderate", "high" (see ai.lesions for thresholds)
    dis_areas: list[str]  #: McDonald 2017 brain areas with >= 1 lesion
    dis_met: bool  #: dissemination in space on brain MRI (>= 1 lesion in >= 2 areas)
    low_confidence_count: int = 0  #: lesions whose mean probability is below ``confidence_cut``
    confidence_cut: float = 0.0  #: the cut (see ai.lesions.LOW_CONFIDENCE and the model card)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SegmentationResult:
    """Everything the encoders need, on the source FLAIR grid."""

    labels: np.ndarray  #: uint16 (z, y, x), 0 = background, k = Lesion.id
    probability: np.ndarray  #: float32 (z, y, x) in [0, 1]
    lesions: list[Lesion]
    summary: StudySummary
    model_name: str
    model_version: str  #: SHA-256 of the weights file
    spacing_mm: tuple[float, float, float]  #: (x, y, z) spacing of the source grid
    timings_s: dict[str, float] = field(default_factory=dict)

    def location_mask(self, location: str) -> np.ndarray:
        """Boolean (z, y, x) mask of all lesions of one location class."""
        ids = [les.id for les in self.lesions if les.location == location]
        return np.isin(self.labels, ids) if ids else np.zeros(self.labels.shape, bool)


#: Lesion change statuses. A follow-up lesion is new, enlarging or stable; a prior lesion that
#: no follow-up lesion continues is vanished, one that lost volume beyond the rule is shrinking.
CHANGE_STATUSES: tuple[str, ...] = ("new", "enlarging", "stable", "shrinking", "vanished")

#: Values of :attr:`ChangeReport.change_map` (follow-up grid); also the DICOM-SEG segment
#: numbers of the change SEG for the segments present.
CHANGE_NEW, CHANGE_ENLARGING, CHANGE_STABLE, CHANGE_SHRINKING = 1, 2, 3, 4
CHANGE_LABELS: dict[int, str] = {CHANGE_NEW: "New", CHANGE_ENLARGING: "Enlarging",
                                 CHANGE_STABLE: "Stable", CHANGE_SHRINKING: "Shrinking"}


@dataclass
class LesionChange:
    """One lesion's change between the prior and the follow-up study.

    Follow-up lesions (``timepoint == "follow-up"``, ``lesion_id`` = :attr:`Lesion.id` of the
    follow-up result) are new, enlarging or stable; prior lesions with no continuing follow-up
    lesion or that shrank (``timepoint == "prior"``, ``lesion_id`` = the prior's lesion id) are
    vanished or shrinking."""

    lesion_id: int
    timepoint: str  #: "follow-up" or "prior"
    status: str  #: one of :data:`CHANGE_STATUSES`
    volume_now_mm3: float  #: follow-up volume (0 for a vanished prior lesion)
    volume_prior_mm3: float | None  #: matched prior volume (None for a new lesion)
    #: Tracking UID of the same lesion in the prior's report (reused so that viewers and
    #: registries link the two time points); None: a new lesion, which gets its own UID.
    tracking_uid: str | None = None
    tracking_id: str | None = None  #: the prior report's tracking identifier, e.g. "Lesion 3"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChangeReport:
    """The comparison of a follow-up study with the patient's prior study.

    ``comparable`` False: no change is reported, only ``reason`` (no prior found, another slice
    orientation, slice thickness beyond a factor 2, a registration that failed its check, ...);
    the single-study result stands alone."""

    comparable: bool
    reason: str = ""
    prior_study_uid: str = ""
    prior_study_date: str = ""  #: DICOM DA (YYYYMMDD), "" when unknown
    prior_accession: str = ""
    interval_days: int | None = None
    n_new: int = 0
    n_enlarging: int = 0
    n_shrinking: int = 0
    n_vanished: int = 0
    total_volume_prior_mm3: float = 0.0
    total_volume_now_mm3: float = 0.0
    activity: bool = False  #: new disease activity: >= 1 new or enlarging lesion
    registration_head_dice: float | None = None
    prior_reused: bool = False  #: the prior's lesions came from the node's own earlier result
    lesions: list[LesionChange] = field(default_factory=list)
    #: uint8 (z, y, x) on the follow-up FLAIR grid: CHANGE_NEW / _ENLARGING (growth outside the
    #: prior lesion) / _STABLE / _SHRINKING (prior lesion voxels no longer lesion); None when
    #: not comparable.
    change_map: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("change_map")
        return d
