"""DICOM side of the MS lesion node: receive, route, queue, run, encode and send.

Nothing in this package imports torch at module import time; the runner loads :mod:`ai` only in
the process that runs a job. Research use only; not a medical device.
"""
__version__ = "0.1.0"
