#!/usr/bin/env bash
# The stage-14 weights of the two 3D folds, from scratch: fold A (patient19 held out: no 3D brain
# at all, -> ai/weights/folds/foldA.pt = $R/c6A0.pt) and fold A' (patient19's lesion labels never
# drawn, its brain with other patients' lesion masks drawn, -> folds/foldA_prime.pt = $R/c6A.pt),
# stage 8 -> stage 14 by the model card's commands. CPU, seed 0: about 100 min on 2 cores (the
# shared prefix on two threads, then the two branches on one thread each). Run from anywhere;
# outputs under $R (default runs/foldsA, git-ignored). See ai/weights/MODEL_CARD.md, "Fold A and
# fold A' weights".
#   bash ai/recipes/stage14_folds_A.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${R:-runs/foldsA}
mkdir -p "$R"
T=".venv/bin/python -m ai train --lesion-sampling component --no-progress"
S9="--lr 5e-4 --warmup 50 --iters 600"
S10="--lr 1e-4 --warmup 20 --iters 400"
HO="--hold-out patient19"
. ai/recipes/common.sh
# shared prefix, two threads
run cvA  --lr 2e-3 --iters 2500 $HO --threads 2
run v1A  --init $R/cvA.pt $S9 --group-weights $G9 $HO --threads 2
run v2A  --init $R/v1A.pt $S9 --group-weights $G9 $HO --threads 2
# fold A' branch (one thread) beside fold A's (one thread)
(
run aA   --init $R/v2A.pt $S10 --group-weights $G9 $HO --threads 1
run v1A2 --init $R/aA.pt $S9 --group-weights $GA9 --threads 1
run wA   --init $R/v1A2.pt $S10 --group-weights $GA --threads 1
run c1A  --init $R/wA.pt --context 1 --lr 3e-4 --warmup 20 --iters 600 --group-weights $GA --threads 1
run c1aA --init $R/c1A.pt --context 1 $S10 --group-weights $GA --threads 1
run c6A  --init $R/c1aA.pt --context 1 --lesion-dice both --ignore-painted --lr 3e-4 --warmup 50 --iters 2000 --group-weights $GA --threads 1
) &
(
run wA0   --init $R/v2A.pt $S10 --group-weights $G12 $HO --threads 1
run c1A0  --init $R/wA0.pt --context 1 --lr 3e-4 --warmup 20 --iters 600 --group-weights $G12 $HO --threads 1
run c1aA0 --init $R/c1A0.pt --context 1 $S10 --group-weights $G12 $HO --threads 1
run c6A0  --init $R/c1aA0.pt --context 1 --lesion-dice both --ignore-painted --lr 3e-4 --warmup 50 --iters 2000 --group-weights $G12 $HO --threads 1
) &
wait
log "all done"
