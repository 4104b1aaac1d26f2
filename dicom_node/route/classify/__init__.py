"""Vendor-agnostic MR series classification from DICOM headers (the rules are in :mod:`.decision`).

Modules: :mod:`.vocabulary` (SOP classes, tokens, name patterns), :mod:`.values` (robust header
values), :mod:`.vendor` (private tags), :mod:`.evidence` (what the headers say),
:mod:`.acquisitions` (several acquisitions under one UID), :mod:`.decision` (the classifier),
:mod:`.info` (its answer).
"""

from dicom_node.route.classify.acquisitions import split_acquisitions
from dicom_node.route.classify.decision import classify_series
from dicom_node.route.classify.info import SeriesInfo
from dicom_node.route.classify.vocabulary import CONTRASTS, Contrast

__all__ = ["CONTRASTS", "Contrast", "SeriesInfo", "classify_series", "split_acquisitions"]
