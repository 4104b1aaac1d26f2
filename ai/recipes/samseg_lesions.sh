#!/usr/bin/env bash
# SAMSEG's MS lesion mode on the labelled real cases: the peer that bench/samseg_lesions.py scores
# beside the model. SAMSEG (PyPI `samseg`, MIT, ships its atlas and lesion shape model, nothing is
# downloaded at run time) runs in its own environment (.venv-train, git-ignored), never needed by
# the node. Its lesion mode needs tensorflow: tensorflow-cpu is added to .venv-train, with numpy
# held below 2 (samseg 0.4a0 requires it; tensorflow-cpu 2.21 imports and runs with numpy 1.26).
# Each case: T1 + FLAIR (FLAIR alone where no T1), --lesion with FLAIR lesions brighter than the
# cortex mean (--lesion-mask-pattern 0 1; FLAIR alone: 1), seed 0, one thread.
# Outputs: $R/<case>/seg.nii.gz (FreeSurfer labels, 99 = lesion), default runs/samseg_lesion.
#   bash ai/recipes/samseg_lesions.sh [CASE_DIR ...]   (default: every clinical2d case and patient19)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${R:-runs/samseg_lesion}
DATA=${DATA:-../shared/data/ms}
[ -x .venv-train/bin/run_samseg ] || { python3 -m venv .venv-train && .venv-train/bin/pip install -q samseg==0.4a0 nibabel; }
.venv-train/bin/python -c "import tensorflow" 2>/dev/null || \
  .venv-train/bin/pip install -q tensorflow-cpu==2.21.0 "numpy<2"
mkdir -p "$R"
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=("$DATA/cross_sectional/patient19" "$DATA"/clinical2d/tabriz*)
for c in "${cases[@]}"; do
  name=$(basename "$c")
  [ -f "$R/$name/seg.nii.gz" ] && { echo "skip $name"; continue; }
  inputs=("$PWD/$c/FLAIR.nii.gz"); pattern=(1)
  [ -f "$c/T1.nii.gz" ] && { inputs=("$PWD/$c/T1.nii.gz" "$PWD/$c/FLAIR.nii.gz"); pattern=(0 1); }
  echo "$(date -u +%H:%M:%S) start $name"
  .venv-train/bin/run_samseg -i "${inputs[@]}" -o "$R/$name" --pallidum-separate --lesion \
    --lesion-mask-pattern "${pattern[@]}" --threads 1 --random-seed 0 > "$R/$name.log" 2>&1
  .venv-train/bin/python -c "import nibabel as nb, sys; nb.save(nb.load(sys.argv[1]), sys.argv[2])" \
    "$R/$name/seg.mgz" "$R/$name/seg.nii.gz"
  echo "$(date -u +%H:%M:%S) done $name"
done
