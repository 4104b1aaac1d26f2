"""Synthesise small, valid MR series with pydicom (for tests and bench; no real patient data).

Example::

    from tests.dicom_factory import make_mr_series, write_series
    dss = make_mr_series(20, 64, 64, contrast="FLAIR")           # list[Dataset], one per slice
    paths = write_series(dss, tmp_path / "flair")                # Part-10 files
    t1 = make_mr_series(20, 64, 64, contrast="T1", study_uid=dss[0].StudyInstanceUID)

Each contrast gets plausible acquisition physics (TR/TE/TI, ScanningSequence, SequenceVariant,
MRAcquisitionType, ImageType) so a physics-based classifier recognises it; the description is
the contrast name unless ``description`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

#: Acquisition physics per contrast: TR, TE, TI (ms), ScanningSequence, SequenceVariant, 2D/3D.
PHYSICS: dict[str, dict[str, Any]] = {
    "FLAIR": dict(RepetitionTime=5000.0, EchoTime=390.0, InversionTime=1800.0,
                  ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP", "MP"],
                  MRAcquisitionType="3D", SequenceName="*spcir_278ns"),
    "T1": dict(RepetitionTime=2300.0, EchoTime=2.3, InversionTime=900.0,
               ScanningSequence=["GR", "IR"], SequenceVariant=["SK", "SP", "MP"],
               MRAcquisitionType="3D", SequenceName="*tfl3d1_16ns"),
    "T2": dict(RepetitionTime=4000.0, EchoTime=100.0, ScanningSequence=["SE"],
               SequenceVariant=["SK", "SP"], MRAcquisitionType="2D", SequenceName="*tse2d1_15"),
}


def make_mr_series(
    n: int,
    rows: int = 64,
    cols: int = 64,
    *,
    contrast: str = "FLAIR",
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    description: str | None = None,
    patient_id: str = "FACTORY-001",
    patient_name: str = "FACTORY^TEST",
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    images_in_acquisition: bool = False,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> list[Dataset]:
    """Return ``n`` axial MR Image Storage datasets (one per slice) of one series.

    Parameters
    ----------
    n, rows, cols : int
        Number of slices and in-plane size.
    contrast : str
        Key of :data:`PHYSICS` (FLAIR, T1, T2).
    study_uid, series_uid : str, optional
        Generated when omitted.
    images_in_acquisition : bool
        Write ``ImagesInAcquisition = n`` (lets the node complete the series early).
    extra : dict, optional
        Additional keyword -> value set on every slice.
    """
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for_uid = generate_uid()
    rng = np.random.default_rng(seed)
    dz, dy, dx = spacing
    out = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = for_uid
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19800101"
        ds.PatientSex = "O"
        ds.StudyDate = "20240101"
        ds.StudyTime = "090000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Modality = "MR"
        ds.Manufacturer = "FACTORY"
        ds.MagneticFieldStrength = 3.0
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description if description is not None else contrast
        ds.ProtocolName = ds.SeriesDescription
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        for key, val in PHYSICS[contrast].items():
            setattr(ds, key, val)
        ds.FlipAngle = 120.0 if contrast != "T1" else 8.0
        ds.SliceThickness = dz
        ds.PixelSpacing = [dy, dx]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-cols * dx / 2, -rows * dy / 2, k * dz]
        ds.SliceLocation = k * dz
        if images_in_acquisition:
            ds.ImagesInAcquisition = n
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 4000, (rows, cols), dtype=np.uint16).tobytes()
        for key, val in (extra or {}).items():
            setattr(ds, key, val)
        out.append(ds)
    return out


def write_series(datasets: list[Dataset], out_dir: Path | str) -> list[Path]:
    """Write datasets as Part-10 files ``<out_dir>/<InstanceNumber:04d>.dcm``; return paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        p = out_dir / f"{int(ds.get('InstanceNumber', i + 1)):04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def mr_headers(n: int = 20, *, iop=(1, 0, 0, 0, 1, 0), series_uid: str | None = None,
               study_uid: str = "1.2.3.4", **attrs: Any) -> list[Dataset]:
    """``n`` bare classic MR Image Storage headers of one series (no pixels, no physics): only
    what the classifier and the routing rules need, plus ``attrs`` on every header. For tests of
    classification and routing that set each attribute they mean; :func:`make_mr_series` makes
    whole images."""
    series_uid = series_uid or generate_uid()
    out = []
    for k in range(n):
        ds = Dataset()
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study_uid
        ds.Modality = "MR"
        ds.Rows = ds.Columns = 256
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImageOrientationPatient = list(iop)
        ds.ImagePositionPatient = [0, 0, float(k)]
        ds.InstanceNumber = k + 1
        for key, val in attrs.items():
            setattr(ds, key, val)
        out.append(ds)
    return out

