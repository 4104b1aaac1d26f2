"""What the Storage SCP hands the index: an instance record, a series' routing header summary
and its reliably expected size, and each instance's routing header: the elements that
classification and routing read, kept at receipt (plain data, no database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["InstanceRecord", "SeriesTouch", "HEADER_KEYWORDS", "ENHANCED_SOP_CLASSES",
           "extract_header", "expected_count", "KEPT_TAGS", "keeps_element", "pack_routing_header",
           "routing_header"]

#: Attributes kept per series (from its first instance) for routing, status and debugging.
HEADER_KEYWORDS = (
    "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
    "SeriesDescription", "ProtocolName", "SeriesNumber", "StudyDescription", "BodyPartExamined",
    "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "EchoTrainLength",
    "ScanningSequence", "SequenceVariant", "ScanOptions", "SequenceName", "PulseSequenceName",
    "ImageType", "MRAcquisitionType", "AcquisitionContrast", "NumberOfFrames",
    "ImagesInAcquisition", "NumberOfTemporalPositions", "AcquisitionNumber",
    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "Rows", "Columns", "FrameOfReferenceUID", "ContrastBolusAgent",
)

#: Multi-frame MR SOP classes (one object can hold a whole volume).
ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
}

#: Top-level attributes the classifier (:mod:`dicom_node.route.classify`) reads, besides
#: :data:`HEADER_KEYWORDS`; the functional group sequences of Enhanced MR objects are kept whole.
CLASSIFY_KEYWORDS = (
    "SpecificCharacterSet", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
    "InstanceNumber", "EchoPulseSequence", "EchoPlanarPulseSequence", "DiffusionBValue",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
)
#: Private groups the classifier reads (:mod:`dicom_node.route.classify.vendor`): the low byte
#: of each element read, in any private block; the group's private creators are kept too.
PRIVATE_ELEMENTS = {0x0019: frozenset((0x0C, 0x9C, 0x9E)), 0x0021: frozenset((0x77,)),
                    0x0043: frozenset((0x39,)), 0x2001: frozenset((0x03, 0x20))}


def _tags(keywords: tuple[str, ...]) -> frozenset[int]:
    from pydicom.datadict import tag_for_keyword

    return frozenset(int(t) for t in map(tag_for_keyword, keywords) if t is not None)


def _kept_tags() -> frozenset[int]:
    out = set(_tags(HEADER_KEYWORDS + CLASSIFY_KEYWORDS))
    for group, offsets in PRIVATE_ELEMENTS.items():
        out.update(group << 16 | block for block in range(0x10, 0x100))  # private creators
        out.update(group << 16 | block << 8 | offset for block in range(0x10, 0x100)
                   for offset in offsets)
    return frozenset(out)


#: The top-level tags an instance's routing header keeps: :data:`HEADER_KEYWORDS`,
#: :data:`CLASSIFY_KEYWORDS`, the private creators of the groups in :data:`PRIVATE_ELEMENTS` and
#: the elements read there (a set: the SCP tests every top-level element of every instance).
KEPT_TAGS = _kept_tags()


def keeps_element(tag: int) -> bool:
    """Whether an instance's routing header keeps the top-level element ``tag``
    (:data:`KEPT_TAGS`). Classifying the routing headers of a series gives what classifying its
    whole headers gives; a routing condition on a tag kept reads the same value
    (``tests/test_routing_header.py``).
    """
    return tag in KEPT_TAGS


def pack_routing_header(elements: bytes, implicit_vr: bool, little_endian: bool) -> bytes:
    """The stored form of a routing header: one byte saying how ``elements`` (a dataset
    fragment, see :func:`dicom_node.receive.structure.walk_dataset`) is encoded, then them."""
    return bytes((int(implicit_vr) | int(little_endian) << 1,)) + elements


def routing_header(blob: bytes) -> Any:
    """The :class:`pydicom.dataset.Dataset` of a stored routing header (its values decoded
    by pydicom on access, as when the file is read)."""
    from io import BytesIO

    from pydicom.filereader import read_dataset

    flags = blob[0]
    return read_dataset(BytesIO(blob[1:]), bool(flags & 1), bool(flags & 2))


def _jsonable(value: Any) -> Any:
    """Convert a pydicom element value into plain JSON types."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import IS, DSdecimal, DSfloat, PersonName

    if value is None:
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, PersonName):
        return None  # never keep names
    if isinstance(value, (DSfloat, DSdecimal, float)):
        return float(value)
    if isinstance(value, (IS, int)):
        return int(value)
    if isinstance(value, bytes):
        return None
    return str(value)


def extract_header(ds: Any) -> dict[str, Any]:
    """Compact JSON-able dict of :data:`HEADER_KEYWORDS` present in ``ds`` (top level only).

    Values that cannot be decoded are skipped. Patient names are never included.
    """
    out: dict[str, Any] = {}
    for kw in HEADER_KEYWORDS:
        try:
            v = ds.get(kw)
        except Exception:  # noqa: BLE001 - malformed element: skip it
            continue
        if v is None or v == "":
            continue
        try:
            j = _jsonable(v)
        except Exception:  # noqa: BLE001
            continue
        if j is not None and j != "" and j != []:
            out[kw] = j
    return out


def expected_count(header: dict[str, Any]) -> tuple[int | None, str | None]:
    """Reliable expected number of instances of a series, from its first instance header.

    Returns ``(count, reason)`` or ``(None, None)`` when the header does not say reliably.

    * An Enhanced (multi-frame) MR object of a 3D acquisition is the whole series (``1``).
      2D/functional enhanced series (one object per volume) are left to the quiet timer.
    * ``ImagesInAcquisition`` (GE writes it for every series) when the series has a single
      acquisition.
    """
    sop = header.get("SOPClassUID")
    if sop in ENHANCED_SOP_CLASSES:
        if header.get("MRAcquisitionType") == "3D" and int(header.get("NumberOfFrames") or 0) > 1:
            return 1, "enhanced-3d"
        return None, None
    n = header.get("ImagesInAcquisition")
    if isinstance(n, int) and n > 0:
        return n, "images-in-acquisition"
    return None, None


@dataclass
class InstanceRecord:
    """One received instance, queued for the index writer."""

    sop_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    sop_class_uid: str
    transfer_syntax: str
    instance_number: int | None
    path: str
    size: int
    received_at: float
    calling_ae: str
    calling_host: str
    status: str = "new"  # new | replaced
    header: dict[str, Any] | None = None  # first instance of a series in this process
    study_date: str | None = None
    #: :func:`pack_routing_header` of the instance (None: the file is read when needed)
    routing_header: bytes | None = None


@dataclass
class SeriesTouch:
    """What the writer reports per series after a batch commit."""

    series_uid: str
    study_uid: str
    state: str
    n_instances: int
    expected: int | None
    last_received_at: float
    reopened: bool = False
