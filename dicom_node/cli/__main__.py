"""``python -m dicom_node.cli``: the same as the ``dicom-node`` command."""

import sys

from dicom_node.cli import main

sys.exit(main())
