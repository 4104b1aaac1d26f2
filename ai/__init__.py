"""MS lesion AI engine: preprocessing, UNet, inference, lesion analysis.

No DICOM networking lives here: inputs are SimpleITK images, outputs are numpy arrays and the
plain dataclasses of :mod:`ai.types`. Research use only; not a medical device.
"""
