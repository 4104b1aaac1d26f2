"""``python -m ai synth`` + ``python -m ai evaluate``: the command a user runs on a folder of
labelled cases writes the JSON (overall dice / lesion_f1, per case, settings, the FLAIR-threshold
baseline with --baseline, the detection by lesion size) and the plots."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_evaluate_command_on_a_synthetic_case(tmp_path):
    cases = tmp_path / "cases"
    subprocess.run([sys.executable, "-m", "ai", "synth", str(cases), "--n", "1", "--seed", "90000",
                    "--thickness", "1"], cwd=REPO, check=True, capture_output=True, timeout=600)
    out, plots = tmp_path / "eval.json", tmp_path / "plots"
    r = subprocess.run([sys.executable, "-m", "ai", "evaluate", str(cases), "--json", str(out), "--plots",
                        str(plots), "--device", "cpu", "--baseline"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    o = res["overall"]
    assert o["n_cases"] == 1 and o["dice"] >= 0.85 and o["lesion_f1"] >= 0.85, o
    assert res["tta"] is True and res["precision"] in ("fp32", "bf16")
    (case,) = res["cases"].values()
    assert {"lesion_sensitivity", "lesion_ppv", "abs_volume_diff_ml", "rel_volume_diff", "curves"} <= set(case)
    assert sum(map(sum, res["location_confusion"]["matrix"])) == case["n_ref"]
    assert {p.name for p in plots.glob("*.png")} >= {"roc_froc.png", "location_confusion.png"}
    assert "dice=" in r.stdout and "lesion_f1=" in r.stdout
    b0 = res["overall"]["pooled"]["by_size"][0]
    assert f"by size (mm3): 10-20 found {b0['found']}/{b0['n_ref']}, not seen {b0['not_seen']}" in r.stdout
    # the trivial FLAIR threshold on the same case, far below the model; the phantom was never
    # trained on, so it counts among the unseen cases of its site
    b = res["baseline"]["all"]
    assert b["n_cases"] == 1 and b["dice"] < o["dice"] - 0.2
    assert "baseline" in r.stdout
    assert case["trained_on"] is False and res["unseen"]["all"]["n_cases"] == 1
    assert case["fp_per_true_lesion"] == case["fp"] / case["n_ref"]
    # detection by lesion size adds up to the case's lesion counts
    bins = case["by_size"]
    assert [b["min_mm3"] for b in bins] == [10.0, 20.0, 50.0, 200.0] and bins[-1]["max_mm3"] is None
    assert sum(b["n_ref"] for b in bins) == case["n_ref"] and sum(b["found"] for b in bins) == case["tp_ref"]
    assert sum(b["false"] for b in bins) == case["fp"]
    assert all(0 <= b["not_seen"] <= b["n_ref"] - b["found"] for b in bins)
    assert o["pooled"]["by_size"] == bins


def test_detection_by_size_counts_found_unseen_and_false_lesions_per_bin():
    """A 15 mm3 reference lesion overlapped by a prediction is found; a 100 mm3 one the model gives
    probability 0.05 is missed and not seen; a 300 mm3 one it gives 0.3 (below the cut) is missed
    but seen; a 30 mm3 prediction on no reference lesion is a false one of 20-50 mm3."""
    import numpy as np

    from ai.evaluate import detection_by_size, format_by_size, pool_by_size
    from ai.lesions import components

    ref = np.zeros((20, 40, 40), bool)
    pred = np.zeros_like(ref)
    prob = np.zeros(ref.shape, np.float32)
    ref[1, 1:4, 1:6] = True  # 15 voxels of 1 mm3
    pred[1, 1:4, 1:5] = True  # 12, on it
    prob[pred] = 0.9
    ref[5:9, 10:15, 10:15] = True  # 100
    prob[5:9, 10:15, 10:15] = 0.05
    ref[10:13, 20:30, 20:30] = True  # 300
    prob[10:13, 20:30, 20:30] = 0.3
    pred[15:18, 30:35, 30:32] = True  # 30, false
    prob[15:18, 30:35, 30:32] = 0.8
    sp = (1.0, 1.0, 1.0)
    pl, npred = components(pred, sp)
    rl, nref = components(ref, sp)
    bins = detection_by_size(prob, pl, npred, rl, nref, 1.0)
    got = {b["min_mm3"]: (b["n_ref"], b["found"], b["not_seen"], b["false"]) for b in bins}
    assert got == {10.0: (1, 1, 0, 0), 20.0: (0, 0, 0, 1), 50.0: (1, 0, 1, 0), 200.0: (1, 0, 0, 0)}
    # pooled over two such cases, and the line the commands print
    two = pool_by_size([bins, bins])
    assert [(b["n_ref"], b["found"], b["not_seen"], b["false"]) for b in two] == [(2, 2, 0, 0), (0, 0, 0, 2),
                                                                                  (2, 0, 2, 0), (2, 0, 0, 0)]
    assert format_by_size(two) == ("by size (mm3): 10-20 found 2/2, not seen 0, false 0; 20-50 found 0/0, not seen 0, "
                                   "false 2; 50-200 found 0/2, not seen 2, false 0; >=200 found 0/2, not seen 0, "
                                   "false 0")
    assert pool_by_size([]) == []
