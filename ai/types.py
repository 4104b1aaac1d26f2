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


@dataclass
class Lesion:
    """One connected lesion component on the source FLAIR grid."""

    id: int  #: 1-based label value in :attr:`SegmentationResult.labels`
    voxels: int
    volume_mm3: float
    centroid_index: tuple[float, float, float]  #: (z, y, x) voxel index
    centroid_mm: tuple[float, float, float]  #: physical LPS (x, y, z) in mm
    bbox_index: tuple[int, int, int, int, int, int]  #: (z0, y0, x0, z1, y1, x1), end exclusive
    mean_probability: float
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
