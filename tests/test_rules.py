"""Routing rules: validation with file/line/field, condition operators, study routing and tie-breaks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from dicom_factory import mr_headers
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.route.classify import SeriesInfo, classify_series
from dicom_node.route.rules import RulesConfigError, load_rules, loads_rules

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "config" / "routing.yaml"


def header(**attrs) -> Dataset:
    return mr_headers(1, study_uid="1.2.3", **attrs)[0]


FLAIR_2D = dict(ScanningSequence=["SE", "IR"], MRAcquisitionType="2D", RepetitionTime="9000", EchoTime="90",
                InversionTime="2500")
FLAIR_3D = dict(ScanningSequence=["SE", "IR"], MRAcquisitionType="3D", RepetitionTime="6000", EchoTime="390",
                InversionTime="2200")
T1_3D = dict(ScanningSequence=["GR", "IR"], MRAcquisitionType="3D", RepetitionTime="2300", EchoTime="2.3",
             InversionTime="900")
T2_2D = dict(ScanningSequence="SE", MRAcquisitionType="2D", RepetitionTime="5000", EchoTime="100")


def series(n: int = 30, **attrs) -> tuple[str, Dataset, SeriesInfo]:
    """(uid, first header, SeriesInfo) as the node's completion code passes them."""
    hs = mr_headers(n, study_uid="1.2.3", **attrs)
    return hs[0].SeriesInstanceUID, hs[0], classify_series(hs)


@pytest.fixture(scope="module")
def default_rules():
    return load_rules(DEFAULT)


# ------------------------------------------------------------------------ default rules
def test_default_rules_route_a_flair_and_t1_study_of_any_vendor(default_rules):
    flair = series(30, Manufacturer="Hitachi", **FLAIR_2D)
    t1 = series(160, Manufacturer="CANON_MEC", **T1_3D)
    t2 = series(30, **T2_2D)
    routes = default_rules.route_study([t2, flair, t1])
    assert len(routes) == 1
    r = routes[0]
    assert (r.pipeline, r.inputs, r.missing_optional) == ("ms-lesions", {"flair": flair[0], "t1": t1[0]}, [])
    assert r.destinations == [{"sender": True}] and r.optional_grace_seconds > 0


def test_default_rules_flair_only_waits_for_optional_t1(default_rules):
    flair = series(30, **FLAIR_2D)
    [r] = default_rules.route_study([flair])
    assert r.inputs == {"flair": flair[0]} and r.missing_optional == ["t1"]


def test_default_rules_do_not_route_without_flair(default_rules):
    t1 = series(160, **T1_3D)
    assert default_rules.route_study([t1, series(30, **T2_2D)]) == []
    why = default_rules.explain_study([t1])
    assert any("required role flair" in n for n in why["ms-lesions-brain"])


def test_default_rules_ignore_non_brain_body_part_but_accept_missing_one(default_rules):
    spine = series(30, BodyPartExamined="CSPINE", **FLAIR_2D)
    assert default_rules.route_study([spine]) == []
    head = series(30, BodyPartExamined="HEAD", **FLAIR_2D)
    assert default_rules.route_study([head])[0].inputs["flair"] == head[0]


def test_default_rules_never_stack_a_mixed_series(default_rules):
    uid = generate_uid()
    hs = []
    for iop in ([1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1]):
        for _k in range(10):
            h = header(**FLAIR_2D)
            h.SeriesInstanceUID = uid
            h.ImageOrientationPatient = iop
            hs.append(h)
    info = classify_series(hs)
    assert info.contrast == "FLAIR" and info.orientation == "MIXED"
    assert default_rules.route_study([(uid, hs[0], info)]) == []
    rule, expl = default_rules.match_series(hs, info)
    assert rule is None and any("n_acquisitions is 2" in e for e in expl)


def test_tie_break_prefers_3d_then_most_images_then_latest_series_number(default_rules):
    a = series(24, SeriesNumber=3, **FLAIR_2D)
    b = series(176, SeriesNumber=4, **FLAIR_3D)
    c = series(176, SeriesNumber=9, **FLAIR_3D)
    d = series(40, SeriesNumber=10, **FLAIR_2D)
    [r] = default_rules.route_study([a, b, c, d])
    assert r.inputs["flair"] == c[0]
    assert r.candidates["flair"] == [c[0], b[0], d[0], a[0]]


def test_among_2d_flairs_axial_slices_win_over_a_sagittal_series_with_more_images(default_rules):
    """The model reads axial slices; a thick sagittal FLAIR gave it more false lesions (model card,
    "Slice orientation"), so a study with both runs the axial one, and a 3D FLAIR still comes first."""
    sag = series(40, SeriesNumber=5, ImageOrientationPatient=[0, 1, 0, 0, 0, -1], **FLAIR_2D)
    ax = series(24, SeriesNumber=3, **FLAIR_2D)
    assert (sag[2].orientation, ax[2].orientation) == ("SAG", "AX")
    [r] = default_rules.route_study([sag, ax])
    assert r.candidates["flair"] == [ax[0], sag[0]]
    sag3d = series(176, SeriesNumber=7, ImageOrientationPatient=[0, 1, 0, 0, 0, -1], **FLAIR_3D)
    assert default_rules.route_study([sag, ax, sag3d])[0].inputs["flair"] == sag3d[0]


def test_pre_contrast_preferred(default_rules):
    post = series(176, SeriesNumber=9, ContrastBolusAgent="Gadovist", **FLAIR_3D)
    pre = series(176, SeriesNumber=4, **FLAIR_3D)
    assert default_rules.route_study([post, pre])[0].inputs["flair"] == pre[0]


def test_match_series_explains_why_other_rules_did_not_match(default_rules):
    uid, first, info = series(30, **T2_2D)
    rule, expl = default_rules.match_series([first], info)
    assert rule is None
    text = " ".join(expl)
    assert "contrast is 'T2', wanted 'FLAIR'" in text and "wanted 'T1'" in text
    uid, first, info = series(30, **FLAIR_2D)
    assert default_rules.match_series(first, info)[0] == "ms-lesions-brain"


# ------------------------------------------------------------------------ conditions
RULE_TMPL = """
version: 1
rules:
  - name: r
    pipeline: ms-lesions
    inputs:
      flair:
        required: true
        when:
{cond}
"""


def rules_with(cond: str):
    return loads_rules(RULE_TMPL.format(cond=textwrap.indent(textwrap.dedent(cond).strip(), " " * 10)))


@pytest.mark.parametrize("cond,attrs,want", [
    ("SeriesDescription: AX FLAIR", dict(SeriesDescription="ax flair"), True),          # equals, case
    ("SeriesDescription: [sag flair, ax flair]", dict(SeriesDescription="AX FLAIR"), True),  # one-of
    ("SeriesDescription: {regex: 'fl(air|r)'}", dict(SeriesDescription="t2_FLR"), True),
    ("SeriesDescription: {regex: '^flair'}", dict(SeriesDescription="AX FLAIR"), False),
    ('"0018,0080": {min: 5000, max: 12000}', dict(RepetitionTime="9000"), True),       # tag + range
    ('"(0018,0080)": {min: 10000}', dict(RepetitionTime="9000"), False),
    ("BodyPartExamined: {exists: false}", dict(), True),
    ("BodyPartExamined: {exists: true}", dict(), False),
    ("BodyPartExamined: {not: {regex: spine}}", dict(), True),                           # absent -> not ok
    ("BodyPartExamined: {not: {regex: spine}}", dict(BodyPartExamined="LSPINE"), False),
    ("ImageType: {contains: PRIMARY}", dict(), True),                                    # multi-valued
    ("ImageType: ORIGINAL", dict(), True),
    ("ImageType: 'ORIGINAL\\PRIMARY\\M\\ND'", dict(), True),
    ("ImageType: DERIVED", dict(), False),
    ('"0019,109C": {regex: flair}', dict(), False),                                       # private, absent
    ("any: [{Manufacturer: GE}, {Manufacturer: {regex: canon|toshiba}}]", dict(Manufacturer="CANON_MEC"), True),
    ("all: [{Manufacturer: {regex: canon}}, {not: {SeriesNumber: {max: 3}}}]",
     dict(Manufacturer="CANON_MEC", SeriesNumber=2), False),
    ("n_images: {min: 20}", dict(), True),
    ("orientation: [AX, OBL]", dict(), True),
    ("flags: {contains: mosaic}", dict(), False),
    ("is_image: true", dict(), True),
    ("derived: false", dict(), True),
])
def test_condition_operators(cond, attrs, want):
    rs = rules_with(cond)
    uid, first, info = series(25, **{**FLAIR_2D, **attrs})
    assert (rs.match_series(first, info)[0] == "r") is want


def test_private_tag_condition_matches_vendor_sequence_name():
    rs = rules_with('"0019,109C": {regex: "flair"}')
    uid, first, info = series(25, **FLAIR_2D)
    first.add_new((0x0019, 0x0010), "LO", "GEMS_ACQU_01")
    first.add_new((0x0019, 0x109C), "LO", "cube_t2flair")
    assert rs.match_series(first, info)[0] == "r"


def test_keyword_is_found_in_enhanced_functional_groups():
    from pydicom.sequence import Sequence

    rs = rules_with("RepetitionTime: {min: 5000}")
    ds = header()
    timing = Dataset()
    timing.RepetitionTime = 9000
    shared = Dataset()
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    info = SeriesInfo(contrast="FLAIR", is_image=True, modality="MR")
    assert rs.match_series(ds, info)[0] == "r"


def test_calling_ae_and_study_condition_and_stop():
    rs = loads_rules("""
version: 1
rules:
  - name: research-site
    pipeline: ms-lesions
    stop: false
    study: {StudyDescription: {regex: "research"}}
    inputs: {flair: {required: true, when: {contrast: FLAIR}}}
    destinations: [{peer: research-pacs}]
    priority: 2
  - name: from-modality
    pipeline: ms-lesions
    inputs: {flair: {required: true, when: {contrast: FLAIR, calling_ae: SCANNER1}}}
    destinations:
      - {ae_title: PACS, host: 10.1.2.3, port: 104}
      - {sender: true}
""")
    flair = series(30, StudyDescription="MS research", **FLAIR_2D)
    routes = rs.route_study([flair], context={"calling_ae": "SCANNER1"})
    assert [r.rule for r in routes] == ["research-site", "from-modality"]
    assert routes[0].destinations == [{"peer": "research-pacs"}] and routes[0].priority == 2
    assert routes[1].destinations == [{"ae_title": "PACS", "host": "10.1.2.3", "port": 104}, {"sender": True}]
    assert [r.rule for r in rs.route_study([flair], context={"calling_ae": "OTHER"})] == ["research-site"]
    plain = series(30, StudyDescription="routine", **FLAIR_2D)
    assert rs.route_study([plain]) == []
    assert rs.peer_names() == {"research-pacs"}


def test_one_series_fills_one_role_only():
    rs = loads_rules("""
rules:
  - name: two
    pipeline: ms-lesions
    inputs:
      a: {required: true, when: {contrast: FLAIR}}
      b: {required: true, when: {contrast: FLAIR}}
""")
    one = series(30, **FLAIR_2D)
    assert rs.route_study([one]) == []
    two = series(30, **FLAIR_2D)
    [r] = rs.route_study([one, two])
    assert set(r.inputs.values()) == {one[0], two[0]}


# ------------------------------------------------------------------------ validation
def _error_of(text: str, tmp_path: Path) -> str:
    p = tmp_path / "routing.yaml"
    p.write_text(textwrap.dedent(text).lstrip())
    with pytest.raises(RulesConfigError) as exc:
        load_rules(p)
    return str(exc.value)


GOOD = """
version: 1
rules:
  - name: ms
    pipeline: ms-lesions
    inputs:
      flair:
        required: true
        when:
          contrast: FLAIR
"""


@pytest.mark.parametrize("broken,line,field,words", [
    (GOOD.replace("contrast: FLAIR", "contrst: FLAIR"), 9, "rules[0].inputs.flair.when.contrst", "unknown field"),
    (GOOD.replace("contrast: FLAIR", "SeriesDescription: {regex: '(unclosed'}"), 9,
     "rules[0].inputs.flair.when.SeriesDescription.regex", "invalid regular expression"),
    (GOOD.replace("contrast: FLAIR", "n_images: {atleast: 3}"), 9, "rules[0].inputs.flair.when.n_images.atleast",
     "unknown operator"),
    (GOOD.replace("pipeline: ms-lesions", "pipeline: ms-lesion"), 4, "rules[0].pipeline", "unknown pipeline"),
    (GOOD.replace("    pipeline: ms-lesions\n", ""), 3, "rules[0].pipeline", "Field required"),
    (GOOD.replace("required: true", "required: yes please"), 7, "rules[0].inputs.flair.required", "boolean"),
    (GOOD + "    destinations:\n      - {ae_title: PACS, host: pacs, port: 99999}\n", 11,
     "rules[0].destinations[0].port", "65535"),
    (GOOD + "    destinations:\n      - {ae_title: PACS}\n", 11, "rules[0].destinations[0]", "ae_title, host and port"),
    (GOOD + "    priorty: 3\n", 10, "rules[0].priorty", "Extra inputs are not permitted"),
    (GOOD.replace("required: true", "required: false"), 5, "rules[0].inputs", "must be required"),
])
def test_invalid_rules_name_file_line_and_field(tmp_path, broken, line, field, words):
    msg = _error_of(broken, tmp_path)
    assert f"routing.yaml:{line}: {field}" in msg, msg
    assert words in msg


def test_yaml_syntax_error_names_the_line(tmp_path):
    msg = _error_of("rules:\n  - name: x\n    pipeline: [oops\n", tmp_path)
    assert "routing.yaml:4:" in msg and "YAML syntax error" in msg


def test_duplicate_rule_names_and_missing_file(tmp_path):
    msg = _error_of(GOOD + GOOD.split("rules:\n", 1)[1], tmp_path)
    assert "duplicate rule name 'ms'" in msg
    with pytest.raises(RulesConfigError, match="cannot read"):
        load_rules(tmp_path / "nope.yaml")


def test_every_error_is_reported_at_once(tmp_path):
    msg = _error_of(GOOD.replace("contrast: FLAIR", "all: [{contrst: FLAIR}, {n_images: {min: x}}]"), tmp_path)
    assert "contrst" in msg and "min needs a number" in msg
