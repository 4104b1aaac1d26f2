"""DICOM Segmentation of the lesion change since the patient's prior study.

The comparison itself (:class:`ai.types.ChangeReport`) is made elsewhere; this module encodes
its ``change_map`` (on the follow-up FLAIR grid) as a BINARY DICOM-SEG, series 905
"MS lesion change - RESEARCH USE ONLY", one segment per change class present, numbered as
:data:`ai.types.CHANGE_LABELS` among the classes present:

===========  =================================================================  ===========
label        what the segment holds (Segment Description)                       colour
===========  =================================================================  ===========
New          follow-up lesion voxels of lesions absent in the prior study       magenta
Enlarging    voxels a lesion gained since the prior (outside the prior lesion)  orange
Stable       follow-up lesion voxels that were lesion in the prior as well      red
Shrinking    prior lesion voxels that are no longer lesion (shrinking or        cyan
             vanished lesions)
===========  =================================================================  ===========

Every segment has category SCT 49755003 "Morphologically abnormal structure", type SCT 52988006
"Lesion" and region SCT 12738006 "Brain", like the lesion SEG (there are no standard codes for
a change class; it is in the segment label, tracking identifier and description). The display
colours are those of the overlay (:data:`dicom_node.encode.render.CHANGE_RGB`).

No SEG is written (``None``) when the report is not comparable or its map holds no change
class: a SEG without segments is invalid.
"""
from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from ai.types import CHANGE_ENLARGING, CHANGE_LABELS, CHANGE_NEW, CHANGE_SHRINKING, CHANGE_STABLE, ChangeReport
from dicom_node.encode.render import CHANGE_RGB
from dicom_node.encode.seg import (
    RESEARCH_NOTE,
    _algorithm,
    _check_grid,
    lesion_segment,
    prepare_source,
    write_segmentation,
)
from dicom_node.encode.uids import change_key, derive_uid
from dicom_node.run.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["build_change_seg", "CHANGE_SEGMENT_TEXT", "CHANGE_SERIES_NUMBER"]

CHANGE_SERIES_NUMBER = 905

#: Segment Description (0062,0006) of each change class (keys: :data:`ai.types.CHANGE_LABELS`).
CHANGE_SEGMENT_TEXT: dict[int, str] = {
    CHANGE_NEW: "New MS lesion: follow-up lesion with no lesion in the prior study",
    CHANGE_ENLARGING: "Enlarging MS lesion: part gained since the prior study",
    CHANGE_STABLE: "Stable MS lesion: follow-up lesion voxels that were lesion in the prior study",
    CHANGE_SHRINKING: "Shrinking or vanished MS lesion: prior lesion voxels no longer lesion",
}


def build_change_seg(
    change: ChangeReport,
    flair: Volume,
    *,
    job_key: str,
    model_name: str,
    model_version: str,
    series_number: int = CHANGE_SERIES_NUMBER,
) -> Dataset | None:
    """Encode ``change.change_map`` as a BINARY DICOM Segmentation on the follow-up FLAIR.

    Parameters
    ----------
    change
        A comparison; its ``change_map`` ``(z, y, x)`` lies on ``flair.image``'s grid and holds
        0 or one of :data:`ai.types.CHANGE_LABELS`'s keys.
    flair
        The follow-up FLAIR volume (its datasets are referenced frame by frame).
    job_key
        Seed of the deterministic UIDs (with the prior mixed in, see
        :func:`dicom_node.encode.uids.change_key`).
    model_name, model_version
        The segmenter (algorithm identification of every segment).
    series_number
        Default 905 (901 lesion SEG, 902 SR, 903/904 overlay).

    Returns
    -------
    pydicom.Dataset or None
        ``highdicom.seg.Segmentation`` with one segment per change class present (segment
        numbers 1.. in New, Enlarging, Stable, Shrinking order); ``None`` when ``change`` is
        not comparable, has no map, or the map is empty.
    """
    if not change.comparable or change.change_map is None:
        return None
    cmap = np.asarray(change.change_map)
    _check_grid(cmap, flair)
    present = [c for c in CHANGE_LABELS if (cmap == c).any()]
    if not present:
        log.info("no change classes in the map: no change SEG written")
        return None
    prepare_source(flair)
    key = change_key(job_key, change)
    algo = _algorithm(model_name, model_version)
    descriptions = []
    for n, c in enumerate(present, start=1):
        desc = lesion_segment(n, f"{CHANGE_LABELS[c]} MS lesions", algo,
                              tracking_uid=derive_uid(key, "change-segment", str(c)), rgb=CHANGE_RGB[c])
        desc.SegmentDescription = CHANGE_SEGMENT_TEXT[c]
        descriptions.append(desc)
    stack = np.stack([(cmap == c).astype(np.uint8) for c in present], axis=-1)
    return write_segmentation(
        flair, stack, descriptions, seg_type=hd.seg.SegmentationTypeValues.BINARY,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_uid=derive_uid(key, "change-seg-series"), sop_uid=derive_uid(key, "change-seg"),
        series_number=series_number,
        content_description=f"MS lesion change since prior ({RESEARCH_NOTE})",
        content_label="MS_LESION_CHANGE",
        series_description=f"MS lesion change - {RESEARCH_NOTE}",
    )
