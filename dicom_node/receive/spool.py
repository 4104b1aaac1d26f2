"""Durable spool of received instances: ``<spool>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``.

Every file is written atomically: the bytes go to a temporary file in the same directory, are
``fsync``-ed, then renamed over the final name, so a reader never sees a partial file.

Durability with one ``fsync`` per instance: the temporary file's name carries the final name and
the expected size (``.tmp-<SOPInstanceUID>.<size>.<random>``). The ``fsync`` makes its content
(and, on journaling file systems such as ext4, its directory entry) durable before the C-STORE
response goes out; if a crash then loses the rename, :meth:`Spool.recover_temp_files` finishes
it at start-up (a temporary file of the expected size is complete), and removes incomplete ones.
``fsync_dir: true`` additionally ``fsync``-s the directory after each rename (strict POSIX
durability of the rename, a second disk flush per instance). ``fsync: false`` skips both (test
rigs and benchmarks only: an acknowledged instance can then be lost in a power failure).

UIDs are validated before they become path components (``^[0-9]+(\\.[0-9]+)*$``, at most 64
characters), so no peer can traverse out of the spool.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "encode_file_meta",
    "UID_RE",
    "InvalidUID",
    "is_valid_uid",
    "check_uid",
    "Spool",
    "WriteResult",
]

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TMP_PREFIX = ".tmp-"


IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.9.3811.3.0.4"  # pynetdicom's (the receiver)
IMPLEMENTATION_VERSION = "MSNODE_01"


def _el(elem: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, elem, vr, len(value)) + value


def _ui(v: str) -> bytes:
    b = v.encode("ascii")
    return b + b"\0" if len(b) % 2 else b


def _txt(v: str) -> bytes:
    b = v.encode("ascii", "replace")
    return b + b" " if len(b) % 2 else b


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
                     source_ae: str | None = None) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (explicit VR little endian).

    A hand-rolled encoder (a few microseconds) for the hot path; the dataset bytes follow
    unchanged. ``source_ae`` is recorded as Source Application Entity Title (0002,0016).
    """
    body = b"".join((
        _el(0x0001, b"OB", b"\x00\x01"),
        _el(0x0002, b"UI", _ui(sop_class_uid)),
        _el(0x0003, b"UI", _ui(sop_instance_uid)),
        _el(0x0010, b"UI", _ui(transfer_syntax)),
        _el(0x0012, b"UI", _ui(IMPLEMENTATION_CLASS_UID)),
        _el(0x0013, b"SH", _txt(IMPLEMENTATION_VERSION)),
        _el(0x0016, b"AE", _txt(source_ae.strip()[:16])) if source_ae else b"",
    ))
    return b"\x00" * 128 + b"DICM" + _el(0x0000, b"UL", struct.pack("<I", len(body))) + body


class InvalidUID(ValueError):
    """A UID that may not become a path component."""


def is_valid_uid(uid: object) -> bool:
    """True when ``uid`` is a syntactically valid DICOM UID (digits and dots, <= 64 chars)."""
    return isinstance(uid, str) and 0 < len(uid) <= 64 and UID_RE.match(uid) is not None


def check_uid(uid: object, what: str) -> str:
    """Return ``uid`` stripped of DICOM padding, or raise :class:`InvalidUID` naming ``what``."""
    text = uid.strip("\x00 ") if isinstance(uid, str) else None
    if text is None or not is_valid_uid(text):
        shown = repr(uid if text is None else text)[:80]
        raise InvalidUID(f"invalid {what} {shown}")
    return text


@dataclass(frozen=True)
class WriteResult:
    """Outcome of :meth:`Spool.write`.

    ``status`` is ``"new"`` (first copy), ``"same"`` (identical bytes already there, nothing
    written) or ``"replaced"`` (different bytes: newest kept).
    """

    path: Path
    status: str
    size: int


class Spool:
    """The spool directory.

    Parameters
    ----------
    root : Path
        Directory that holds the study folders (created if missing).
    fsync_dir : bool
        fsync the series directory after each rename (durable directory entry).
    """

    def __init__(self, root: Path, fsync_dir: bool = False, fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.fsync_dir = fsync_dir and fsync
        self._known_dirs: set[Path] = set()

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """Final path of an instance; raises :class:`InvalidUID` for a bad UID."""
        study_uid = check_uid(study_uid, "StudyInstanceUID")
        series_uid = check_uid(series_uid, "SeriesInstanceUID")
        sop_uid = check_uid(sop_uid, "SOPInstanceUID")
        return self.root / study_uid / series_uid / f"{sop_uid}.dcm"

    def series_dir(self, study_uid: str, series_uid: str) -> Path:
        return self.root / check_uid(study_uid, "StudyInstanceUID") / check_uid(
            series_uid, "SeriesInstanceUID"
        )

    def write(self, path: Path, data: bytes | memoryview) -> WriteResult:
        """Write ``data`` to ``path`` atomically and durably.

        An existing file with identical bytes is left alone (``"same"``); different bytes are
        replaced (``"replaced"``). On any error the temporary file is removed and the
        ``OSError`` propagates: nothing partial stays behind.
        """
        size = len(data)
        status = "new"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if st.st_size == size and _same_bytes(path, data):
                return WriteResult(path, "same", size)
            status = "replaced"
        directory = path.parent
        if directory not in self._known_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._known_dirs.add(directory)
        tmp = directory / f"{TMP_PREFIX}{path.stem}.{size}.{uuid.uuid4().hex[:8]}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                view = memoryview(data)
                written = 0
                while written < size:
                    n = os.write(fd, view[written:])
                    if n <= 0:
                        raise OSError(errno.EIO, "short write")
                    written += n
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self.fsync_dir:
            fsync_dir(directory)
        return WriteResult(path, status, size)

    def recover_temp_files(self) -> tuple[int, int]:
        """Finish or remove what a crash left: ``(renamed, removed)``.

        A temporary file whose size equals the size in its name was completely written (and
        ``fsync``-ed before any acknowledgement): it is renamed to its final name. Any other
        temporary file is removed.
        """
        renamed = removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                parts = name[len(TMP_PREFIX):].rsplit(".", 2)
                try:
                    if (len(parts) == 3 and is_valid_uid(parts[0]) and parts[1].isdigit()
                            and os.path.getsize(full) == int(parts[1])):
                        os.replace(full, os.path.join(dirpath, parts[0] + ".dcm"))
                        renamed += 1
                    else:
                        os.unlink(full)
                        removed += 1
                except OSError:
                    pass
        return renamed, removed

    def clean_temp_files(self) -> int:
        """Start-up clean-up (see :meth:`recover_temp_files`); return how many were removed."""
        return self.recover_temp_files()[1]

    def iter_files(self):
        """Yield ``(study_uid, series_uid, sop_uid, path)`` for every spooled instance."""
        if not self.root.is_dir():
            return
        for study in os.scandir(self.root):
            if not study.is_dir() or not is_valid_uid(study.name):
                continue
            for series in os.scandir(study.path):
                if not series.is_dir() or not is_valid_uid(series.name):
                    continue
                for f in os.scandir(series.path):
                    if f.name.endswith(".dcm") and is_valid_uid(f.name[:-4]):
                        yield study.name, series.name, f.name[:-4], Path(f.path)

    def free_mb(self) -> float:
        """Free space on the spool's filesystem, in MiB (for unprivileged users)."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize / (1024 * 1024)


def _same_bytes(path: Path, data: bytes | memoryview) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read() == bytes(data)
    except OSError:
        return False


def save_dataset(ds, path: Path, *, durable: bool) -> Path:
    """Write a pydicom dataset as a Part-10 file atomically: unique temp file beside ``path``,
    then rename, so a reader never sees a partial file.

    ``durable``: fsync the file before the rename and the directory after it (the object
    survives a power cut once this returns); without it the write is atomic only.
    """
    return _write_atomic(path, lambda fh: ds.save_as(fh, enforce_file_format=True), durable)


def copy_file(src: Path, path: Path, *, durable: bool) -> Path:
    """Copy the file ``src`` to ``path`` atomically, byte for byte (``durable`` as in
    :func:`save_dataset`): what was written once is not parsed and encoded again."""

    def write(fh: BinaryIO) -> None:
        with open(src, "rb") as fi:
            shutil.copyfileobj(fi, fh, 1 << 20)

    return _write_atomic(path, write, durable)


def _write_atomic(path: Path, write: Callable[[BinaryIO], object], durable: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def fsync_dir(directory: Path) -> None:
    """fsync a directory (its entries: a rename in it is durable); errors are ignored."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
