"""``dicom-node rules test``: dry-run the routing rules over DICOM files and folders."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.route.classify import Contrast, SeriesInfo, classify_series
from dicom_node.route.rules.load import default_rules_path, load_rules
from dicom_node.route.rules.ruleset import RuleSet, StudyRoute
from dicom_node.route.rules.schema import RulesConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``rules test`` (under the ``rules`` group of routing rules tools)."""
    s = sub.add_parser("rules", help="routing rules tools")
    rsub = s.add_subparsers(dest="rules_command", required=True)
    t = rsub.add_parser("test", help="dry-run the routing rules over DICOM files/folders")
    t.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders (recursive)")
    t.add_argument("--json", action="store_true", help="one JSON object per line per series")
    t.add_argument("--rules", default=None, help="routing file (default: config/routing.yaml)")
    t.set_defaults(func=cmd_rules_test)


def cmd_rules_test(args: argparse.Namespace) -> int:
    """Dry-run the routing rules over DICOM files/folders (no network, no jobs)."""
    return rules_test_main(args.paths, args.rules, args.json)


def _series_report(sf: Any, info: SeriesInfo, ruleset: RuleSet, acq: str | None,
                   corrupt_errors: list[str]) -> dict[str, Any]:
    headers = sf.headers
    first = headers[0] if headers else (sf.records[0].ds if sf.records else None)
    rule, role, per_rule = ruleset.match_series_detail(first, info)
    desc = str(first.get("SeriesDescription", "") or "") if first is not None else ""
    sn = first.get("SeriesNumber") if first is not None else None
    return {
        "path": str(sf.origin),
        "series_uid": sf.series_uid,
        "study_uid": sf.study_uid,
        "acquisition": acq,
        "series_number": int(sn) if sn not in (None, "") else None,
        "series_description": desc,
        "n_files": len(sf.records),
        "contrast": info.contrast,
        "weighting": info.weighting,
        "dimensionality": info.dimensionality,
        "derived": info.derived,
        "orientation": info.orientation,
        "n_images": info.n_images,
        "modality": info.modality,
        "is_image": info.is_image,
        "flags": info.flags,
        "rule": rule,
        "role": role,
        "why": per_rule,
        "reasons": info.reasons,
        "errors": corrupt_errors,
    }


def rules_test_main(paths: Sequence[str | Path], rules_file: str | Path | None = None,
                    as_json: bool = False, out: Any = None) -> int:
    """Dry-run the routing rules over folders/files of DICOM.

    Prints per series the derived attributes, the rule that matched (and the role)
    and why the other rules did not; then, per study, what would be routed.

    Parameters
    ----------
    paths : sequence of paths
        Files or folders (searched recursively).
    rules_file : path, optional
        Routing file; default ``config/routing.yaml``.
    as_json : bool
        One JSON object per line per series (``path``, ``series_uid``, ``contrast``,
        ``rule``, ... ) and one per unreadable file (``series_uid`` null, ``error``).
    out : file-like, optional
        Defaults to ``sys.stdout``.

    Returns
    -------
    int
        0 on success, 2 when the rules file is invalid or a path does not exist.
    """
    try:
        return _rules_test(paths, rules_file, as_json, out or sys.stdout)
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


def _rules_test(paths: Sequence[str | Path], rules_file: str | Path | None, as_json: bool, out: Any) -> int:
    from dicom_node.route.dicomfiles import SeriesFiles, load_series

    rules_path = Path(rules_file) if rules_file else default_rules_path()
    try:
        ruleset = load_rules(rules_path)
    except RulesConfigError as exc:
        print(f"error: invalid routing rules:\n{exc}", file=sys.stderr)
        return 2
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    series, unreadable = load_series(paths)
    series.sort(key=lambda s: (str(s.origin), s.series_uid))
    reports: list[dict[str, Any]] = []
    by_study: dict[str, list[tuple[str, Dataset | None, SeriesInfo]]] = {}
    for sf in series:
        corrupt = [f"{r.path.name}: {r.error}" for r in sf.records if r.corrupt]
        headers = sf.headers
        if not headers:
            info = SeriesInfo(contrast=Contrast.UNKNOWN, weighting=Contrast.UNKNOWN, is_image=False, flags=["corrupt"],
                              series_uid=sf.series_uid, n_instances=len(sf.records),
                              modality=str(sf.records[0].ds.get("Modality", "") or "") if sf.records[0].ds else "",
                              reasons=["no usable instance: " + "; ".join(corrupt)])
            reports.append(_series_report(sf, info, ruleset, None, corrupt))
            continue
        info = classify_series(headers)
        if "mixed-acquisitions" in info.flags and info.contrast != "LOCALIZER":
            from dicom_node.route.classify import split_acquisitions

            groups = split_acquisitions(headers)
            for i, g in enumerate(groups):
                sub = SeriesFiles(sf.series_uid, sf.study_uid,
                                  [r for r in sf.records if r.ds is not None and any(r.ds is h for h in g)],
                                  sf.origin)
                sinfo = classify_series(g)
                sinfo.flags.append("split-from-mixed-series")
                sinfo.n_acquisitions = len(groups)
                sinfo.reasons.insert(0, f"acquisition {i + 1} of {len(groups)} under one SeriesInstanceUID "
                                        "(reported separately; the whole series is MIXED and never stacked)")
                rep = _series_report(sub, sinfo, ruleset, f"{i + 1}/{len(groups)}", corrupt)
                rep["series_contrast"] = info.contrast
                reports.append(rep)
            by_study.setdefault(sf.study_uid, []).append((sf.series_uid, headers[0], info))
            continue
        reports.append(_series_report(sf, info, ruleset, None, corrupt))
        by_study.setdefault(sf.study_uid, []).append((sf.series_uid, headers[0], info))

    # study level: which series would be routed
    study_routes: dict[str, list[StudyRoute]] = {}
    for study_uid, items in by_study.items():
        study_routes[study_uid] = ruleset.route_study(items)
    for rep in reports:
        rep["routed"] = None
        for route in study_routes.get(rep["study_uid"], []):
            for role, uid in route.inputs.items():
                if uid == rep["series_uid"] and rep.get("acquisition") is None:
                    rep["routed"] = {"rule": route.rule, "role": role, "pipeline": route.pipeline}

    if as_json:
        for rep in reports:
            out.write(json.dumps(rep, default=str) + "\n")
        for rec in unreadable:
            out.write(json.dumps({"path": str(rec.path), "series_uid": None, "contrast": "UNKNOWN",
                                  "rule": None, "is_image": False, "error": rec.error}) + "\n")
        out.flush()
        return 0

    for rep in reports:
        acq = f"  [acquisition {rep['acquisition']}]" if rep["acquisition"] else ""
        out.write(f"\n{rep['path']}{acq}\n")
        out.write(f"  series {rep['series_uid']}  #{rep['series_number']} '{rep['series_description']}'  "
                  f"{rep['n_files']} file(s)\n")
        out.write(f"  contrast={rep['contrast']} weighting={rep['weighting']} {rep['dimensionality']} "
                  f"orientation={rep['orientation'] or '-'} derived={rep['derived']} n_images={rep['n_images']} "
                  f"modality={rep['modality'] or '-'} is_image={rep['is_image']}"
                  f"{' flags=' + ','.join(rep['flags']) if rep['flags'] else ''}\n")
        for r in rep["reasons"]:
            out.write(f"    because: {r}\n")
        for e in rep["errors"]:
            out.write(f"    damaged file: {e}\n")
        out.write(f"  rule: {rep['rule'] or '(none)'}{' as ' + rep['role'] if rep['role'] else ''}\n")
        for name, notes in rep["why"].items():
            if name == rep["rule"]:
                continue
            out.write(f"    {name}: {'; '.join(notes)}\n")
    for rec in unreadable:
        out.write(f"\n{rec.path}\n  unreadable: {rec.error}\n")
    out.write("\nStudies:\n")
    for study_uid, items in by_study.items():
        routes = study_routes[study_uid]
        out.write(f"  study {study_uid} ({len(items)} series): ")
        if not routes:
            out.write("not routed\n")
            for name, notes in ruleset.explain_study(items).items():
                out.write(f"    {name}: {'; '.join(notes)}\n")
        else:
            out.write("\n")
            for r in routes:
                waiting = (f", waiting up to {r.optional_grace_seconds:g} s for {','.join(r.missing_optional)}"
                           if r.missing_optional else "")
                out.write(f"    rule {r.rule} -> pipeline {r.pipeline}, inputs {r.inputs}{waiting}"
                          f", destinations {r.destinations}, priority {r.priority}\n")
    out.flush()
    return 0
