"""Read DICOM headers from files and folders robustly, and group them into series.

Used by ``dicom-node rules test`` and by anything that classifies files on disk.
Nothing here raises for a bad file: every file yields a :class:`HeaderRecord`
with either a dataset or an ``error`` that says why it was skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

#: files that are never DICOM and are not worth reporting
SKIP_NAMES = {"README", "README.md", "README.txt", "MANIFEST.tsv", "LICENSE", "DICOMDIR", ".DS_Store"}
SKIP_SUFFIXES = {".md", ".txt", ".tsv", ".csv", ".json", ".py", ".nii", ".gz", ".zip", ".png", ".jpg",
                 ".yaml", ".yml", ".html", ".xml", ".log"}

NATIVE_TS = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


@dataclass
class HeaderRecord:
    """One file: its header (pixels not read) or the reason it could not be used."""

    path: Path
    ds: Dataset | None = None
    error: str | None = None
    #: header readable but the file is damaged (e.g. truncated pixel data)
    corrupt: bool = False


@dataclass
class SeriesFiles:
    """The files of one series found on disk."""

    series_uid: str
    study_uid: str
    records: list[HeaderRecord] = field(default_factory=list)
    #: the folder (or the single file given on the command line) the series came from
    origin: Path | None = None

    @property
    def headers(self) -> list[Dataset]:
        """Readable, non-corrupt headers, one per SOP Instance UID."""
        seen: set[str] = set()
        out = []
        for r in self.records:
            if r.ds is None or r.corrupt:
                continue
            uid = str(r.ds.get("SOPInstanceUID", "") or "")
            if uid and uid in seen:
                continue
            seen.add(uid)
            out.append(r.ds)
        return out


def iter_files(paths: Iterable[Path | str]) -> Iterator[tuple[Path, Path]]:
    """Yield ``(file, origin_argument)`` for every candidate file below the given paths."""
    for p in paths:
        p = Path(p)
        if p.is_file():
            yield p, p
        elif p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith(".") or name in SKIP_NAMES:
                        continue
                    f = Path(root) / name
                    if f.suffix.lower() in SKIP_SUFFIXES:
                        continue
                    yield f, p
        else:
            yield p, p


def _looks_like_dataset(ds: Dataset) -> bool:
    """True when a force-read dataset has the attributes of a real DICOM object."""
    try:
        return bool(ds.get("SOPClassUID") or (ds.get("SeriesInstanceUID") and ds.get("Modality")))
    except Exception:  # noqa: BLE001 - best effort: any failure gives the fallback
        return False


def _pixel_data_truncated(path: Path, ds: Dataset) -> str | None:
    """Detect native pixel data shorter than Rows x Columns x frames needs.

    Only for uncompressed transfer syntaxes; reads the 12 bytes of the pixel data
    element header located just after the header pydicom parsed.
    """
    try:
        ts = str(ds.file_meta.TransferSyntaxUID) if getattr(ds, "file_meta", None) else ""
    except AttributeError:
        ts = ""
    if ts and ts not in NATIVE_TS:
        return None
    rows, cols = ds.get("Rows"), ds.get("Columns")
    bits = ds.get("BitsAllocated")
    if not (rows and cols and bits):
        return None
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        spp = int(ds.get("SamplesPerPixel") or 1)
        expected = int(rows) * int(cols) * frames * spp * int(bits) // 8
    except (TypeError, ValueError):
        return None
    size = path.stat().st_size
    full = pydicom.dcmread(path, defer_size=4096, force=True)
    elem = full.get_item("PixelData")
    if elem is None:
        return "no pixel data element although Rows/Columns are present"
    value_tell = getattr(elem, "value_tell", None)
    declared = getattr(elem, "length", None)
    if value_tell is not None and declared is not None:  # deferred raw element
        if declared == 0xFFFFFFFF:
            return None
        have = min(int(declared), size - int(value_tell))
    else:
        value = getattr(elem, "value", None)
        if value is None:
            return None
        have = len(value)
    if have < expected:
        return f"pixel data truncated: {have} bytes present, {expected} expected"
    return None


def read_header(path: Path | str, check_pixels: bool = True) -> HeaderRecord:
    """Read one file's header without pixel data.

    Parameters
    ----------
    path : Path or str
    check_pixels : bool
        Also check that uncompressed pixel data is complete (cheap: file size and
        one element header), marking the record ``corrupt`` otherwise.

    Returns
    -------
    HeaderRecord
        Never raises.
    """
    path = Path(path)
    try:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if not _looks_like_dataset(ds):
                return HeaderRecord(path, None, "not a DICOM file (no preamble/meta and no SOP Class UID)")
        # touch the elements routing needs, so that lazy parsing errors surface here
        for kw in ("SOPClassUID", "SeriesInstanceUID", "Modality", "ImageType"):
            ds.get(kw)
    except Exception as exc:  # noqa: BLE001 - any parser error: report, never crash
        return HeaderRecord(path, None, f"unreadable: {type(exc).__name__}: {exc}")
    if not _looks_like_dataset(ds):
        return HeaderRecord(path, None, "not a DICOM object (no SOP Class UID / Series Instance UID)")
    rec = HeaderRecord(path, ds)
    if check_pixels:
        try:
            why = _pixel_data_truncated(path, ds)
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - defensive
            why = f"pixel check failed: {exc}"
        if why:
            rec.corrupt = True
            rec.error = why
    return rec


def group_series(records: Iterable[tuple[HeaderRecord, Path]]) -> tuple[list[SeriesFiles], list[HeaderRecord]]:
    """Group readable records by SeriesInstanceUID.

    Files with the same SeriesInstanceUID in different folders are reported per
    folder: copies of one series (re-encoded, anonymised twice) often share UIDs,
    and a folder is how the files were handed to us.

    Parameters
    ----------
    records : iterable of (HeaderRecord, origin)
        ``origin`` is the path argument the file was found under.

    Returns
    -------
    (series, unreadable)
    """
    by_key: dict[tuple[str, str], SeriesFiles] = {}
    unreadable: list[HeaderRecord] = []
    origins: dict[tuple[str, str], Path] = {}
    for rec, origin in records:
        if rec.ds is None:
            unreadable.append(rec)
            continue
        uid = str(rec.ds.get("SeriesInstanceUID", "") or "") or f"(no SeriesInstanceUID: {rec.path})"
        folder = str(rec.path.parent)
        key = (uid, folder)
        if key not in by_key:
            by_key[key] = SeriesFiles(uid, str(rec.ds.get("StudyInstanceUID", "") or ""))
            origins[key] = rec.path if origin.is_file() else rec.path.parent
        by_key[key].records.append(rec)
    out = []
    for key, sf in by_key.items():
        sf.origin = origins[key]
        out.append(sf)
    return out, unreadable


def load_series(paths: Iterable[Path | str]) -> tuple[list[SeriesFiles], list[HeaderRecord]]:
    """Read every file below ``paths`` and group it into series (see :func:`group_series`)."""
    recs = [(read_header(f), origin) for f, origin in iter_files(paths)]
    return group_series(recs)
