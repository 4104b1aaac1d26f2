"""Tooling, not runtime: the demo, the Orthanc driver, the NIfTI-to-DICOM wrapper, synthetic results."""
