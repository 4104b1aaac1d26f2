"""The classifier's answer for one series: :class:`SeriesInfo`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dicom_node.route.classify.vocabulary import Contrast


@dataclass
class SeriesInfo:
    """What the classifier derived for one series (or one acquisition of it).

    Attributes
    ----------
    contrast : str
        One of :class:`Contrast`. Only original acquisitions can be FLAIR or T1.
    dimensionality : str
        ``"2D"`` or ``"3D"``.
    derived : bool
        ImageType/FrameType value 1 is DERIVED on any instance.
    orientation : str
        ``AX``, ``SAG``, ``COR``, ``OBL``, ``MIXED`` (several orientations) or ``""``
        when no geometry is present.
    n_images : int
        Number of 2D images (frames of multi-frame objects counted; a mosaic counts
        as one image).
    reasons : list of str
        Human-readable evidence, in decision order.
    modality : str
        Modality (0008,0060), ``""`` when absent.
    is_image : bool
        False for SR, SEG, RT objects, spectroscopy, presentation states, unreadable.
    weighting : str
        Contrast from the acquisition physics before the derived/reformat override
        (e.g. a T1 MPR reformat has ``weighting="T1"`` and ``contrast="OTHER"``).
    n_instances : int
        Number of distinct SOP instances.
    n_acquisitions : int
        Number of acquisitions found under the SeriesInstanceUID (> 1: mixed).
    flags : list of str
        Machine-readable notes: ``mixed-acquisitions``, ``mosaic``, ``enhanced``,
        ``reformat``, ``parametric-map``, ``phase``, ``description-conflict``,
        ``no-physics``, ``corrupt``.
    """

    contrast: Contrast = Contrast.UNKNOWN
    dimensionality: str = "2D"
    derived: bool = False
    orientation: str = ""
    n_images: int = 0
    reasons: list[str] = field(default_factory=list)
    modality: str = ""
    is_image: bool = False
    weighting: Contrast = Contrast.UNKNOWN
    n_instances: int = 0
    n_acquisitions: int = 1
    flags: list[str] = field(default_factory=list)
    series_uid: str = ""
    manufacturer: str = ""
    repetition_time: float | None = None
    echo_time: float | None = None
    inversion_time: float | None = None
    slice_thickness: float | None = None
    b_value_max: float | None = None

    def __post_init__(self) -> None:
        self.contrast = Contrast(self.contrast)  # also from JSON (the index keeps SeriesInfo as JSON)
        self.weighting = Contrast(self.weighting)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return asdict(self)

    def get(self, name: str, default: Any = None) -> Any:
        """Attribute access by name (used by routing conditions)."""
        return getattr(self, name, default)
