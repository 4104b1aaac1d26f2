"""Vendor-agnostic MR series classification from DICOM headers (see :mod:`.decision`)."""

from dicom_node.route.classify.decision import CONTRASTS, SeriesInfo, classify_series, split_acquisitions

__all__ = ["CONTRASTS", "SeriesInfo", "classify_series", "split_acquisitions"]
