"""`dicom-node rules test` as a user runs it: a real subprocess over real files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "dicom"


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicom_node.cli", "rules", "test", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def corpus_json() -> list[dict]:
    if not SHARED.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {SHARED}")
    proc = run(str(SHARED), "--json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.shared
@pytest.mark.slow
def test_json_lines_cover_every_folder_with_the_required_keys(corpus_json):
    with open(SHARED / "MANIFEST.tsv", newline="") as fh:
        manifest = {r["path"]: r for r in csv.DictReader(fh, delimiter="\t")}
    seen: dict[str, list[dict]] = {}
    for obj in corpus_json:
        assert {"path", "series_uid", "contrast", "rule"} <= obj.keys(), obj
        rel = str(Path(obj["path"]).relative_to(SHARED))
        folder = rel if rel in manifest else str(Path(rel).parent)
        seen.setdefault(folder, []).append(obj)
    assert set(seen) == set(manifest)
    # the FLAIR folders match the default rule as flair; nothing else is picked as flair
    for folder, objs in seen.items():
        truth = manifest[folder]["true_contrast"]
        for obj in objs:
            if truth == "FLAIR":
                assert (obj["contrast"], obj["rule"], obj["role"]) == ("FLAIR", "ms-lesions-brain", "flair"), obj
                assert obj["routed"] == {"rule": "ms-lesions-brain", "role": "flair", "pipeline": "ms-lesions"}
            else:
                assert obj.get("role") != "flair", (folder, obj)
            if truth.startswith(("non-image", "localizer", "other", "corrupt", "non-MR")):
                assert obj["rule"] is None, (folder, obj)


@pytest.mark.shared
@pytest.mark.slow
def test_unreadable_and_damaged_files_are_reported_not_fatal(corpus_json):
    by_folder = {}
    for obj in corpus_json:
        by_folder.setdefault(Path(obj["path"]).relative_to(SHARED).parts[:2], []).append(obj)
    [no_meta] = by_folder[("edge", "pydicom_no_file_meta_CT")]
    assert no_meta["series_uid"] is None and no_meta["rule"] is None and "not a DICOM" in no_meta["error"]
    [trunc] = by_folder[("edge", "pydicom_MR_truncated")]
    assert trunc["contrast"] == "UNKNOWN" and not trunc["is_image"] and "truncated" in trunc["errors"][0]


@pytest.mark.shared
@pytest.mark.slow
def test_mixed_series_is_split_into_acquisitions_and_never_routed(corpus_json):
    mixed = [o for o in corpus_json if o["path"].endswith("philips_ingenia_2D_T2_TSE_4sl_mixed_series_one_uid")]
    assert sorted(o["acquisition"] for o in mixed) == ["1/2", "2/2"]
    assert {o["orientation"] for o in mixed} == {"AX", "SAG"} and len({o["series_uid"] for o in mixed}) == 1
    assert all(o["contrast"] == "T2" and o["routed"] is None for o in mixed)


@pytest.mark.shared
def test_text_output_shows_attributes_rule_and_why_not(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {SHARED}")
    flair = SHARED / "dicom2nifti" / "siemens_trio_3D_FLAIR_SPACE_4sl_explicit"
    t2 = SHARED / "hazen" / "siemens_aera_ACR_T2_SE_no_description"
    proc = run(str(flair), str(t2))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "contrast=FLAIR" in out and "rule: ms-lesions-brain as flair" in out
    assert "contrast=T2" in out and "contrast is 'T2', wanted 'FLAIR'" in out
    assert "inversion time 2200 ms" in out  # the reasons are printed
    assert "rule ms-lesions-brain -> pipeline ms-lesions" in out  # study-level routing summary


def test_custom_rules_file_and_invalid_rules_exit_non_zero(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "a.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = generate_uid(), generate_uid(), "MR"
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 16, 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\0" * 8
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ScanningSequence, ds.RepetitionTime, ds.EchoTime = "SE", "5000", "100"
    ds.SeriesDescription = "my t2"
    data = tmp_path / "data"
    data.mkdir()
    ds.save_as(data / "a.dcm", enforce_file_format=True)
    (data / "junk.dcm").write_bytes(b"not dicom at all")

    rules = tmp_path / "routing.yaml"
    rules.write_text("rules:\n  - name: t2-anyway\n    pipeline: ms-lesions\n    inputs:\n"
                     "      flair: {required: true, when: {contrast: T2, SeriesDescription: {regex: 'my'}}}\n")
    proc = run(str(data), "--json", "--rules", str(rules))
    assert proc.returncode == 0, proc.stderr
    objs = [json.loads(x) for x in proc.stdout.splitlines()]
    [good] = [o for o in objs if o["series_uid"]]
    assert (good["contrast"], good["rule"], good["path"]) == ("T2", "t2-anyway", str(data))
    [bad] = [o for o in objs if o["series_uid"] is None]
    assert bad["path"].endswith("junk.dcm") and bad["rule"] is None

    # a single file argument is reported with the file as its path
    proc = run(str(data / "a.dcm"), "--json", "--rules", str(rules))
    assert json.loads(proc.stdout.splitlines()[0])["path"] == str(data / "a.dcm")

    rules.write_text("rules:\n  - name: x\n    pipeline: ms-lesions\n    inputs:\n"
                     "      flair: {required: true, when: {contrast: FLAIR, n_images: {min: many}}}\n")
    proc = run(str(data), "--rules", str(rules))
    assert proc.returncode == 2
    assert f"{rules}:5: rules[0].inputs.flair.when.n_images.min" in proc.stderr
    assert run(str(tmp_path / "missing")).returncode == 2
