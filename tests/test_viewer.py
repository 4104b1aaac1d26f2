"""Results are visible in Orthanc's web viewer (Debian ``orthanc-webviewer``), in headless Chromium.

A real Orthanc with the web viewer plugin holds a FLAIR series and the node's overlay series
(``dicom_node.encode.overlay.build_overlay``) of a lesion result on it; headless Chromium opens
``/web-viewer/app/viewer.html?series=<id>``, takes a screenshot, and the lesion colour
(``LESION_RGB``) must be in the image area, while the same viewer on the FLAIR shows none.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from orthanc_harness import ORTHANC_BIN, OrthancServer

WEBVIEWER = Path("/usr/share/orthanc/plugins/libOrthancWebViewer.so")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

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


def _screenshot(url: str, out: Path, profile: Path) -> np.ndarray:
    from PIL import Image

    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
           "--window-size=900,700", "--virtual-time-budget=15000", f"--screenshot={out}", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.exists(), f"chromium wrote no screenshot (rc {res.returncode}): {res.stderr[-1500:]}"
    return np.asarray(Image.open(out).convert("RGB"))


def _image_area(img: np.ndarray) -> np.ndarray:
    """The viewport without the viewer's text lines (its "Not for diagnostic purpose" is red)."""
    h = img.shape[0]
    return img[int(0.12 * h): int(0.90 * h)].astype(int)


def _lesion_pixels(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels of the exact lesion outline colour (within ``tol`` per channel)."""
    close = np.all(np.abs(_image_area(img) - np.array(rgb)) <= tol, axis=-1)
    return int(close.sum())


def _reddish_pixels(img: np.ndarray) -> int:
    """Pixels where red clearly dominates (outline plus the translucent red fill)."""
    a = _image_area(img)
    return int(((a[..., 0] - np.maximum(a[..., 1], a[..., 2])) > 60).sum())


def _flair_and_overlay(tmp_path: Path) -> tuple[list[Path], list[Path], tuple[int, int, int]]:
    """A synthetic FLAIR series on disk and the node's overlay series of a lesion result on it.

    The lesion is a disc through every slice, so whichever slice the viewer opens shows it.
    """
    from dicom_factory import make_mr_series, write_series

    from dicom_node.devtools.synthetic import result_from_labels
    from dicom_node.encode import overlay
    from dicom_node.run.volume import load_series

    n, rows, cols = 6, 64, 64
    flair_files = write_series(make_mr_series(n, rows, cols, contrast="FLAIR",
                                              patient_name="VIEWER^TEST"), tmp_path / "flair")
    vol = load_series(flair_files)
    yy, xx = np.mgrid[:rows, :cols]
    disc = ((yy - 26) ** 2 + (xx - 38) ** 2 <= 7 ** 2)
    labels = np.repeat(disc[None], n, axis=0).astype(np.uint16)
    result = result_from_labels(labels, vol.image, ["periventricular"])
    dss = overlay.build_overlay(result, vol, job_key="viewer-test", include_summary=False)
    out = tmp_path / "overlay"
    out.mkdir()
    ov_files = []
    for i, ds in enumerate(dss):
        ov_files.append(out / f"{i:03d}.dcm")
        ds.save_as(ov_files[-1], enforce_file_format=True)
    return flair_files, ov_files, tuple(overlay.LESION_RGB)


@pytest.mark.slow
def test_overlay_series_shows_lesion_colour_in_web_viewer(tmp_path: Path):
    flair_files, ov_files, lesion_rgb = _flair_and_overlay(tmp_path)
    orthanc = _orthanc(tmp_path)
    try:
        flair_series = _series_id(orthanc, flair_files)
        ov_series = _series_id(orthanc, ov_files)
        viewer = orthanc.url + "/web-viewer/app/viewer.html?series="
        shot_ov = _screenshot(viewer + ov_series, tmp_path / "overlay.png", tmp_path / "p1")
        shot_mr = _screenshot(viewer + flair_series, tmp_path / "flair.png", tmp_path / "p2")
    finally:
        orthanc.stop()
    # the viewer rendered the images (not a blank page or an error)
    for shot in (shot_ov, shot_mr):
        assert (shot.max(axis=-1) > 30).mean() > 0.2, "web viewer rendered no image"
    n_ov, n_mr = _lesion_pixels(shot_ov, lesion_rgb), _lesion_pixels(shot_mr, lesion_rgb)
    red_ov, red_mr = _reddish_pixels(shot_ov), _reddish_pixels(shot_mr)
    assert n_mr < 20 and red_mr < 20, f"lesion colour without a lesion ({n_mr}/{red_mr} px)"
    # a 7-voxel-radius disc on a 64-voxel slice, enlarged by the encoder and the viewer to a
    # disc of ~70 screen px radius: its outline (thin) and its red fill (~15000 px) show
    assert n_ov > 80, f"lesion outline colour not visible in the web viewer ({n_ov} px)"
    assert red_ov > 3000, f"lesion fill not visible in the web viewer ({red_ov} px)"
