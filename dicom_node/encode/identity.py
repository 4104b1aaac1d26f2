"""What the node writes to identify its own objects: manufacturer, model name, research note and
the SR's series description.

Plain values with no imports, so that the node process (which does not import the encoders) can
recognise its own reports in the PACS (:mod:`dicom_node.retrieve.prior`) by the same values the
encoders write (:mod:`dicom_node.encode.seg`, :mod:`~dicom_node.encode.sr`,
:mod:`~dicom_node.encode.overlay`).
"""

__all__ = ["MANUFACTURER", "MODEL_NAME", "RESEARCH_NOTE", "SR_DESCRIPTION"]

MANUFACTURER = "ms-dicom-node"
MODEL_NAME = "MS lesion AI node"
RESEARCH_NOTE = "RESEARCH USE ONLY"
#: the SR series' description starts with this (``"MS lesion report - RESEARCH USE ONLY"``)
SR_DESCRIPTION = "MS lesion report"
