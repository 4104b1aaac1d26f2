"""Cross-patient validation: folds are whole, disjoint patients; weights trained on a fold's patient
are refused for that fold; the confidence table says where predicted lesions stop being mostly true."""
from __future__ import annotations

import pytest

from ai.crossval import FOLDS, confidence_table, crossval
from ai.infer import WEIGHTS


def test_folds_are_disjoint_whole_patients():
    names = [p.name for cases in FOLDS.values() for p in cases]
    assert len(names) == len(set(names)) == 11
    assert [p.name for p in FOLDS["A"]] == ["patient19"]


def test_weights_that_trained_on_a_fold_are_refused_for_it():
    # the shipped weights trained on every labelled case: no fold may be scored with them
    with pytest.raises(SystemExit, match="trained on"):
        crossval({"A": WEIGHTS}) if (FOLDS["A"][0] / "lesion_mask.nii.gz").exists() else \
            pytest.skip("../shared/data/ms absent")


def test_confidence_table_and_cut():
    lesions = [[0.55, 0.7, False], [0.58, 0.9, False], [0.62, 0.9, False], [0.65, 0.9, True],
               [0.75, 0.95, True], [0.95, 1.0, True], [0.85, 1.0, True]]
    t = confidence_table(lesions)
    assert [r["n"] for r in t["bins"]] == [2, 2, 1, 1, 1]
    assert [r["true"] for r in t["bins"]] == [0, 1, 1, 1, 1]
    # below 0.7: 1 of 4 true -> most are false; below 0.8: 2 of 5 -> still; below 0.9: 3 of 6 -> not
    assert t["cut_below_which_most_are_false"] == 0.8
    assert confidence_table([])["cut_below_which_most_are_false"] == 0.0
    # what the node's flag (0.7) says of these lesions: 1 of 4 below it true, 3 of 3 above
    nc = t["node_cut"]
    assert nc["cut"] == 0.7 and (nc["below"]["n"], nc["below"]["true"]) == (4, 1)
    assert (nc["at_or_above"]["n"], nc["at_or_above"]["true"], nc["at_or_above"]["ppv"]) == (3, 3, 1.0)
    assert confidence_table([])["node_cut"]["below"] == {"n": 0, "true": 0, "ppv": None}
