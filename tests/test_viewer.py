"""Results are visible in Orthanc's web viewer (Debian ``orthanc-webviewer``), in headless Chromium.

A real Orthanc with the web viewer plugin holds a lesion overlay series; headless Chromium opens
``/web-viewer/app/viewer.html?series=<id>``, takes a screenshot, and the lesion colour must be
in the image area, while the same viewer on the plain grey MR series shows none of it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from orthanc_harness import ORTHANC_BIN, OrthancServer

WEBVIEWER = Path("/usr/share/orthanc/plugins/libOrthancWebViewer.so")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
LESION_RGB = (255, 0, 0)

pytestmark = [
    pytest.mark.orthanc,
    pytest.mark.skipif(not ORTHANC_BIN.exists(), reason="Debian package orthanc not installed"),
    pytest.mark.skipif(not WEBVIEWER.exists(),
                       reason="Debian package orthanc-webviewer not installed"),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium not installed"),
]


def _orthanc(workdir: Path) -> OrthancServer:
    """The shared harness's real Orthanc, with the web viewer plugin loaded."""
    return OrthancServer(workdir / "orthanc", config={
        "Plugins": [str(WEBVIEWER)],
        "WebViewer": {"CachePath": str(workdir / "orthanc" / "webviewer-cache")},
    }).start()


def _series_id(orthanc: OrthancServer, files: list[Path]) -> str:
    ids = {orthanc.post("/instances", f.read_bytes())["ParentSeries"] for f in files}
    assert len(ids) == 1
    return ids.pop()


def _write_series(out: Path, frames: list[np.ndarray], *, rgb: bool, study_uid: str,
                  description: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    series_uid, paths = generate_uid(), []
    sop_class = SC_STORAGE if rgb else MR_STORAGE
    for i, img in enumerate(frames):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = sop = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
        ds.PatientName, ds.PatientID = "Viewer^Test", "VIEWER1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality = "OT" if rgb else "MR"
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, 1 + rgb, i + 1
        ds.Rows, ds.Columns = img.shape[:2]
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        if rgb:
            ds.ConversionType = "WSD"
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        else:
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = np.ascontiguousarray(img, dtype=np.uint8).tobytes()
        paths.append(out / f"{i:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _synthetic_overlay(n: int = 3, size: int = 128) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Grey 'FLAIR' slices and the same slices with a lesion blob burned in LESION_RGB."""
    yy, xx = np.mgrid[:size, :size]
    grey, overlay = [], []
    for k in range(n):
        g = (40 + 120 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * 35.0**2)))
        g = g.astype(np.uint8)
        grey.append(g)
        rgb = np.repeat(g[..., None], 3, axis=2)
        blob = (yy - 60) ** 2 + (xx - 72) ** 2 < (10 + k) ** 2
        rgb[blob] = LESION_RGB
        overlay.append(rgb)
    return grey, overlay


def _screenshot(url: str, out: Path, profile: Path) -> np.ndarray:
    from PIL import Image

    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
           "--window-size=900,700", "--virtual-time-budget=15000", f"--screenshot={out}", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.exists(), f"chromium wrote no screenshot (rc {res.returncode}): {res.stderr[-1500:]}"
    return np.asarray(Image.open(out).convert("RGB"))


def _lesion_pixels(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels of the lesion colour in the image area (the viewer's red text lines excluded)."""
    h = img.shape[0]
    area = img[int(0.12 * h): int(0.90 * h)].astype(int)
    close = np.all(np.abs(area - np.array(rgb)) <= tol, axis=-1)
    return int(close.sum())


@pytest.mark.slow
def test_overlay_series_shows_lesion_colour_in_web_viewer(tmp_path: Path):
    grey, overlay = _synthetic_overlay()
    study = generate_uid()
    mr_files = _write_series(tmp_path / "mr", grey, rgb=False, study_uid=study,
                             description="AX FLAIR")
    ov_files = _write_series(tmp_path / "ov", overlay, rgb=True, study_uid=study,
                             description="MS lesion overlay (RESEARCH USE ONLY)")
    orthanc = _orthanc(tmp_path)
    try:
        mr_series = _series_id(orthanc, mr_files)
        ov_series = _series_id(orthanc, ov_files)
        viewer = orthanc.url + "/web-viewer/app/viewer.html?series="
        shot_ov = _screenshot(viewer + ov_series, tmp_path / "overlay.png", tmp_path / "p1")
        shot_mr = _screenshot(viewer + mr_series, tmp_path / "mr.png", tmp_path / "p2")
    finally:
        orthanc.stop()
    # the viewer rendered the image (not a blank page): a large share of non-black pixels
    assert (shot_mr.max(axis=-1) > 30).mean() > 0.2, "viewer did not render the MR series"
    n_ov, n_mr = _lesion_pixels(shot_ov, LESION_RGB), _lesion_pixels(shot_mr, LESION_RGB)
    assert n_mr < 50, f"lesion colour where there is no lesion ({n_mr} px)"
    # a 10-px-radius blob on a 128 px image, scaled up by the viewer: thousands of pixels
    assert n_ov > 2000, f"lesion colour not visible in the web viewer ({n_ov} px)"
