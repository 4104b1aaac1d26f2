#!/usr/bin/env bash
# Change net 2 (issue 11; 2026-11-30; measured, NOT adopted: model card, "Lesion change", "Change
# net"). Net 1 (change_net1.sh) with the synthesis options ai.change_synth.NET2, chosen after net 1
# was scored on the real pairs (a SECOND LOOK at patients 01 and 12), each a generic mismatch
# between the synthesis and real follow-ups, none a setting read off the real pairs' scores:
#  - fainter changes, FLAIR gain 1.05-1.6 (net 1: 1.12-1.6);
#  - lesions whose signal rises or falls between the studies (gain x 0.25-0.6 at the fainter time
#    point), labelled growth or loss;
#  - on the 1 mm brain, half of the priors on slices 1 mm thicker than the follow-up's (patient01's
#    real prior has 4 mm slices against 3 mm).
# Same pairs' counts, seeds, training and rule as net 1 (its threshold, region and the three
# adoption conditions).
# Measured (weights sha256 2778fbd2...): joint + net 15 of 53 expert regions found, 16 of 30
# predicted regions true, F1 0.370 (joint alone 0.363, the rule asks 0.413); the net alone 10 / 53,
# 11 / 20, F1 0.281; self pairs 0 regions, moved self pairs 8 (at most 1 allowed); the net takes
# 9.5 s per follow-up with its mirror TTA (patient12, 48 x 320 x 320; at most 5 s allowed). Rules
# 1, 2 and 3 fail: not adopted.
#   bash ai/recipes/change_net2.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${R:-runs/chg}
mkdir -p "$R"
.venv/bin/python -m ai train-change "$R/net2.pt" --mask-pairs 32 --clinical-pairs 72 --pair-seed 11 --seed 0 \
    --synthesis net2 --iters 1500 --threads 2
