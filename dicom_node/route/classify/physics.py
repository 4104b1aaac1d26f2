"""The weighting of an MR acquisition from its physics (step 5-8 of the classifier in
:mod:`dicom_node.route.classify.decision`): phase and parametric maps, diffusion, EPI/ASL/TOF/SWI,
then inversion recovery, spin echo and gradient echo by TR, TE, TI and flip angle."""

from __future__ import annotations

from dicom_node.route.classify.evidence import _Evidence
from dicom_node.route.classify.info import SeriesInfo
from dicom_node.route.classify.values import _fmt
from dicom_node.route.classify.vocabulary import (
    CALIBRATION_HINT,
    ENHANCED_MR_COLOR_SOP,
    OTHER_KIND_TOKENS,
    PARAMETRIC_MAP_TOKENS,
    PHASE_TOKENS,
    SEQ_DIFF,
    SEQ_EPI,
    SEQ_FLAIR,
    SEQ_GRE,
    SEQ_IR,
    SEQ_SE,
    SEQ_SSFP,
    SEQ_STIR,
    SEQ_SWI_TOF,
    SEQ_T1_PREP_GRE,
    TRACE_TOKENS,
    Contrast,
)


def _physics(ev: _Evidence, info: SeriesInfo, tokens: set[str]) -> tuple[Contrast, list[str]]:
    """Weighting from the acquisition; returns (contrast, reasons)."""
    r: list[str] = []
    names = " ".join(ev.seq_names)
    ss = ev.scanning_sequence
    tr, te, ti = info.repetition_time, info.echo_time, info.inversion_time
    flip = ev.flip
    cics = {f.complex_component for f in ev.frames if f.complex_component}
    acs = ev.acq_contrasts - {"", "UNKNOWN", "MIXED"}

    # 5. phase / field maps, parametric maps, trace -------------------------------------------
    phase = tokens & PHASE_TOKENS
    if ev.image_type_first[2:3] == ["P"] or (phase - {"P", "I"}) or cics & {"PHASE", "IMAGINARY"}:
        info.flags.append("phase")
        what = sorted((phase - {"I"}) | (cics & {"PHASE", "IMAGINARY"}))
        return Contrast.OTHER, [f"phase / field-map images ({', '.join(what)}): not a structural contrast"]
    trace = tokens & TRACE_TOKENS
    maps = tokens & PARAMETRIC_MAP_TOKENS
    maps |= {t for t in tokens if t.endswith("MAP") and t not in PHASE_TOKENS}
    if ev.derived and maps and not trace:
        info.flags.append("parametric-map")
        return Contrast.OTHER, [f"derived parametric map ({', '.join(sorted(maps))})"]
    if maps & {"ADC", "EADC", "FA", "COLFA", "T1MAP", "T2MAP", "CBF", "CBV", "MTT", "TTP", "QSM"} and not trace:
        info.flags.append("parametric-map")
        return Contrast.OTHER, [f"parametric map ({', '.join(sorted(maps))})"]
    if ENHANCED_MR_COLOR_SOP in ev.sop_classes:
        return Contrast.OTHER, ["Enhanced MR Color image (RGB rendering/map)"]

    # 6. diffusion -----------------------------------------------------------------------------
    b = info.b_value_max
    diff = []
    if b is not None and b > 50:
        diff.append(f"b-value up to {_fmt(b)} s/mm2")
    if "DIFFUSION" in tokens or "DIFFUSION" in acs:
        diff.append("ImageType/AcquisitionContrast DIFFUSION")
    if SEQ_DIFF.search(names):
        diff.append(f"diffusion sequence name ({names})")
    if trace:
        diff.append(f"trace-weighted ({', '.join(sorted(trace))})")
    if diff:
        if trace and ev.derived:
            r.append("derived trace-weighted diffusion image: counted as DWI")
        return Contrast.DWI, r + ["diffusion: " + "; ".join(diff)]

    # 7. other kinds ---------------------------------------------------------------------------
    epi = ("EP" in ss or ev.epi_flag or bool(SEQ_EPI.search(names))
           or any("EPI" in o for o in ev.scan_options) or ev.mosaic)
    kinds = (tokens | acs) & OTHER_KIND_TOKENS | ({"TOF"} if "FLOW_ENCODED" in acs else set())
    if acs & {"PERFUSION", "FLOW_ENCODED", "TOF", "TAGGING", "SPECTROSCOPY", "T2_STAR"} or kinds:
        named = kinds | (acs & {"PERFUSION", "FLOW_ENCODED", "TOF", "TAGGING", "T2_STAR"})
        return Contrast.OTHER, [f"acquisition kind {sorted(named)}"
                         ": not a structural T1/T2/FLAIR"]
    if SEQ_SWI_TOF.search(names) or any("TOF" in o or "ANGIO" in o for o in ev.scan_options):
        return Contrast.OTHER, [f"angiography/susceptibility sequence ({names or ', '.join(sorted(ev.scan_options))})"]
    if SEQ_SSFP.search(names):
        return Contrast.OTHER, [f"balanced steady-state free precession ({names}): T2/T1 mixed contrast, not T1/FLAIR"]
    if epi:
        why = "EPI readout" + (" (mosaic)" if ev.mosaic else "") + \
              f", TR {_fmt(tr)}/TE {_fmt(te)}, no diffusion weighting: BOLD/perfusion/EPI reference, not structural"
        return Contrast.OTHER, [why]
    if CALIBRATION_HINT.search(" ".join(ev.descriptions)) and info.n_images <= 200 and (tr or 0) < 20:
        return Contrast.OTHER, ["calibration/reference scan (description) with fast GRE timing"]

    # 8. physics ---------------------------------------------------------------------------------
    ir_names = bool(SEQ_IR.search(names))
    flair_opts = {o for o in ev.scan_options if "FLAIR" in o}
    ir = ("IR" in ss or ev.ir_flag is True or "IR" in ev.scan_options or "IR_GEMS" in ev.scan_options
          or bool(flair_opts) or ir_names or "FLUID_ATTENUATED" in acs or "STIR" in acs)
    gre = ("GR" in ss or "GRADIENT" in ev.echo_pulse or bool(SEQ_GRE.search(names))) and "SE" not in ss
    se = ("SE" in ss or "SPIN" in ev.echo_pulse or bool(SEQ_SE.search(names))) and not gre
    mp = "MP" in ev.sequence_variant
    t1_prep_name = bool(SEQ_T1_PREP_GRE.search(names))
    params = f"TR {_fmt(tr)}/TE {_fmt(te)}" + (f"/TI {_fmt(ti)}" if ti else "") + " ms"
    seq_desc = "/".join(sorted(ss)) or "/".join(sorted(ev.echo_pulse)) or "sequence type unknown"
    if names:
        seq_desc += f", sequence name {names}"

    if ti is not None and ti > 0:
        r.append(f"inversion time {_fmt(ti)} ms ({params}, {seq_desc})")
        if ti < 300:
            info.flags.append("stir")
            return Contrast.OTHER, r + [f"short TI {_fmt(ti)} ms nulls fat: STIR, not FLAIR/T1"]
        if ti > 4500:
            return Contrast.UNKNOWN, r + [f"TI {_fmt(ti)} ms outside the known ranges"]
        flair_flag = bool(flair_opts - {o for o in flair_opts if o.startswith("T1")}) or \
            "FLUID_ATTENUATED" in acs or bool(SEQ_FLAIR.search(names))
        if te is not None and te < 35:
            if ti < 1500:
                return Contrast.T1, r + ["inversion-prepared, TI 300-1500 ms with short TE: T1-weighted "
                                  "(MPRAGE / IR-SPGR / T1-FLAIR)"]
            return Contrast.UNKNOWN, r + [f"long TI {_fmt(ti)} ms with short TE {_fmt(te)} ms (e.g. MP2RAGE second "
                                   "inversion): neither T1 nor FLAIR"]
        if te is None:
            if ti < 1500 and (gre or mp or t1_prep_name):
                return Contrast.T1, r + ["inversion-prepared gradient echo, TI 300-1500 ms: T1-weighted"]
            return Contrast.UNKNOWN, r + ["TE unknown: cannot tell T1-IR from FLAIR"]
        if ti >= 1200 and te >= 60 and (tr is None or (tr >= 2000 and tr > ti)):
            return Contrast.FLAIR, r + [f"long TI {_fmt(ti)} ms nulls CSF, long TE {_fmt(te)} ms and TR "
                                 f"{_fmt(tr)} ms: T2-weighted FLAIR"]
        if ti >= 1200 and te >= 30 and flair_flag and not gre:
            return Contrast.FLAIR, r + [f"long TI {_fmt(ti)} ms, TE {_fmt(te)} ms and vendor FLAIR flag "
                                 f"({', '.join(sorted(flair_opts)) or names or 'FLUID_ATTENUATED'})"]
        return Contrast.UNKNOWN, r + [f"TI {_fmt(ti)} ms with TE {_fmt(te)} / TR {_fmt(tr)} ms: neither T1-IR nor "
                               "FLAIR timing"]

    if ir:
        r.append(f"inversion recovery without a usable TI ({params}, {seq_desc})")
        t1f = {o for o in flair_opts if o.startswith("T1")}
        if t1f and (te is None or te < 35):
            return Contrast.T1, r + [f"vendor T1-FLAIR option {sorted(t1f)} with short TE"]
        if (flair_opts - t1f or "FLUID_ATTENUATED" in acs) and te is not None and te >= 60:
            flags = ', '.join(sorted(flair_opts - t1f)) or 'FLUID_ATTENUATED'
            return Contrast.FLAIR, r + [f"vendor FLAIR flag ({flags}) with long TE {_fmt(te)} ms"]
        if "STIR" in acs or SEQ_STIR.search(names):
            return Contrast.OTHER, r + ["STIR"]
        if (gre or mp or t1_prep_name) and (te is None or te < 10) and (tr is None or tr < 3000):
            return Contrast.T1, r + ["inversion-prepared gradient echo with short TE: T1-weighted (MPRAGE-type)"]
        return Contrast.UNKNOWN, r + ["inversion recovery but TI unknown: cannot tell FLAIR from STIR or T1-IR"]

    if t1_prep_name and (mp or gre or ev.acq_type == "3D") and (te is None or te < 10):
        return Contrast.T1, [f"magnetisation-prepared T1 gradient echo by sequence name ({names})"
                      + (f", {params}" if te is not None else "")]
    if mp and gre and (te is None or te < 10) and (tr is None or tr < 3000):
        return Contrast.T1, [f"magnetisation-prepared (SequenceVariant MP) gradient echo, {params}: "
                             "T1-weighted (TFE/MPRAGE)"]

    if tr is None or te is None:
        ac_only = acs & {"T1", "T2", "PROTON_DENSITY"}
        if ac_only:
            r.append(f"AcquisitionContrast {sorted(ac_only)} but TR/TE missing: not enough physics")
        info.flags.append("no-physics")
        return Contrast.UNKNOWN, r + [f"TR/TE not available ({seq_desc})"]

    if gre:
        if te >= 15:
            return Contrast.OTHER, [f"gradient echo with TE {_fmt(te)} ms ({params}): T2*-weighted"]
        if flip is not None and flip < 6 and tr < 100:
            return Contrast.PD, [f"gradient echo with low flip angle {_fmt(flip)} deg ({params}): PD-weighted"]
        if tr < 100:
            if info.dimensionality == "3D" or flip is None or flip >= 6:
                return Contrast.T1, [f"spoiled gradient echo, short TR/TE ({params}, {seq_desc}"
                              f"{', flip ' + _fmt(flip) if flip is not None else ''}): T1-weighted"]
        if 100 <= tr <= 1000 and (flip is None or flip >= 30):
            return Contrast.T1, [f"2D gradient echo TR {_fmt(tr)}/TE {_fmt(te)} ms"
                          f"{', flip ' + _fmt(flip) if flip is not None else ''}: T1-weighted (FLASH)"]
        return Contrast.UNKNOWN, [f"gradient echo {params}, flip {_fmt(flip)}: weighting unclear"]

    # spin echo, fast spin echo or unspecified readout
    kind = "spin echo" if se else "unspecified readout"
    if tr < 1000 and te < 35:
        return Contrast.T1, [f"{kind}, short TR/short TE ({params}, {seq_desc}): T1-weighted"]
    if tr >= 1500 and te >= 60:
        return Contrast.T2, [f"{kind}, long TR/long TE ({params}, {seq_desc}): T2-weighted"]
    if tr >= 1500 and te < 40:
        return Contrast.PD, [f"{kind}, long TR/short TE ({params}, {seq_desc}): PD-weighted"]
    if not se and tr < 100 and te < 10:
        return Contrast.T1, [f"short TR/TE ({params}) without sequence type: T1-weighted gradient echo timing"]
    return Contrast.UNKNOWN, [f"{kind}, intermediate timing ({params}): weighting unclear"]
