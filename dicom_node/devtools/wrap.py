"""Write SimpleITK images as classic DICOM MR series (test and demo studies).

Used to turn the NIfTI MS cases in ``../shared/data/ms`` (or synthetic phantoms) into a brain
MR study that travels through the node like a scanner's: one MR Image Storage file per slice,
Explicit VR Little Endian, correct geometry, and acquisition headers typical of each contrast so
that the routing classifier recognises them from the physics (TR/TE/TI, scanning sequence).

The files are research/test data: ``ImageComments`` says so, and patient identity is whatever the
caller passes (default: an obviously synthetic name).
"""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage

from dicom_node.encode.uids import derive_uid
from dicom_node.receive.spool import save_dataset

log = logging.getLogger(__name__)

__all__ = ["write_mr_series", "nifti_case_to_study", "WrappedStudy", "ACQUISITION_PRESETS"]

#: Acquisition headers per contrast and acquisition type; values of real Siemens protocols
#: (3D SPACE dark-fluid FLAIR, 2D turbo-inversion-recovery FLAIR, MPRAGE, 2D TSE T2).
ACQUISITION_PRESETS: dict[tuple[str, str], dict] = {
    ("FLAIR", "3D"): dict(
        ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP", "MP"], ScanOptions=["IR"],
        RepetitionTime=6000.0, EchoTime=394.0, InversionTime=2200.0, EchoTrainLength=278,
        FlipAngle=120.0, SequenceName="*spcir3d1_278", ProtocolName="t2_space_dark-fluid_3d_p2_iso",
    ),
    ("FLAIR", "2D"): dict(
        ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP", "MP"], ScanOptions=["IR"],
        RepetitionTime=9000.0, EchoTime=90.0, InversionTime=2500.0, EchoTrainLength=16,
        FlipAngle=150.0, SequenceName="*tir2d1_16", ProtocolName="t2_tirm_tra_dark-fluid",
    ),
    ("T1", "3D"): dict(
        ScanningSequence=["GR", "IR"], SequenceVariant=["SP", "MP"], ScanOptions=["IR"],
        RepetitionTime=2300.0, EchoTime=2.98, InversionTime=900.0, EchoTrainLength=1,
        FlipAngle=9.0, SequenceName="*tfl3d1_16ns", ProtocolName="t1_mprage_3d_p2_iso",
    ),
    ("T1", "2D"): dict(
        ScanningSequence=["SE"], SequenceVariant=["SP"], ScanOptions=[],
        RepetitionTime=550.0, EchoTime=10.0, InversionTime=None, EchoTrainLength=1,
        FlipAngle=90.0, SequenceName="*se2d1", ProtocolName="t1_se_tra",
    ),
    ("T2", "3D"): dict(
        ScanningSequence=["SE"], SequenceVariant=["SK", "SP"], ScanOptions=[],
        RepetitionTime=3200.0, EchoTime=408.0, InversionTime=None, EchoTrainLength=258,
        FlipAngle=120.0, SequenceName="*spc3d1_258", ProtocolName="t2_space_3d_p2_iso",
    ),
    ("T2", "2D"): dict(
        ScanningSequence=["SE"], SequenceVariant=["SK", "SP"], ScanOptions=[],
        RepetitionTime=6000.0, EchoTime=100.0, InversionTime=None, EchoTrainLength=15,
        FlipAngle=150.0, SequenceName="*tse2d1_15", ProtocolName="t2_tse_tra",
    ),
}


def _quantise(arr: np.ndarray) -> tuple[np.ndarray, float, float, int]:
    """float array -> (stored int array, slope, intercept, PixelRepresentation)."""
    a = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("image contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if np.all(a == np.round(a)):
        if lo >= 0 and hi <= 65535:
            return a.astype(np.uint16), 1.0, 0.0, 0
        if lo >= -32768 and hi <= 32767:
            return a.astype(np.int16), 1.0, 0.0, 1
    span = hi - lo if hi > lo else 1.0
    slope = span / 65535.0
    stored = np.clip(np.round((a - lo) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, lo, 0


def _ds_str(v: float) -> str:
    """A DS value (max 16 chars) with as much precision as fits."""
    for prec in range(12, 0, -1):
        s = f"{v:.{prec}g}"
        if len(s) <= 16:
            return s
    return f"{v:.6e}"[:16]


def _right_handed(image: sitk.Image) -> sitk.Image:
    """Return an image whose third axis points along row x column cosine (flip z if needed)."""
    d = np.array(image.GetDirection()).reshape(3, 3)
    if np.linalg.det(d) > 0:
        return image
    arr = sitk.GetArrayFromImage(image)[::-1].copy()
    out = sitk.GetImageFromArray(arr)
    out.SetSpacing(image.GetSpacing())
    out.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1)))
    d2 = d.copy()
    d2[:, 2] *= -1
    out.SetDirection(tuple(d2.ravel()))
    return out


def write_mr_series(
    image: sitk.Image,
    out_dir: Path | str,
    *,
    study_uid: str,
    series_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "",
    contrast: str = "FLAIR",
    acquisition: str | None = None,
    patient_id: str = "MSNODE-TEST",
    patient_name: str = "TEST^MSNODE",
    patient_birth_date: str = "19800101",
    patient_sex: str = "O",
    study_date: str | None = None,
    study_time: str = "090000",
    study_description: str = "MR BRAIN (research test data)",
    accession_number: str = "",
    frame_of_reference_uid: str | None = None,
    manufacturer: str = "SIEMENS",
    model_name: str = "Prisma_fit",
    field_strength: float = 3.0,
    orient: str | None = None,
    sop_uid_seed: str | None = None,
    extra: dict | None = None,
) -> list[Path]:
    """Write ``image`` as one classic MR Image Storage file per slice.

    Parameters
    ----------
    image
        3D image (any pixel type; values are stored as uint16/int16, with RescaleSlope/Intercept
        when they are not integers in range).
    out_dir
        Created if needed; files are named ``IM{k:04d}.dcm``, ``k`` = 1-based slice index.
    study_uid, series_uid
        ``series_uid`` defaults to one derived from ``study_uid``, contrast and series number.
    contrast
        ``"FLAIR"``, ``"T1"`` or ``"T2"``: selects :data:`ACQUISITION_PRESETS`.
    acquisition
        ``"3D"`` or ``"2D"``; default: 3D when the slice spacing is <= 1.5 mm.
    orient
        Optional DICOM orientation code (e.g. ``"LPS"``) to reorient the image first (axes are
        permuted/flipped, no resampling). Without it, only a left-handed image is flipped along
        z so that the slices run along the row x column normal.
    sop_uid_seed
        Seed for deterministic SOP Instance UIDs (default: the series UID).
    extra
        Additional top-level attributes (keyword -> value) set on every file.

    Returns
    -------
    list of Path
        The written files, in slice order.
    """
    contrast = contrast.upper()
    if image.GetDimension() != 3:
        raise ValueError("write_mr_series needs a 3D image")
    if orient:
        image = sitk.DICOMOrient(image, orient)
    image = _right_handed(image)
    spacing = image.GetSpacing()
    if acquisition is None:
        acquisition = "3D" if spacing[2] <= 1.5 else "2D"
    try:
        preset = dict(ACQUISITION_PRESETS[(contrast, acquisition)])
    except KeyError:
        raise ValueError(f"no acquisition preset for contrast {contrast!r} {acquisition}") from None
    series_uid = series_uid or derive_uid("wrap-series", study_uid, contrast, str(series_number))
    frame_of_reference_uid = frame_of_reference_uid or derive_uid("wrap-for", study_uid)
    seed = sop_uid_seed or series_uid
    study_date = study_date or _dt.date.today().strftime("%Y%m%d")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    arr = sitk.GetArrayFromImage(image)  # (z, y, x)
    stored, slope, intercept, pixel_rep = _quantise(arr)
    real = stored.astype(np.float64) * slope + intercept
    lo, hi = np.percentile(real, [1, 99.5])
    wc, ww = (lo + hi) / 2, max(hi - lo, 1e-3)
    d = np.array(image.GetDirection()).reshape(3, 3)
    iop = [float(v) for v in np.concatenate([d[:, 0], d[:, 1]])]
    normal = d[:, 2]
    nz, ny, nx = arr.shape
    paths: list[Path] = []
    for k in range(nz):
        ipp = image.TransformIndexToPhysicalPoint((0, 0, k))
        sop_uid = derive_uid("wrap-sop", seed, str(k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
        ds.InstanceCreationDate = study_date
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = study_date
        ds.SeriesDate = study_date
        ds.AcquisitionDate = study_date
        ds.ContentDate = study_date
        ds.StudyTime = study_time
        ds.SeriesTime = study_time
        ds.AcquisitionTime = study_time
        ds.ContentTime = study_time
        ds.AccessionNumber = accession_number
        ds.Modality = "MR"
        ds.Manufacturer = manufacturer
        ds.InstitutionName = "MS node test data"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = study_description
        ds.SeriesDescription = series_description or f"{contrast} {acquisition}"
        ds.ManufacturerModelName = model_name
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = patient_birth_date
        ds.PatientSex = patient_sex
        ds.BodyPartExamined = "HEAD"
        ds.ScanningSequence = preset["ScanningSequence"]
        ds.SequenceVariant = preset["SequenceVariant"]
        ds.ScanOptions = preset["ScanOptions"] or ""
        ds.MRAcquisitionType = acquisition
        ds.SequenceName = preset["SequenceName"]
        ds.AngioFlag = "N"
        ds.SliceThickness = _ds_str(spacing[2])
        ds.RepetitionTime = _ds_str(preset["RepetitionTime"])
        ds.EchoTime = _ds_str(preset["EchoTime"])
        if preset["InversionTime"] is not None:
            ds.InversionTime = _ds_str(preset["InversionTime"])
        ds.NumberOfAverages = "1"
        ds.ImagingFrequency = _ds_str(42.577478 * field_strength)
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = "1"
        ds.MagneticFieldStrength = _ds_str(field_strength)
        ds.SpacingBetweenSlices = _ds_str(spacing[2])
        ds.EchoTrainLength = str(preset["EchoTrainLength"])
        ds.PercentSampling = "100"
        ds.PercentPhaseFieldOfView = "100"
        ds.PixelBandwidth = "200"
        ds.DeviceSerialNumber = "0"
        ds.SoftwareVersions = "ms-dicom-node wrap"
        ds.ProtocolName = preset["ProtocolName"]
        ds.ReceiveCoilName = "Head_32"
        ds.AcquisitionMatrix = [0, nx, ny, 0]
        ds.InPlanePhaseEncodingDirection = "ROW"
        ds.FlipAngle = _ds_str(preset["FlipAngle"])
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = str(series_number)
        ds.AcquisitionNumber = "1"
        ds.InstanceNumber = str(k + 1)
        ds.ImagePositionPatient = [_ds_str(v) for v in ipp]
        ds.ImageOrientationPatient = [_ds_str(v) for v in iop]
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds_str(float(np.dot(ipp, normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.PixelSpacing = [_ds_str(spacing[1]), _ds_str(spacing[0])]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = pixel_rep
        ds.WindowCenter = _ds_str(wc)
        ds.WindowWidth = _ds_str(ww)
        ds.RescaleIntercept = _ds_str(intercept)
        ds.RescaleSlope = _ds_str(slope)
        ds.RescaleType = "US"
        ds.ImageComments = "Synthetic DICOM wrapping of research data (ms-dicom-node); not for clinical use"
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = out / f"IM{k + 1:04d}.dcm"
        save_dataset(ds, path, durable=False)
        paths.append(path)
    log.info("wrote %d %s slices of series %s", nz, contrast, series_uid)
    return paths


@dataclass
class WrappedStudy:
    """A study written by :func:`nifti_case_to_study`."""

    study_uid: str
    patient_id: str
    series: dict[str, str] = field(default_factory=dict)  #: contrast -> SeriesInstanceUID
    files: dict[str, list[Path]] = field(default_factory=dict)  #: contrast -> files

    @property
    def all_files(self) -> list[Path]:
        return [p for files in self.files.values() for p in files]


def nifti_case_to_study(
    case_dir: Path | str,
    out_dir: Path | str,
    *,
    contrasts: tuple[str, ...] = ("FLAIR", "T1"),
    study_uid: str | None = None,
    patient_id: str | None = None,
    patient_name: str | None = None,
    orient: str | None = "LPS",
) -> WrappedStudy:
    """Wrap an MS case folder (``FLAIR.nii.gz``, ``T1.nii.gz``, ...) as one DICOM MR study.

    Each contrast becomes a series (``out_dir/<contrast>/IM*.dcm``), FLAIR first (series 1),
    sharing the study and frame of reference. UIDs are derived from the case folder name unless
    ``study_uid`` is given, so wrapping the same case twice gives the same study.

    Parameters
    ----------
    case_dir
        e.g. ``../shared/data/ms/cross_sectional/patient19``.
    contrasts
        Which ``<contrast>.nii.gz`` files to wrap (``T1`` is optional when missing).
    orient
        Reorient to this DICOM code (default ``"LPS"``: standard axial slices, anterior at the
        top); ``None`` keeps the NIfTI axes.
    """
    case_dir = Path(case_dir)
    case = case_dir.name
    study_uid = study_uid or derive_uid("wrap-study", case)
    patient_id = patient_id or f"MSNODE-{case}"
    patient_name = patient_name or f"TEST^{case.upper()}"
    result = WrappedStudy(study_uid=study_uid, patient_id=patient_id)
    for number, contrast in enumerate(contrasts, start=1):
        path = case_dir / f"{contrast}.nii.gz"
        if not path.exists():
            if contrast == contrasts[0]:
                raise FileNotFoundError(path)
            log.warning("case %s has no %s; skipped", case, contrast)
            continue
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
        files = write_mr_series(
            image,
            Path(out_dir) / contrast,
            study_uid=study_uid,
            series_number=number,
            series_description=f"{contrast} (wrapped {case})",
            contrast=contrast,
            patient_id=patient_id,
            patient_name=patient_name,
            orient=orient,
        )
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        result.series[contrast] = str(ds.SeriesInstanceUID)
        result.files[contrast] = files
    return result
