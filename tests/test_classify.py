"""Series classification from synthetic headers: one test per rule, vendors not in the corpus.

Headers are built here as pydicom Datasets with the attributes each vendor writes (GE ScanOptions
and private pulse-sequence names, Philips Enhanced MR functional groups, Canon/Toshiba and
Hitachi/Fujifilm classic IR headers, ...). No pixel data is needed: the classifier reads headers.
"""

from __future__ import annotations

import itertools

import pytest
from dicom_factory import mr_headers
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dicom_node.route.classify import SeriesInfo, classify_series, split_acquisitions

MR = "1.2.840.10008.5.1.4.1.1.4"
ENH_MR = "1.2.840.10008.5.1.4.1.1.4.1"
AX = [1, 0, 0, 0, 1, 0]
SAG = [0, 1, 0, 0, 0, -1]
COR = [1, 0, 0, 0, 0, -1]


def mr_series(n: int = 20, *, iop=AX, series_uid: str | None = None, **attrs) -> list[Dataset]:
    """``n`` classic MR headers of one series, 3 mm slices, with the given attributes."""
    return mr_headers(n, iop=iop, series_uid=series_uid, **{"SliceThickness": 3, **attrs})


def enhanced(n_frames: int = 30, *, shared: dict | None = None, frame: dict | None = None,
             top: dict | None = None, iops=None) -> list[Dataset]:
    """One Enhanced MR object; ``shared``/``frame`` map functional-group macro -> attributes."""
    ds = Dataset()
    ds.SOPClassUID = ENH_MR
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.Rows = ds.Columns = 256
    ds.NumberOfFrames = n_frames
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    for k, v in (top or {}).items():
        setattr(ds, k, v)

    def item(macros: dict) -> Dataset:
        it = Dataset()
        for seq_kw, attrs in macros.items():
            inner = Dataset()
            for k, v in attrs.items():
                setattr(inner, k, v)
            setattr(it, seq_kw, Sequence([inner]))
        return it

    ds.SharedFunctionalGroupsSequence = Sequence([item(shared or {})])
    frames = []
    for i in range(n_frames):
        macros = dict(frame or {})
        iop = iops[i % len(iops)] if iops else AX
        macros["PlaneOrientationSequence"] = {"ImageOrientationPatient": iop}
        macros["PlanePositionSequence"] = {"ImagePositionPatient": [0, 0, float(i)]}
        frames.append(item(macros))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    return [ds]


def contrast(headers) -> str:
    return classify_series(headers).contrast


# ---------------------------------------------------------------------------- FLAIR, any vendor
@pytest.mark.parametrize("vendor,attrs", [
    ("GE 2D FLAIR (SE\\IR, T2FLAIR_GEMS)", dict(
        Manufacturer="GE MEDICAL SYSTEMS", ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP"],
        ScanOptions=["FAST_GEMS", "IR_GEMS", "T2FLAIR_GEMS"], MRAcquisitionType="2D",
        RepetitionTime="9000", EchoTime="140", InversionTime="2200")),
    ("Siemens 2D tirm dark-fluid", dict(
        Manufacturer="SIEMENS", ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP", "MP"],
        SequenceName="*tir2d1_16", MRAcquisitionType="2D", RepetitionTime="9000", EchoTime="81",
        InversionTime="2500")),
    ("Canon/Toshiba FLAIR (IR)", dict(
        Manufacturer="CANON_MEC", ScanningSequence="IR", SequenceVariant="SP", MRAcquisitionType="2D",
        RepetitionTime="10000", EchoTime="100", InversionTime="2700", SequenceName="FLAIR_2D")),
    ("Hitachi FLAIR (IR)", dict(
        Manufacturer="Hitachi Medical Corporation", ScanningSequence="IR", SequenceVariant=["SK", "SP"],
        MRAcquisitionType="2D", RepetitionTime="8000", EchoTime="100", InversionTime="2000")),
    ("Fujifilm 3D FLAIR", dict(
        Manufacturer="FUJIFILM Healthcare Corporation", ScanningSequence=["SE", "IR"],
        MRAcquisitionType="3D", RepetitionTime="6000", EchoTime="300", InversionTime="1900")),
    ("low-field FLAIR (TI 1300 at 64 mT)", dict(
        Manufacturer="Hyperfine", ScanningSequence=["SE", "IR"], MRAcquisitionType="3D",
        RepetitionTime="4000", EchoTime="200", InversionTime="1300")),
])
def test_flair_is_detected_from_physics_on_any_vendor(vendor, attrs):
    info = classify_series(mr_series(**attrs))
    assert info.contrast == "FLAIR", (vendor, info.reasons)
    assert info.is_image and not info.derived and info.orientation == "AX"
    assert any("TI" in r for r in info.reasons)


def test_ge_3d_cube_flair_sagittal_is_3d_flair():
    info = classify_series(mr_series(120, iop=SAG, Manufacturer="GE MEDICAL SYSTEMS",
                                     ScanningSequence=["SE", "IR"], MRAcquisitionType="3D",
                                     RepetitionTime="6000", EchoTime="130", InversionTime="1850"))
    assert (info.contrast, info.dimensionality, info.orientation, info.n_images) == ("FLAIR", "3D", "SAG", 120)


def test_philips_enhanced_flair_from_functional_groups():
    headers = enhanced(
        30,
        top={"Manufacturer": "Philips", "MRAcquisitionType": "2D"},
        shared={"MRTimingAndRelatedParametersSequence": {"RepetitionTime": 11000},
                "MRModifierSequence": {"InversionRecovery": "YES", "InversionTimes": [2800.0]}},
        frame={"MREchoSequence": {"EffectiveEchoTime": 125.0},
               "MRImageFrameTypeSequence": {"FrameType": ["ORIGINAL", "PRIMARY", "T2", "NONE"],
                                            "AcquisitionContrast": "FLUID_ATTENUATED",
                                            "ComplexImageComponent": "MAGNITUDE"}},
    )
    info = classify_series(headers)
    assert info.contrast == "FLAIR", info.reasons
    assert info.n_images == 30 and "enhanced" in info.flags
    assert info.inversion_time == 2800 and info.echo_time == 125


def test_enhanced_flair_without_inversion_time_uses_inversion_recovery_flag_and_contrast():
    headers = enhanced(
        20,
        shared={"MRTimingAndRelatedParametersSequence": {"RepetitionTime": 9000},
                "MRModifierSequence": {"InversionRecovery": "YES"}},
        frame={"MREchoSequence": {"EffectiveEchoTime": 120.0},
               "MRImageFrameTypeSequence": {"AcquisitionContrast": "FLUID_ATTENUATED"}},
    )
    assert contrast(headers) == "FLAIR"


def test_inversion_recovery_without_ti_and_no_flair_flag_is_unknown():
    # SE\IR with long TE but no TI: could be FLAIR or STIR; the classifier must not guess
    info = classify_series(mr_series(ScanningSequence=["SE", "IR"], RepetitionTime="9000", EchoTime="90"))
    assert info.contrast == "UNKNOWN", info.reasons


# ---------------------------------------------------------------------------- not FLAIR
def test_stir_short_ti_is_other_not_flair():
    info = classify_series(mr_series(ScanningSequence="IR", RepetitionTime="4400", EchoTime="64",
                                     InversionTime="150"))
    assert info.contrast == "OTHER" and "stir" in info.flags


def test_t1_flair_short_te_is_t1():
    assert contrast(mr_series(ScanningSequence=["SE", "IR"], RepetitionTime="2000", EchoTime="10",
                              InversionTime="860", ScanOptions=["IR_GEMS", "T1FLAIR_GEMS"])) == "T1"


def test_mp2rage_second_inversion_is_not_t1_or_flair():
    assert contrast(mr_series(ScanningSequence=["GR", "IR"], MRAcquisitionType="3D",
                              RepetitionTime="5000", EchoTime="2.9", InversionTime="2500")) == "UNKNOWN"


def test_double_inversion_recovery_named_dir_is_not_flair():
    info = classify_series(mr_series(ScanningSequence=["SE", "IR"], MRAcquisitionType="3D",
                                     RepetitionTime="7500", EchoTime="300", InversionTime="3000",
                                     SeriesDescription="t2_spc_DIR_sag"))
    assert info.contrast == "UNKNOWN"


# ---------------------------------------------------------------------------- T1 / T2 / PD
@pytest.mark.parametrize("attrs", [
    # Siemens MPRAGE
    dict(ScanningSequence=["GR", "IR"], SequenceVariant=["SP", "MP"], MRAcquisitionType="3D",
         RepetitionTime="2300", EchoTime="2.3", InversionTime="900", SequenceName="*tfl3d1_16ns"),
    # GE BRAVO (IR-FSPGR), TI 450, TR is the echo spacing
    dict(Manufacturer="GE MEDICAL SYSTEMS", ScanningSequence="GR", SequenceVariant=["SS", "SK"],
         ScanOptions=["FAST_GEMS", "EDR_GEMS", "IR_GEMS"], MRAcquisitionType="3D", RepetitionTime="8.2",
         EchoTime="3.2", InversionTime="450"),
    # Philips 3D T1-TFE: no TI written, SequenceVariant MP
    dict(Manufacturer="Philips", ScanningSequence="GR", SequenceVariant="MP", MRAcquisitionType="3D",
         RepetitionTime="8.1", EchoTime="3.7"),
    # Canon 2D SE T1
    dict(Manufacturer="CANON_MEC", ScanningSequence="SE", MRAcquisitionType="2D", RepetitionTime="500",
         EchoTime="12"),
    # 2D FLASH T1
    dict(ScanningSequence="GR", SequenceVariant=["SP", "OSP"], MRAcquisitionType="2D",
         RepetitionTime="300", EchoTime="2.5", FlipAngle="80"),
])
def test_t1_weighted_acquisitions(attrs):
    info = classify_series(mr_series(**attrs))
    assert info.contrast == "T1", info.reasons


def test_t1_3d_dimensionality_from_sequence_name_when_acquisition_type_missing():
    info = classify_series(mr_series(SequenceName="*tfl3d1_16", EchoTime="2.46"))
    assert (info.contrast, info.dimensionality) == ("T1", "3D")


@pytest.mark.parametrize("tr,te,want", [("5000", "100", "T2"), ("3000", "12", "PD"), ("500", "10", "T1"),
                                        ("1200", "45", "UNKNOWN")])
def test_spin_echo_weighting_from_tr_te(tr, te, want):
    assert contrast(mr_series(ScanningSequence="SE", RepetitionTime=tr, EchoTime=te)) == want


def test_gradient_echo_long_te_is_t2star_other():
    assert contrast(mr_series(ScanningSequence="GR", RepetitionTime="650", EchoTime="20",
                              FlipAngle="20")) == "OTHER"


def test_missing_physics_is_unknown_even_with_a_t1_description():
    info = classify_series(mr_series(SeriesDescription="T1 MPRAGE", ProtocolName="t1_mprage"))
    assert info.contrast == "UNKNOWN" and "no-physics" in info.flags


def test_description_never_overrides_physics():
    info = classify_series(mr_series(SeriesDescription="T1 MPRAGE", ScanningSequence=["SE", "IR"],
                                     RepetitionTime="9000", EchoTime="120", InversionTime="2500"))
    assert info.contrast == "FLAIR" and "description-conflict" in info.flags
    info = classify_series(mr_series(SeriesDescription="AX FLAIR", ScanningSequence="SE",
                                     RepetitionTime="5000", EchoTime="100"))
    assert info.contrast == "T2"


# ---------------------------------------------------------------------------- diffusion and EPI
def test_dwi_from_standard_b_value_canon():
    hs = mr_series(8, Manufacturer="CANON_MEC", ScanningSequence=["SE", "EP"], RepetitionTime="5000",
                   EchoTime="90")
    for i, ds in enumerate(hs):
        ds.DiffusionBValue = 0.0 if i < 4 else 1000.0
    assert contrast(hs) == "DWI"


def test_dwi_from_ge_private_b_value_with_offset():
    hs = mr_series(4, Manufacturer="GE MEDICAL SYSTEMS", ScanningSequence=["EP", "SE"], RepetitionTime="6000",
                   EchoTime="80")
    hs[-1].add_new((0x0043, 0x1039), "IS", [1000001000, 8, 0, 0])
    info = classify_series(hs)
    assert info.contrast == "DWI" and info.b_value_max == 1000


def test_epi_without_diffusion_is_other_even_with_t2_like_timing():
    assert contrast(mr_series(ScanningSequence="EP", SequenceName="epse2d1_90", RepetitionTime="6100",
                              EchoTime="60")) == "OTHER"


@pytest.mark.parametrize("image_type,want", [
    (["DERIVED", "PRIMARY", "DIFFUSION", "ADC"], "OTHER"),
    (["DERIVED", "PRIMARY", "DIFFUSION", "FA"], "OTHER"),
    (["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"], "DWI"),
    (["DERIVED", "PRIMARY", "T1 MAP"], "OTHER"),
    (["DERIVED", "PRIMARY", "SUBTRACTION"], "OTHER"),
])
def test_derived_maps(image_type, want):
    # FLAIR-like timing on purpose: a map keeps the timing of its source and must never be FLAIR
    info = classify_series(mr_series(ImageType=image_type, ScanningSequence=["SE", "IR"],
                                     RepetitionTime="9000", EchoTime="120", InversionTime="2500"))
    assert info.contrast == want, info.reasons
    assert info.derived


def test_mpr_reformat_keeps_weighting_but_is_not_routable_contrast():
    info = classify_series(mr_series(ImageType=["DERIVED", "SECONDARY", "MPR"], ScanningSequence=["SE", "IR"],
                                     RepetitionTime="6000", EchoTime="390", InversionTime="2200",
                                     MRAcquisitionType="3D"))
    assert (info.contrast, info.weighting) == ("OTHER", "FLAIR") and "reformat" in info.flags


def test_phase_and_field_map_images_are_other():
    assert contrast(mr_series(ImageType=["ORIGINAL", "PRIMARY", "P", "ND"], ScanningSequence="GR",
                              RepetitionTime="30", EchoTime="20")) == "OTHER"
    hs = enhanced(8, shared={"MRTimingAndRelatedParametersSequence": {"RepetitionTime": 3.8}},
                  frame={"MREchoSequence": {"EffectiveEchoTime": 1.5},
                         "MRImageFrameTypeSequence": {"FrameType": ["ORIGINAL", "PRIMARY", "T1", "FIELD_MAP"],
                                                      "ComplexImageComponent": "REAL",
                                                      "AcquisitionContrast": "T1"}})
    assert contrast(hs) == "OTHER"


# ---------------------------------------------------------------------------- localizers
def test_three_plane_localizer():
    hs = (mr_series(3, iop=AX, series_uid="1.2.9", ScanningSequence="GR", RepetitionTime="8.6", EchoTime="4")
          + mr_series(3, iop=SAG, series_uid="1.2.9", ScanningSequence="GR", RepetitionTime="8.6", EchoTime="4")
          + mr_series(3, iop=COR, series_uid="1.2.9", ScanningSequence="GR", RepetitionTime="8.6", EchoTime="4"))
    info = classify_series(hs)
    assert info.contrast == "LOCALIZER" and info.orientation == "MIXED"


def test_single_thick_slice_is_localizer_even_with_t1_timing():
    assert contrast(mr_series(1, iop=SAG, ScanningSequence="SE", RepetitionTime="200", EchoTime="20",
                              SliceThickness=10)) == "LOCALIZER"


def test_localizer_hint_needs_structure():
    # 'Survey' with a handful of fast GRE images: localizer (Philips)
    assert contrast(mr_series(5, SeriesDescription="Survey", ScanningSequence="GR", RepetitionTime="11",
                              EchoTime="4.6", MRAcquisitionType="2D")) == "LOCALIZER"
    # a full 3D FLAIR whose description mentions 'loc' stays FLAIR: the hint alone is not enough
    assert contrast(mr_series(160, SeriesDescription="FLAIR loc 3D", ScanningSequence=["SE", "IR"],
                              MRAcquisitionType="3D", RepetitionTime="6000", EchoTime="390",
                              InversionTime="2200", SliceThickness=1)) == "FLAIR"


def test_image_type_localizer():
    assert contrast(mr_series(20, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], ScanningSequence="SE",
                              RepetitionTime="500", EchoTime="10")) == "LOCALIZER"


# ---------------------------------------------------------------------------- non-MR / non-image
def _obj(**attrs) -> list[Dataset]:
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return [ds]


@pytest.mark.parametrize("attrs,is_image", [
    (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.88.22", Modality="SR"), False),
    (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.66.4", Modality="SEG", Rows=16, Columns=16), False),
    (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.481.3", Modality="RTSTRUCT"), False),
    (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.4.2", Modality="MR"), False),  # spectroscopy
    (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.2", Modality="CT", Rows=512, Columns=512,
          RepetitionTime="9000", EchoTime="120", InversionTime="2500"), True),
    (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.7", Modality="MR", Rows=512, Columns=512,
          ScanningSequence=["SE", "IR"], RepetitionTime="9000", EchoTime="120", InversionTime="2500"), True),
])
def test_non_mr_and_non_image_objects_are_never_flair_or_t1(attrs, is_image):
    info = classify_series(_obj(**attrs))
    assert info.contrast == "OTHER" and info.is_image is is_image


def test_empty_or_broken_input_is_unknown_not_an_exception():
    assert classify_series([]).contrast == "UNKNOWN"
    hs = _obj(SOPClassUID=MR, Modality="MR", Rows=4, Columns=4, ImageOrientationPatient=[1, 2])
    hs[0].add_new((0x0018, 0x0080), "LO", "abc")  # garbage TR, as found in odd exports
    hs[0].add_new((0x0043, 0x1039), "LO", "not-a-number")
    info = classify_series(hs)
    assert info.contrast == "UNKNOWN" and info.orientation == ""


# ---------------------------------------------------------------------------- mixed acquisitions
def test_two_acquisitions_under_one_uid_are_flagged_not_stacked():
    uid = generate_uid()
    hs = (mr_series(10, iop=AX, series_uid=uid, ScanningSequence="SE", RepetitionTime="3590", EchoTime="120")
          + mr_series(10, iop=SAG, series_uid=uid, ScanningSequence="SE", RepetitionTime="3000", EchoTime="90"))
    info = classify_series(hs)
    assert info.contrast == "T2" and info.orientation == "MIXED"
    assert "mixed-acquisitions" in info.flags and info.n_acquisitions == 2
    groups = split_acquisitions(hs)
    assert sorted(len(g) for g in groups) == [10, 10]


def test_dual_echo_series_disagreeing_is_unknown():
    uid = generate_uid()
    hs = (mr_series(10, series_uid=uid, ScanningSequence="SE", RepetitionTime="3000", EchoTime="12")
          + mr_series(10, series_uid=uid, ScanningSequence="SE", RepetitionTime="3000", EchoTime="100"))
    info = classify_series(hs)
    assert info.contrast == "UNKNOWN" and info.n_acquisitions == 2


def test_same_slices_re_encoded_are_one_acquisition():
    # small TR jitter (gated/rounded values) is not a second acquisition
    hs = mr_series(6, ScanningSequence="SE", RepetitionTime="5000", EchoTime="100")
    hs[0].RepetitionTime = "5003.5"
    assert split_acquisitions(hs) == [hs]
    assert classify_series(hs).n_acquisitions == 1


def test_enhanced_object_with_two_orientations_is_flagged():
    hs = enhanced(20, iops=[AX, SAG],
                  shared={"MRTimingAndRelatedParametersSequence": {"RepetitionTime": 9000},
                          "MRModifierSequence": {"InversionRecovery": "YES", "InversionTimes": [2500.0]}},
                  frame={"MREchoSequence": {"EffectiveEchoTime": 120.0}})
    info = classify_series(hs)
    assert info.orientation == "MIXED" and "mixed-acquisitions" in info.flags and info.n_acquisitions == 2


# ---------------------------------------------------------------------------- invariants
def test_no_localizer_map_or_non_mr_is_ever_flair_or_t1_over_a_grid():
    """Sweep timings that would be FLAIR/T1 on an original MR and check the guards hold."""
    guards = [
        dict(ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]),
        dict(ImageType=["DERIVED", "SECONDARY", "MPR"]),
        dict(ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]),
        dict(Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"),
        dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.66.4", Modality="SEG"),
    ]
    timings = [("9000", "120", "2500"), ("2300", "2.3", "900"), ("500", "10", None), ("8", "3.5", None)]
    for guard, (tr, te, ti), seq in itertools.product(guards, timings, (["SE", "IR"], "GR")):
        attrs = dict(ScanningSequence=seq, RepetitionTime=tr, EchoTime=te, **guard)
        if ti:
            attrs["InversionTime"] = ti
        info = classify_series(mr_series(12, **attrs))
        assert info.contrast not in ("FLAIR", "T1"), (guard, tr, te, ti, info.reasons)


def test_series_info_round_trips_through_a_dict():
    info = classify_series(mr_series(ScanningSequence="SE", RepetitionTime="500", EchoTime="10"))
    again = SeriesInfo(**info.as_dict())
    assert again == info and again.get("contrast") == "T1"


# ---------------------------------------------------------------------------- look-alikes of T1
def test_ssfp_and_angiography_are_not_t1_although_timing_is_short():
    # 3D CISS / FIESTA: short TR/TE gradient echo that must not become the optional T1 input
    assert contrast(mr_series(96, ScanningSequence="GR", MRAcquisitionType="3D", RepetitionTime="5.4",
                              EchoTime="2.4", SequenceName="FIESTA_3D")) == "OTHER"
    # TOF named only in the description: the description may veto T1, never create it
    info = classify_series(mr_series(120, ScanningSequence="GR", MRAcquisitionType="3D", RepetitionTime="22",
                                     EchoTime="3.6", FlipAngle="18", SeriesDescription="TOF 3D multi-slab"))
    assert (info.contrast, info.weighting) == ("OTHER", "T1") and "description-veto" in info.flags


def test_fat_saturated_post_contrast_t1_stays_t1():
    assert contrast(mr_series(ScanningSequence="SE", RepetitionTime="600", EchoTime="12",
                              SeriesDescription="AX T1 FAT SAT +C", ContrastBolusAgent="Gd")) == "T1"


def test_legacy_converted_enhanced_mr_uses_the_unassigned_classic_attributes():
    hs = enhanced(24, shared={"UnassignedSharedConvertedAttributesSequence": {
        "ScanningSequence": ["SE", "IR"], "RepetitionTime": "9000", "EchoTime": "95", "InversionTime": "2500",
        "MRAcquisitionType": "2D"}})
    hs[0].SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.4"
    info = classify_series(hs)
    assert (info.contrast, info.n_images, info.dimensionality) == ("FLAIR", 24, "2D"), info.reasons


def test_instance_without_geometry_does_not_make_a_second_acquisition():
    hs = mr_series(6, ScanningSequence="SE", RepetitionTime="5000", EchoTime="100")
    del hs[2].ImageOrientationPatient
    assert len(split_acquisitions(hs)) == 1
    assert classify_series(hs).n_acquisitions == 1
