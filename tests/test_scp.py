"""Storage SCP end to end: the node as a real process, dcmtk echoscu/storescu as peers.

Compressed and odd transfer syntaxes stored byte for byte, every object of
``../shared/data/dicom/edge``, invalid UIDs, duplicates, the association allow-list and the
free-disk threshold.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pydicom
import pytest
from dicom_factory import make_mr_series, write_series
from node_harness import ECHOSCU, STORESCU
from orthanc_harness import dicom_env

pytestmark = pytest.mark.skipif(not Path(STORESCU).exists(), reason="dcmtk not installed")


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a Part-10 file (everything after the file meta group)."""
    raw = Path(path).read_bytes()
    if raw[128:132] != b"DICM":
        return raw
    # (0002,0000) UL group length is the first element: tag(4) VR(2) len(2) value(4)
    assert raw[132:136] == b"\x02\x00\x00\x00"
    (glen,) = struct.unpack("<I", raw[140:144])
    return raw[144 + glen:]


def content(path: Path) -> list[tuple]:
    """Every element (recursively) as (tag, value); sequences by their items' elements.

    Dataset trailing padding (FFFC,FFFC) is left out: DCMTK-based senders drop it.
    """
    ds = pydicom.dcmread(path, force=True)
    return [(e.tag, None if e.VR == "SQ" else e.value) for e in ds.iterall()
            if e.tag != 0xFFFCFFFC]


def spooled(node) -> dict[str, Path]:
    """SOP Instance UID -> spooled file."""
    root = Path(node.cfg["data_dir"]) / "spool"
    return {p.stem: p for p in root.rglob("*.dcm")}


def echo(node, aet: str = "ECHOSCU") -> subprocess.CompletedProcess:
    return subprocess.run([ECHOSCU, "-v", "-aet", aet, "-aec", node.ae_title, "127.0.0.1",
                           str(node.port)], env=dicom_env(), capture_output=True, text=True,
                          timeout=30)


COMPRESSED = [
    "dcm_qa_ts/siemens_trio_vb17_epi_mosaic_9_transfer_syntaxes",  # LE/BE/implicit/RLE/JPEG/LS/J2K
    "dicom2nifti/unknownvendor_trio_3D_FLAIR_4sl_jpeg",
    "dicom2nifti/unknownvendor_trio_3D_FLAIR_4sl_jpegls",
    "dicom2nifti/unknownvendor_trio_3D_FLAIR_4sl_j2k",
    "dicom2nifti/unknownvendor_trio_3D_FLAIR_4sl_rle",
    "dicom2nifti/siemens_trio_3D_FLAIR_SPACE_4sl_implicit",
    "edge/pydicom_deflated_explicit_vr",
    "dcm_qa_xa30/siemens_prisma_xa30_enh_T1w_tfl3d",
]


def test_echo_and_every_transfer_syntax_stored_byte_identical(node_factory, shared_dicom):
    node = node_factory(runner={"enabled": False})
    r = echo(node)
    assert r.returncode == 0 and "Received Echo Response (Success)" in r.stdout + r.stderr
    folders = [shared_dicom / f for f in COMPRESSED if (shared_dicom / f).is_dir()]
    assert folders, "corpus folders missing"
    n_src = n_runs = 0
    for folder in folders:  # one folder at a time: some share SOP Instance UIDs (newest kept)
        runs = node.storescu_own_ts(folder)
        n_runs += len(runs)
        for r in runs:
            out = r.stdout + r.stderr
            assert r.returncode == 0, out
            assert "Error" not in out and "Failed" not in out, out
            # dcmtk sends every file in its own transfer syntax ("X -> X"), no transcoding
            for a, b in re.findall(r"Converting transfer syntax: (.+?) -> (.+)", out):
                assert a.strip() == b.strip(), out
        stored = spooled(node)
        for src in sorted(p for p in folder.rglob("*") if p.is_file()):
            ds = pydicom.dcmread(src, stop_before_pixels=True)
            got = stored[ds.SOPInstanceUID]
            meta = pydicom.dcmread(got, stop_before_pixels=True).file_meta
            assert meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID, src
            # dcmtk re-serialises what it sends (e.g. fixes OW -> OB on encapsulated pixel data),
            # so compare element by element; byte identity is checked with Orthanc as sender
            assert content(got) == content(src), f"content differs: {src}"
            n_src += 1
    assert n_runs >= 10  # every transfer syntax family was proposed as such
    assert n_src >= 30
    assert node.alive()


# What dcmtk storescu (-R: propose each file's own SOP class, -xs: its own transfer syntax)
# does with every object of edge/, and what the node answers.
EDGE_EXPECT = {
    "highdicom_seg_binary": "stored",
    "nifti2dicom_T1w_no_acquisition_tags": "stored",
    "pydicom_basic_sr": "stored",
    "pydicom_deflated_explicit_vr": "stored",
    "pydicom_rtstruct": "stored",  # no file meta: dcmtk reads it as a raw dataset
    "siemens_phoenix_sr_implicit": "stored",
    "siemens_phoenix_sr_vb": "stored",
    "siemens_trio_epi_12bit_signed_striped": "stored",
    # corrupt files: storescu refuses to read them, nothing reaches the node
    "pydicom_MR_truncated": "unsendable",
    "pydicom_no_file_meta_CT": "unsendable",
}


def test_every_edge_object(node_factory, shared_dicom):
    edge = shared_dicom / "edge"
    cases = sorted(p for p in edge.iterdir() if p.is_dir())
    assert {c.name for c in cases} <= set(EDGE_EXPECT), "new edge case: add its expectation"
    node = node_factory(runner={"enabled": False})
    for case in cases:
        before = set(spooled(node))
        runs = node.storescu_own_ts(case)
        out = "".join(r.stdout + r.stderr for r in runs)
        rc = max(r.returncode for r in runs)
        files = [p for p in case.rglob("*") if p.is_file()]
        if EDGE_EXPECT[case.name] == "stored":
            assert rc == 0, f"{case.name}: {out}"
            assert out.count("Received Store Response (Success)") == len(files), out
            new = set(spooled(node)) - before
            assert len(new) == len(files), case.name
            # a clear log line names the series and its modality
            ds = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
            assert f"series={ds.SeriesInstanceUID}" in node.log_text()
        else:
            assert rc != 0, f"{case.name}: storescu unexpectedly sent it: {out}"
            assert "Received Store Response" not in out
            assert set(spooled(node)) == before
        assert node.alive() and echo(node).returncode == 0, f"node down after {case.name}"


def test_truncated_dataset_is_refused_by_the_node():
    """The node's own check (a sender that transmits a truncated element gets 0xC000)."""
    from io import BytesIO

    from pydicom.filereader import read_preamble
    from pydicom.uid import ExplicitVRLittleEndian

    from dicom_node.receive.headerscan import check_structure

    here = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom" / "edge"
    f = here / "pydicom_MR_truncated" / "MR_truncated.dcm"
    if not f.exists():
        pytest.skip("shared corpus absent")
    fp = BytesIO(f.read_bytes())
    read_preamble(fp, False)
    pydicom.filereader._read_file_meta_info(fp)
    raw = fp.read()
    assert "(7FE0,0010) at byte 1154 declares 8192 bytes, 8130 remain" in check_structure(
        raw, ExplicitVRLittleEndian)
    ok = make_mr_series(1, 8, 8)[0]
    buf = BytesIO()
    ok.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    read_preamble(buf, False)
    pydicom.filereader._read_file_meta_info(buf)
    assert check_structure(buf.read(), ExplicitVRLittleEndian) is None


def test_invalid_uid_refused_duplicates_idempotent(node_factory, tmp_path):
    node = node_factory(runner={"enabled": False})
    bad = make_mr_series(1, 16, 16)
    bad[0].SeriesInstanceUID = "1.2.3/../../../tmp/x"
    r = node.storescu(write_series(bad, tmp_path / "bad")[0])
    assert "DataSetDoesNotMatchSOPClass" in r.stdout + r.stderr
    assert "C-STORE refused (0xA900): invalid SeriesInstanceUID" in node.log_text()
    assert spooled(node) == {} and not (tmp_path / "x").exists()

    good = make_mr_series(2, 16, 16)
    files = write_series(good, tmp_path / "good")
    assert node.storescu(files[0]).returncode == 0
    assert node.storescu(files[0]).returncode == 0  # same bytes again: success, no-op
    sop = good[0].SOPInstanceUID
    first = spooled(node)[sop].read_bytes()
    good[0].SeriesDescription = "changed"  # same SOP Instance UID, different bytes
    changed = write_series([good[0]], tmp_path / "changed")[0]
    assert node.storescu(changed).returncode == 0
    now = spooled(node)[sop]
    assert now.read_bytes() != first and dataset_bytes(now) == dataset_bytes(changed)
    assert "different bytes, newest kept" in node.log_text()
    assert "stored=0 duplicates=1 failed=0" in node.log_text()  # the identical re-send
    assert "FACTORY^TEST" not in node.log_text() and "FACTORY" not in node.log_text()


def test_unknown_calling_ae_and_address_are_rejected(node_factory):
    node = node_factory(name="aet", runner={"enabled": False},
                        allowed_peers=[{"ae_title": "GOODSCU", "host": "127.0.0.1"}])
    assert echo(node, "GOODSCU").returncode == 0
    r = echo(node, "EVILSCU")
    assert r.returncode != 0 and "Association Rejected" in r.stdout + r.stderr
    assert "association rejected: unknown peer calling_ae=EVILSCU" in node.log_text()
    other = node_factory(name="addr", runner={"enabled": False},
                         allowed_peers=[{"host": "10.255.255.1"}])
    r = echo(other, "GOODSCU")  # an address no entry allows: closed at accept, no association
    assert r.returncode != 0 and "Peer aborted Association" in r.stdout + r.stderr
    assert ("connection refused: peer=127.0.0.1:" in other.log_text()
            and "address not in allowed_peers" in other.log_text())
    assert node.alive() and other.alive()


def test_associations_refused_below_free_disk_threshold(node_factory):
    node = node_factory(runner={"enabled": False}, min_free_disk_mb=10**12)
    r = echo(node)
    assert r.returncode != 0 and "Association Rejected" in r.stdout + r.stderr
    assert "below min_free_disk_mb" in node.log_text()
    assert node.alive()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.mark.skipif(subprocess.run(["which", "openssl"], capture_output=True).returncode != 0,
                    reason="openssl not installed")
def test_tls_with_client_certificates(node_factory, tmp_path):
    """TLS on: dcmtk echoscu/storescu with a CA-signed client certificate get through; a plain
    TCP association does not."""
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name in ("node", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", cwd=d)
    node = node_factory(runner={"enabled": False},
                        tls={"enabled": True, "cert_file": str(d / "node.pem"),
                             "key_file": str(d / "node.key"), "ca_file": str(d / "ca.pem")})
    tls = ["+tls", str(d / "client.key"), str(d / "client.pem"), "+cf", str(d / "ca.pem")]
    r = subprocess.run([ECHOSCU, "-v", *tls, "-aec", node.ae_title, "127.0.0.1", str(node.port)],
                       env=dicom_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    ser = make_mr_series(2, 16, 16)
    files = write_series(ser, tmp_path / "s")
    r = node.storescu(*files, extra=tls)
    assert r.returncode == 0 and (r.stdout + r.stderr).count("(Success)") == 2, r.stdout + r.stderr
    assert set(spooled(node)) == {ds.SOPInstanceUID for ds in ser}
    assert echo(node).returncode != 0  # plain TCP is not accepted
    assert node.alive()


def test_non_mr_objects_are_accepted_and_dropped_by_the_ingest_filter(node_factory, shared_dicom,
                                                                      tmp_path):
    node = node_factory(runner={"enabled": False}, ingest={"drop_non_mr": True})
    sr = shared_dicom / "edge" / "siemens_phoenix_sr_vb"
    mr = write_series(make_mr_series(2, 16, 16), tmp_path / "mr")
    runs = node.storescu_own_ts(sr, *mr)
    out = "".join(r.stdout + r.stderr for r in runs)
    assert out.count("Received Store Response (Success)") == 3, out  # never refused
    assert set(spooled(node)) == {pydicom.dcmread(p).SOPInstanceUID for p in mr}
    assert "dropped by the ingest filter: modality=SR" in node.log_text()
