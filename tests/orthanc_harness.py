"""The tests' Orthanc: :mod:`dicom_node.devtools.orthanc` (shared with the demo and the benchmarks).

Kept as a module so test files can ``from orthanc_harness import OrthancServer, ...``.
"""

from dicom_node.devtools.orthanc import ORTHANC_BIN, OrthancServer, dicom_env, free_port, stop_process

__all__ = ["OrthancServer", "free_port", "ORTHANC_BIN", "dicom_env", "stop_process"]
