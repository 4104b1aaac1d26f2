"""Spool: UID validation, atomic durable writes, duplicates, failure leaves nothing partial."""

from __future__ import annotations

import errno
import os

import pytest

from dicom_node.receive.spool import InvalidUID, Spool, check_uid, is_valid_uid


@pytest.mark.parametrize("uid", ["1.2.3", "1.2.840.10008.5.1.4.1.1.4", "0", "1." + "2" * 62])
def test_valid_uids(uid):
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid",
    ["", "../../etc", "1.2/3", "1..2", ".1.2", "1.2.", "1.2.3a", "1 .2", "1." + "2" * 63, None,
     "1.2\x00.3", "/1.2"],
)
def test_invalid_uids_never_become_paths(tmp_path, uid):
    assert not is_valid_uid(uid)
    sp = Spool(tmp_path)
    with pytest.raises(InvalidUID):
        sp.path_for(uid, "1.2", "1.2.3")  # type: ignore[arg-type]


def test_uid_padding_is_stripped():
    assert check_uid("1.2.3\x00", "x") == "1.2.3"


def test_write_is_atomic_and_duplicates_are_idempotent(tmp_path):
    sp = Spool(tmp_path / "spool")
    p = sp.path_for("1.2", "1.2.3", "1.2.3.4")
    r1 = sp.write(p, b"A" * 1000)
    assert r1.status == "new" and p.read_bytes() == b"A" * 1000
    mtime = p.stat().st_mtime_ns
    r2 = sp.write(p, b"A" * 1000)
    assert r2.status == "same" and p.stat().st_mtime_ns == mtime
    r3 = sp.write(p, b"B" * 500)
    assert r3.status == "replaced" and p.read_bytes() == b"B" * 500
    assert sorted(os.listdir(p.parent)) == ["1.2.3.4.dcm"]  # no temp files


def test_failed_write_leaves_nothing_partial(tmp_path, monkeypatch):
    """An I/O error in the middle of a write (injected) raises and leaves no file at all."""
    sp = Spool(tmp_path / "spool")
    p = sp.path_for("1.2", "1.2.3", "1.2.3.5")
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:100]))  # a partial write first...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError):
        sp.write(p, b"C" * 10_000)
    monkeypatch.setattr(os, "write", real_write)
    assert not p.exists()
    assert os.listdir(p.parent) == []


def test_clean_temp_files_and_iter_files(tmp_path):
    sp = Spool(tmp_path / "spool")
    p = sp.path_for("1.2", "1.2.3", "1.2.3.6")
    sp.write(p, b"x")
    (p.parent / ".tmp-deadbeef").write_bytes(b"partial")
    (p.parent / "notes.txt").write_text("ignored")
    assert sp.clean_temp_files() == 1
    assert [t[:3] for t in sp.iter_files()] == [("1.2", "1.2.3", "1.2.3.6")]


def test_crash_recovery_finishes_complete_temp_files_and_removes_partial_ones(tmp_path):
    """A crash after the fsync but before the rename is durable: start-up finishes the rename."""
    sp = Spool(tmp_path / "spool")
    d = sp.series_dir("1.2", "1.2.3")
    d.mkdir(parents=True)
    (d / ".tmp-1.2.3.8.5.abcd1234").write_bytes(b"12345")  # complete: 5 bytes as named
    (d / ".tmp-1.2.3.9.500.abcd1234").write_bytes(b"123")  # partial
    (d / "1.2.3.10.dcm").write_bytes(b"old")
    (d / ".tmp-1.2.3.10.3.ffff0000").write_bytes(b"new")  # newer complete version
    assert sp.recover_temp_files() == (2, 1)
    assert (d / "1.2.3.8.dcm").read_bytes() == b"12345"
    assert (d / "1.2.3.10.dcm").read_bytes() == b"new"
    assert sorted(os.listdir(d)) == ["1.2.3.10.dcm", "1.2.3.8.dcm"]


def test_temp_file_name_carries_final_name_and_size(tmp_path, monkeypatch):
    sp = Spool(tmp_path / "spool")
    p = sp.path_for("1.2", "1.2.3", "1.2.3.11")
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    sp.write(p, b"abcdef")
    assert seen and seen[0].startswith(".tmp-1.2.3.11.6.")


def test_index_is_reconciled_from_the_spool(tmp_path):
    """Acknowledged instances whose index rows were never committed (crash) are re-indexed."""
    from dicom_factory import make_mr_series

    from dicom_node.store.index import Index

    sp = Spool(tmp_path / "spool")
    ser = make_mr_series(3, 8, 8, contrast="FLAIR", images_in_acquisition=True)
    for ds in ser:
        p = sp.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        from io import BytesIO

        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        sp.write(p, buf.getvalue())
    idx = Index(tmp_path / "index.sqlite3")
    assert idx.reconcile(sp) == 3
    assert idx.reconcile(sp) == 0  # idempotent
    s = idx.series(ser[0].SeriesInstanceUID)
    assert s["n_instances"] == 3 and s["state"] == "receiving" and s["expected_instances"] == 3
    assert len(idx.instance_paths(ser[0].SeriesInstanceUID)) == 3


def test_file_meta_encoder_matches_pydicom():
    from io import BytesIO

    from pydicom.filereader import _read_file_meta_info, read_preamble

    from dicom_node.receive.spool import encode_file_meta

    b = encode_file_meta("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2.4.70",
                         "ORTHANC")
    fp = BytesIO(b)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    assert fp.tell() == len(b)
    assert meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert meta.MediaStorageSOPInstanceUID == "1.2.3.45"
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    assert meta.SourceApplicationEntityTitle.strip() == "ORTHANC"
    assert meta.FileMetaInformationGroupLength == len(b) - 132 - 12
