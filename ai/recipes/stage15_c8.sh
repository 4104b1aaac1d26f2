#!/usr/bin/env bash
# Stage 15 (variant c8, the control of c7): each shipped stage-14 weight file continued 800
# iterations, lr 2e-4, warm-up 20, cosine, the stage-14 settings otherwise (no --plane-thick).
# CPU, seed 0. The four folds two at a time on one thread each (about 30 min on 2 cores), then
# the final weights from the stage-14 ai/weights/ms_unet.pt (aa117c42) on two threads (about
# 9 min). Outputs under $R (default runs/c8, git-ignored). Model card, "Stage 15".
#
# Rule, written before training (no second look, no retuning); adopted only if all hold:
#  1. clinical folds B+C (python -m ai crossval --weights B=$R/c8B.pt,C=$R/c8C.pt): Dice >= 0.7024,
#     lesion F1 >= 0.745, worst false per true lesion <= 1.0;
#  2. folds A (crossval --weights A=$R/c8A0.pt) and A' (python -m ai evaluate
#     ../shared/data/ms/cross_sectional --weights $R/c8A.pt) on patient19: Dice >= reference -
#     0.01, lesion F1 >= reference - 0.02 (stage 14: 0.409 / 0.454 and 0.748 / 0.540);
#  3. final weights: the suite's floors pass; evaluate-change F1 >= 0.314 with no new lesion on
#     the self and moved-self pairs; bench/inference.py within 15 s / 3 GB.
# Measured: 1. 0.7102 / 0.767 / 0.63; 2. fold A 0.447 / 0.489, fold A' 0.776 / 0.542; 3. see
# the model card. Adopted.
#   R=runs/c8 bash ai/recipes/stage15_c8.sh     (needs the stage-14 fold files: git show the
#   commit before stage 15 for ai/weights/folds/ and ai/weights/ms_unet.pt)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${R:-runs/c8}
W=${W:-ai/weights/folds}          # the stage-14 fold weights
INIT=${INIT:-ai/weights/ms_unet.pt}  # the stage-14 final weights (aa117c42)
mkdir -p "$R"
T=".venv/bin/python -m ai train --lesion-sampling component --no-progress --context 1 --lesion-dice both --ignore-painted --lr 2e-4 --warmup 20 --iters 800"
. ai/recipes/common.sh
continue_folds c8 $W
run c8final --init $INIT --group-weights $G12 --threads 2
