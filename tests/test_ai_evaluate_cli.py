"""``python -m ai synth`` + ``python -m ai evaluate``: the command a user runs on a folder of
labelled cases writes the JSON (overall dice / lesion_f1, per case, settings, the FLAIR-threshold
baseline with --baseline) and the plots."""
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
    # the trivial FLAIR threshold on the same case, far below the model; the phantom was never
    # trained on, so it counts among the unseen cases of its site
    b = res["baseline"]["all"]
    assert b["n_cases"] == 1 and b["dice"] < o["dice"] - 0.2
    assert "baseline" in r.stdout
    assert case["trained_on"] is False and res["unseen"]["all"]["n_cases"] == 1
    assert case["fp_per_true_lesion"] == case["fp"] / case["n_ref"]
