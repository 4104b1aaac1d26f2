"""dicom_node.receive.headerscan: the SCP's raw header scan gives pydicom's values, or declines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from dicom_factory import make_mr_series
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.sequence import Sequence
from pydicom.uid import UID

from dicom_node.receive.headerscan import WANTED, scan_header
from dicom_node.receive.scp import _after_instance_number


def pydicom_values(raw: bytes, implicit: bool, little: bool = True) -> dict:
    """What the SCP read with pydicom before (read_dataset up to InstanceNumber)."""
    ds = read_dataset(io.BytesIO(raw), implicit, little, stop_when=_after_instance_number)
    out = {}
    for kw in WANTED:
        v = ds.get(kw)
        if kw == "InstanceNumber":
            out[kw] = None if v in (None, "") else int(v)
        else:
            out[kw] = None if v is None else str(v)
    return out


def encode(ds: Dataset, implicit: bool) -> bytes:
    from pynetdicom.dsutils import encode as pn_encode

    ds = ds.copy()
    if hasattr(ds, "file_meta"):
        del ds.file_meta
    return pn_encode(ds, implicit, True)


def split_file(path: Path) -> tuple[bytes, UID] | None:
    b = path.read_bytes()
    fp = io.BytesIO(b)
    try:
        read_preamble(fp, False)
        ts = UID(_read_file_meta_info(fp).TransferSyntaxUID)
    except Exception:  # noqa: BLE001 - not a Part-10 file
        return None
    return b[fp.tell():], ts


def test_corpus_values_equal_pydicom(shared_dicom):
    n_ok = n_declined = 0
    for f in sorted(p for p in shared_dicom.rglob("*") if p.is_file()):
        parts = split_file(f)
        if parts is None or parts[1].is_deflated:
            continue
        raw, ts = parts
        got = scan_header(raw, ts.is_implicit_VR, ts.is_little_endian)
        if got is None:
            n_declined += 1
            continue
        assert got == pydicom_values(raw, ts.is_implicit_VR, ts.is_little_endian), f
        n_ok += 1
    assert n_ok > 500 and n_declined < n_ok / 50


def test_implicit_vr_and_nested_undefined_length_sequences():
    ds = make_mr_series(2, 8, 8)[1]
    inner = Dataset()
    inner.CodeValue = "X"
    inner.ConceptNameCodeSequence = Sequence([Dataset(), Dataset()])
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])  # (0008,1140), before the UIDs
    ds.PatientID = "  ID 7 "
    ds.InstanceNumber = "+12"
    for implicit in (False, True):
        for undefined in (False, True):
            for s in (ds.ReferencedImageSequence, item.PurposeOfReferenceCodeSequence,
                      inner.ConceptNameCodeSequence):
                s.is_undefined_length = undefined
                for it in s:
                    it.is_undefined_length_sequence_item = undefined
            raw = encode(ds, implicit)
            got = scan_header(raw, implicit)
            assert got is not None
            assert got == pydicom_values(raw, implicit)
            assert got["PatientID"] == "  ID 7" and got["InstanceNumber"] == 12


def test_absent_and_empty_values():
    ds = make_mr_series(1, 8, 8)[0]
    del ds.PatientID
    ds.StudyDate = ""
    ds.InstanceNumber = None
    raw = encode(ds, False)
    got = scan_header(raw, False)
    assert got == pydicom_values(raw, False)
    assert got["PatientID"] is None and got["StudyDate"] == "" and got["InstanceNumber"] is None


@pytest.mark.parametrize("change", [
    lambda ds: setattr(ds, "Modality", ["MR", "OT"]),  # multi-valued
    lambda ds: setattr(ds, "PatientID", "Ünïcode"),  # not ASCII: character set matters
    lambda ds: setattr(ds, "InstanceNumber", "1.0"),  # not a plain integer
])
def test_declines_what_pydicom_must_decode(change):
    ds = make_mr_series(1, 8, 8)[0]
    ds.SpecificCharacterSet = "ISO_IR 100"
    change(ds)
    assert scan_header(encode(ds, False), False) is None


def test_declines_damaged_or_unsupported_bytes():
    ds = make_mr_series(1, 8, 8)[0]
    raw = encode(ds, False)
    assert scan_header(raw, False) is not None
    assert scan_header(raw, False, little_endian=False) is None
    pos = raw.index(b"\x20\x00\x0d\x00")  # StudyInstanceUID header
    assert scan_header(raw[:pos + 10], False) is None  # value cut short
    bad_vr = raw[:pos + 4] + b"u1" + raw[pos + 6:]
    assert scan_header(bad_vr, False) is None
    seq = Dataset()
    seq.ReferencedImageSequence = Sequence([Dataset()])
    seq.ReferencedImageSequence.is_undefined_length = True
    cut = encode(seq, True)[:-8]  # sequence delimiter missing
    assert scan_header(cut, True) is None


# -- the whole-parse check for Explicit VR Big Endian and Deflated Explicit VR Little Endian ----
BIG_ENDIAN_FILE = "dcm_qa_ts/siemens_trio_vb17_epi_mosaic_9_transfer_syntaxes/3.dcm"
DEFLATED_FILE = "edge/pydicom_deflated_explicit_vr/image_dfl.dcm"


def _cuts(raw: bytes, around: int) -> list[int]:
    """40 cut points spread over the dataset, every byte of 12 after ``around``, the last byte."""
    return sorted({len(raw) * k // 41 for k in range(1, 41)}
                  | {around + k for k in range(1, 13) if around >= 0} | {len(raw) - 1})


@pytest.mark.parametrize("rel", [BIG_ENDIAN_FILE, DEFLATED_FILE], ids=["big-endian", "deflated"])
def test_whole_parse_check_refuses_every_cut_big_endian_and_deflated(shared_dicom, rel):
    """A real Siemens mosaic in Explicit VR Big Endian (the older check let 48 of these 52 cuts
    through as the first instance of a series, all 52 as a later one) and pydicom's deflated
    image: whole they pass, cut anywhere (inside private tags, the Pixel Data header, the
    deflate stream or its trailer) they are refused with a reason."""
    from dicom_node.receive.headerscan import check_structure

    parts = split_file(shared_dicom / rel)
    assert parts is not None
    raw, ts = parts
    assert ts.is_deflated or not ts.is_little_endian
    assert check_structure(raw, ts) is None
    pixel = raw.rfind(b"\x7f\xe0\x00\x10OW") if not ts.is_little_endian else -1
    assert ts.is_deflated or pixel > 0
    missed = [c for c in _cuts(raw, pixel) if check_structure(raw[:c], ts) is None]
    assert missed == [], f"{rel}: cuts at {missed} of {len(raw)} bytes pass"


def test_big_endian_pixel_data_is_measured_with_big_endian_values(shared_dicom):
    """Rows, Columns and Bits Allocated are read big-endian: Pixel Data that is whole as an
    element but shorter than the image needs is refused; the image as it is passes."""
    import struct

    from dicom_node.receive.headerscan import check_structure

    parts = split_file(shared_dicom / BIG_ENDIAN_FILE)
    assert parts is not None
    raw, ts = parts
    pos = raw.rfind(b"\x7f\xe0\x00\x10OW\x00\x00")
    (length,) = struct.unpack_from(">I", raw, pos + 8)
    assert pos + 12 + length == len(raw)
    short = raw[:pos + 8] + struct.pack(">I", length - 2048) + raw[pos + 12:-2048]
    assert "Pixel Data holds" in (check_structure(short, ts) or "")
    assert check_structure(raw, ts) is None


def test_deflated_stream_damage_and_size_bound(monkeypatch):
    import struct
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian as DEFLATED
    from pynetdicom.dsutils import encode as pn_encode

    from dicom_node.receive import headerscan, structure

    ds = make_mr_series(1, 32, 32)[0]
    del ds.file_meta
    plain = pn_encode(ds, False, True)
    assert plain is not None
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = deflate.compress(plain) + deflate.flush()
    assert headerscan.check_structure(raw, DEFLATED) is None
    assert headerscan.check_structure(raw + b"\0", DEFLATED) is None  # a pad byte
    gzip_trailer = struct.pack("<II", zlib.crc32(plain), len(plain))
    assert headerscan.check_structure(raw + gzip_trailer, DEFLATED) is None
    assert "after the end of the deflate stream" in (
        headerscan.check_structure(raw + gzip_trailer[:7], DEFLATED) or "")
    assert "after the end of the deflate stream" in (
        headerscan.check_structure(raw + b"\0junk\0", DEFLATED) or "")
    assert "ends inside its deflate stream" in (
        headerscan.check_structure(raw[:len(raw) // 2], DEFLATED) or "")
    assert "does not inflate" in (
        headerscan.check_structure(b"\xff" * 64, DEFLATED) or "")
    monkeypatch.setattr(structure, "MAX_INFLATED", 1024)  # the check lives in structure
    assert "inflates to more than 1024 bytes" in (
        headerscan.check_structure(raw, DEFLATED) or "")
