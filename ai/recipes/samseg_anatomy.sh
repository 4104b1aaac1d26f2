#!/usr/bin/env bash
# Anatomy labels from SAMSEG (FreeSurfer's contrast-adaptive whole-brain segmentation; PyPI
# `samseg`, MIT, ships its atlas, nothing is downloaded at run time) for the labelled real cases:
# training-time only, in its own virtual environment (.venv-train, git-ignored: samseg 0.4a0
# requires numpy < 2, the node runs numpy 2), never needed by the node. Each case: T1 + FLAIR
# where a T1 exists (FLAIR alone otherwise), --pallidum-separate (a FLAIR is among the inputs),
# one thread, about 10 min per clinical 2D case on this VM. The
# labels (seg.mgz, FreeSurfer label values) are converted to $R/<case>/seg.nii.gz, which
# ai.data.samseg_anatomy maps to the model's anatomy channels and bench/samseg_anatomy.py checks
# against the manual ventricle masks. Outputs under $R (default runs/samseg, git-ignored).
#   bash ai/recipes/samseg_anatomy.sh [CASE_DIR ...]   (default: every clinical2d case and patient19)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${R:-runs/samseg}
DATA=${DATA:-../shared/data/ms}
[ -x .venv-train/bin/run_samseg ] || { python3 -m venv .venv-train && .venv-train/bin/pip install -q samseg==0.4a0 nibabel; }
mkdir -p "$R"
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=("$DATA"/clinical2d/tabriz* "$DATA/cross_sectional/patient19")
for c in "${cases[@]}"; do
  name=$(basename "$c")
  [ -f "$R/$name/seg.nii.gz" ] && { echo "skip $name"; continue; }
  inputs=("$PWD/$c/FLAIR.nii.gz")
  [ -f "$c/T1.nii.gz" ] && inputs=("$PWD/$c/T1.nii.gz" "$PWD/$c/FLAIR.nii.gz")
  echo "$(date -u +%H:%M:%S) start $name"
  .venv-train/bin/run_samseg -i "${inputs[@]}" -o "$R/$name" --pallidum-separate --threads 1 > "$R/$name.log" 2>&1
  .venv-train/bin/python -c "import nibabel as nb, sys; nb.save(nb.load(sys.argv[1]), sys.argv[2])" \
    "$R/$name/seg.mgz" "$R/$name/seg.nii.gz"
  echo "$(date -u +%H:%M:%S) done $name"
done
