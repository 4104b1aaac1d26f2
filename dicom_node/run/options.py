"""The pipeline's options, each default held once: lesion threshold and sizes, SEG kind, TTA, precision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ai.types import THIN_SLICE_GROW

__all__ = ["PipelineOptions", "Precision"]

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class PipelineOptions:
    """Options of a job's pipeline run; node.yaml's ``runner`` section takes its defaults from here.

    Attributes
    ----------
    threshold : float
        Lesion probability cut-off.
    min_voxels : int
        Connected components with fewer voxels are dropped...
    min_volume_mm3 : float
        ...and so are smaller volumes.
    thin_slice_grow : float or None
        On thin-slice series (3D FLAIR: every spacing <= 1.5 mm), lesions found at ``threshold``
        are drawn to the connected voxels whose probability is at least this
        (:func:`ai.lesions.lesion_mask`; why, in the model card); None: the plain threshold.
    fractional : bool
        Also send the probability map as a FRACTIONAL SEG.
    overlay : bool
        Build the overlay series (a follow-up step after SEG and SR are sent).
    weights : str or None
        Model weights file; None: the shipped model (``ai/weights/ms_unet.pt``).
    tta : bool
        Average with the left-right mirror image (2x model cost, fewer false positives).
    precision : {"auto", "fp32", "bf16"}
        ``auto``: bf16 on CPUs that have it natively, else fp32; fp16 on CUDA.
    """

    threshold: float = 0.5
    min_voxels: int = 3
    min_volume_mm3: float = 10.0
    thin_slice_grow: float | None = THIN_SLICE_GROW
    fractional: bool = False
    overlay: bool = True
    weights: str | None = None
    tta: bool = True
    precision: Precision = "auto"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the worker process's payload)."""
        return asdict(self)

    def lesion_rule(self) -> dict[str, Any]:
        """The options that decide which voxels are lesion (what a result records, so that a
        prior is reused only when it was cut out the same way)."""
        return {"threshold": self.threshold, "min_voxels": self.min_voxels,
                "min_volume_mm3": self.min_volume_mm3, "thin_slice_grow": self.thin_slice_grow}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> PipelineOptions:
        """Options from a payload; absent keys take the defaults.

        Raises
        ------
        ValueError
            A key that is not an option (a typo would otherwise be ignored silently).
        """
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown pipeline option(s): {', '.join(unknown)}")
        return cls(**values)
