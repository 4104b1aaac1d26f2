"""Classification judged on every folder of ../shared/data/dicom against MANIFEST.tsv true_contrast.

Mapping of the manifest's labels to the classifier's answers (documented in the README):

* ``FLAIR``, ``T1``, ``T2``, ``PD``, ``DWI`` -> the same; ``DWI (derived trace-weighted)`` -> DWI;
* ``localizer`` -> LOCALIZER; ``other (...)`` -> OTHER (BOLD, ADC/FA maps, field maps, STIR ...);
* ``T1 (derived MPR, abdomen)`` -> OTHER with weighting T1: a DERIVED\\SECONDARY reformat is never
  routed as an acquisition (the physics stay visible in ``weighting``);
* ``T1 (content) but NOT scanner-written`` (nifti2dicom, no acquisition tags) -> UNKNOWN or OTHER;
* ``non-image`` -> OTHER with is_image False; ``non-MR`` -> not MR or unreadable; ``corrupt`` ->
  UNKNOWN with is_image False (damaged pixel data) or unreadable; ``odd transfer syntax`` (a
  secondary capture, Modality OT) -> OTHER.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from dicom_node.route.classify import SeriesInfo, classify_series
from dicom_node.route.dicomfiles import load_series

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom"
UNREADABLE = "UNREADABLE"


def expected(label: str) -> tuple[set[str], bool]:
    """(accepted answers, must never be FLAIR/T1) for a manifest true_contrast label."""
    low = label.lower()
    if label in ("FLAIR", "T1", "T2", "PD", "DWI"):
        return {label}, False
    if low.startswith("dwi"):
        return {"DWI"}, True
    if low == "localizer":
        return {"LOCALIZER"}, True
    if "derived mpr" in low:
        return {"OTHER"}, True
    if "not scanner-written" in low:
        return {"UNKNOWN", "OTHER"}, True
    if low.startswith("other"):
        return {"OTHER"}, True
    if low.startswith("non-image"):
        return {"OTHER"}, True
    if low.startswith("non-mr"):
        return {"OTHER", "UNKNOWN", UNREADABLE}, True
    if low.startswith("corrupt"):
        return {"UNKNOWN", UNREADABLE}, True
    if low.startswith("odd transfer syntax"):
        return {"OTHER", "UNKNOWN"}, True
    raise AssertionError(f"manifest label not mapped: {label!r}")


def classify_folder(folder: Path) -> tuple[str, SeriesInfo | None]:
    series, unreadable = load_series([folder])
    if not series:
        assert unreadable, f"{folder}: no files at all"
        return UNREADABLE, None
    assert len({s.series_uid for s in series}) == 1, f"{folder}: one series per folder expected"
    sf = series[0]
    headers = sf.headers
    if not headers:  # every file damaged
        return "UNKNOWN", SeriesInfo(contrast="UNKNOWN", is_image=False, flags=["corrupt"])
    info = classify_series(headers)
    return info.contrast, info


@pytest.fixture(scope="module")
def corpus() -> list[tuple[dict, str, SeriesInfo | None]]:
    if not (SHARED / "MANIFEST.tsv").is_file():
        pytest.skip(f"shared DICOM corpus not found at {SHARED} (../shared/data/dicom beside the repo)")
    with open(SHARED / "MANIFEST.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [(row, *classify_folder(SHARED / row["path"])) for row in rows]


@pytest.mark.shared
def test_manifest_covers_every_folder(corpus):
    listed = {row["path"] for row, _, _ in corpus}
    on_disk = {str(p.relative_to(SHARED)) for p in SHARED.glob("*/*") if p.is_dir()}
    assert listed == on_disk


@pytest.mark.shared
def test_the_classifier_agrees_with_the_manifest_on_every_folder(corpus):
    """The README claims agreement on all 52 folders: any mismatch fails, with the confusion table."""
    right, confusion, lines = 0, Counter(), []
    for row, got, _info in corpus:
        accepted, _ = expected(row["true_contrast"])
        ok = got in accepted
        right += ok
        confusion[(row["true_contrast"][:32], got)] += 1
        if not ok:
            lines.append(f"MISMATCH {row['path']}: manifest {row['true_contrast']!r}, got {got}")
    acc = right / len(corpus)
    summary = ["confusion (manifest label -> answer: count):"]
    summary += [f"  {truth:32s} -> {got:10s} {n}" for (truth, got), n in sorted(confusion.items())]
    summary.append(f"accuracy {right}/{len(corpus)} = {acc:.1%}")
    print("\n" + "\n".join(lines + summary))
    assert len(corpus) == 52 and right == len(corpus), "\n".join(lines + summary)


@pytest.mark.shared
def test_localizers_maps_non_mr_and_non_images_are_never_flair_or_t1(corpus):
    bad = []
    for row, got, info in corpus:
        _, forbidden = expected(row["true_contrast"])
        if forbidden and got in ("FLAIR", "T1"):
            bad.append(f"{row['path']} ({row['true_contrast']}) -> {got}")
        # every derived object of the corpus stays away from FLAIR/T1, whatever its label
        if info is not None and info.derived and got in ("FLAIR", "T1") and "DERIVED\\PRIMARY" not in row["ImageType"]:
            bad.append(f"{row['path']}: derived ({row['ImageType']}) -> {got}")
    assert not bad, bad


@pytest.mark.shared
def test_non_image_objects_are_reported_as_such(corpus):
    for row, _got, info in corpus:
        low = row["true_contrast"].lower()
        if low.startswith(("non-image", "corrupt")) or "seg" in low:
            assert info is None or not info.is_image, f"{row['path']}: is_image should be False"


@pytest.mark.shared
def test_reformat_keeps_its_physics_and_mixed_series_is_flagged(corpus):
    by_path = {row["path"]: info for row, _, info in corpus}
    mpr = by_path["pydicom_data/siemens_avanto_derived_MPR_with_overlay_abdomen"]
    assert (mpr.contrast, mpr.weighting) == ("OTHER", "T1") and "reformat" in mpr.flags
    mixed = by_path["dicom2nifti/philips_ingenia_2D_T2_TSE_4sl_mixed_series_one_uid"]
    assert mixed.orientation == "MIXED" and mixed.n_acquisitions == 2 and "mixed-acquisitions" in mixed.flags
    mosaic = by_path["dcm_qa/siemens_trio_vb17_epi_mosaic_ax_asc_35sl"]
    assert "mosaic" in mosaic.flags and mosaic.n_images == 2
    enh = by_path["dcm_qa_xa30/siemens_prisma_xa30_enh_T1w_tfl3d"]
    assert (enh.n_images, enh.dimensionality, enh.orientation) == (96, "3D", "SAG")
