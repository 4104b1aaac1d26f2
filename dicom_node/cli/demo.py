"""``dicom-node demo``: Orthanc + node + a brain MR study through the whole chain."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``demo`` command."""
    s = sub.add_parser("demo", help="Orthanc + node + a study through the whole chain")
    s.add_argument("--workdir", default="demo-output", help="scratch directory (recreated)")
    s.add_argument("--case", default=None,
                   help="NIfTI case folder (FLAIR.nii.gz, T1.nii.gz); default: "
                        "../shared/data/ms/cross_sectional/patient19 if present, else a phantom")
    s.add_argument("--keep", action="store_true", default=None,
                   help="keep Orthanc and the node running at the end (default when interactive)")
    s.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for results")
    s.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Orthanc + node + a brain MR study through the whole chain; print the lesion table."""
    from dicom_node.devtools.demo import main_args

    return main_args(args)
