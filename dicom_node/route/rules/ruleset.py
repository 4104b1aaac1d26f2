"""Compiled routing rules: which series of a study feed which pipeline, and where results go.

:class:`RuleSet` matches series and routes studies: pure functions of headers and
:class:`~dicom_node.route.classify.SeriesInfo`. Rule sets are made from ``config/routing.yaml``
by :func:`dicom_node.route.rules.load.load_rules`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.route.classify import SeriesInfo
from dicom_node.route.rules.conditions import (
    _MISSING,
    Condition,
    _as_float,
    _Ctx,
    _lookup_dataset,
)
from dicom_node.route.rules.schema import _line_for


@dataclass
class StudyRoute:
    """A study routed by one rule: the job to create (once required inputs are complete)."""

    rule: str
    pipeline: str
    inputs: dict[str, str]
    missing_optional: list[str]
    destinations: list[dict[str, Any]]
    priority: int
    optional_grace_seconds: float
    candidates: dict[str, list[str]] = field(default_factory=dict)
    explanations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


@dataclass
class _Role:
    name: str
    required: bool
    when: Condition | None
    prefer: list[tuple[str, Any]]  # ("highest", _Field) | ("lowest", _Field) | ("match", Condition)


@dataclass
class Rule:
    """A compiled rule."""

    name: str
    description: str
    enabled: bool
    pipeline: str
    study: Condition | None
    series: Condition | None
    roles: list[_Role]
    destinations: list[dict[str, Any]]
    priority: int
    optional_grace_seconds: float
    stop: bool
    prior: dict[str, Any] | None = None  #: the ``prior:`` block (PriorModel.as_dict), if any


def _series_tuple(item: Any) -> tuple[str, Dataset | None, SeriesInfo]:
    uid, ds, info = item
    if isinstance(ds, (list, tuple)):
        ds = ds[0] if ds else None
    return str(uid), ds, info


class RuleSet:
    """Compiled routing rules; pure functions of headers and :class:`SeriesInfo`."""

    def __init__(self, rules: list[Rule], source: str = "<rules>",
                 lines: dict[tuple[Any, ...], int] | None = None):
        self.rules = rules
        self.source = source
        self.lines = lines or {}  # YAML path -> line, for errors found after loading

    # -- single series --------------------------------------------------------------------
    def match_series_detail(self, headers: Dataset | Sequence[Dataset] | None, info: SeriesInfo,
                            context: dict[str, Any] | None = None
                            ) -> tuple[str | None, str | None, dict[str, list[str]]]:
        """First rule (and role) a series qualifies for, with reasons per rule.

        Returns
        -------
        (rule_name or None, role or None, {rule_name: [explanations]})
        """
        ds = headers[0] if isinstance(headers, (list, tuple)) and headers else headers
        first = ds if isinstance(ds, Dataset) else None  # an empty list: no header
        ctx = _Ctx(first, info, dict(context or {}))
        found: tuple[str | None, str | None] = (None, None)
        per_rule: dict[str, list[str]] = {}
        for rule in self.rules:
            notes: list[str] = []
            if not rule.enabled:
                per_rule[rule.name] = ["rule disabled"]
                continue
            if rule.series is not None:
                ok, why = rule.series.evaluate(ctx)
                if not ok:
                    per_rule[rule.name] = ["series filter: " + "; ".join(why)]
                    continue
            role_hit = None
            for role in rule.roles:
                if role.when is None:
                    ok, why = True, []
                else:
                    ok, why = role.when.evaluate(ctx)
                if ok:
                    role_hit = role.name
                    notes.append(f"qualifies as {role.name}")
                    break
                notes.append(f"not {role.name}: " + "; ".join(why))
            per_rule[rule.name] = notes
            if role_hit and found[0] is None:
                found = (rule.name, role_hit)
        return found[0], found[1], per_rule

    def match_series(self, headers: Dataset | Sequence[Dataset] | None, info: SeriesInfo,
                     context: dict[str, Any] | None = None) -> tuple[str | None, list[str]]:
        """Name of the first rule the series can feed (any role), and explanations.

        Study conditions are not checked here (they need the whole study, see
        :meth:`route_study`).
        """
        rule, role, per_rule = self.match_series_detail(headers, info, context)
        expl = [f"{name}: {'; '.join(notes) if notes else 'no roles'}" for name, notes in per_rule.items()]
        return rule, expl

    # -- whole study ----------------------------------------------------------------------
    def route_study(self, series: Iterable[Any], context: dict[str, Any] | None = None) -> list[StudyRoute]:
        """Route a study.

        Parameters
        ----------
        series : iterable of (series_uid, first_header, SeriesInfo)
            Every series of the study (complete or not; the caller decides when to act).
        context : dict, optional
            ``{"calling_ae": ...}`` for conditions on the sender.

        Returns
        -------
        list of StudyRoute
            One per rule whose required roles are all filled, in rule order; a rule
            with ``stop: true`` (default) ends the evaluation when it routes.
        """
        items = [_series_tuple(s) for s in series]
        ctx_extra = dict(context or {})
        routes: list[StudyRoute] = []
        for rule in self.rules:
            if not rule.enabled:
                continue
            route = self._route_one(rule, items, ctx_extra)
            if route is not None:
                routes.append(route)
                if rule.stop:
                    break
        return routes

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name`` (None when the rule set has none)."""
        return next((r for r in self.rules if r.name == name), None)

    def route_with_rule(self, name: str, series: Iterable[Any],
                        context: dict[str, Any] | None = None) -> StudyRoute | None:
        """Route a study with one named rule only (e.g. a prior study, whose inputs are chosen
        as the follow-up's were); None when that rule does not route it."""
        rule = self.rule(name)
        if rule is None:
            return None
        items = [_series_tuple(s) for s in series]
        return self._route_one(rule, items, dict(context or {}))

    def explain_study(self, series: Iterable[Any], context: dict[str, Any] | None = None) -> dict[str, list[str]]:
        """Why each rule did or did not route the study (for ``rules test``)."""
        items = [_series_tuple(s) for s in series]
        out: dict[str, list[str]] = {}
        for rule in self.rules:
            notes: list[str] = []
            self._route_one(rule, items, dict(context or {}), notes)
            out[rule.name] = notes
        return out

    def _route_one(self, rule: Rule, items: list[tuple[str, Dataset | None, SeriesInfo]],
                   context: dict[str, Any], notes: list[str] | None = None) -> StudyRoute | None:
        notes = notes if notes is not None else []
        if not rule.enabled:
            notes.append("rule disabled")
            return None
        ctxs = [(_Ctx(ds, info, context), uid, info, ds) for uid, ds, info in items]
        if rule.study is not None:
            if not any(rule.study.evaluate(c)[0] for c, *_ in ctxs):
                why = rule.study.evaluate(ctxs[0][0])[1] if ctxs else ["no series"]
                notes.append("study condition not met by any series: " + "; ".join(why))
                return None
        eligible = [t for t in ctxs if rule.series is None or rule.series.evaluate(t[0])[0]]
        used: set[str] = set()
        inputs: dict[str, str] = {}
        candidates: dict[str, list[str]] = {}
        missing_optional: list[str] = []
        for role in sorted(rule.roles, key=lambda r: not r.required):
            cands = [t for t in eligible if t[1] not in used and (role.when is None or role.when.evaluate(t[0])[0])]
            cands = _rank(cands, role.prefer)
            candidates[role.name] = [t[1] for t in cands]
            if cands:
                inputs[role.name] = cands[0][1]
                used.add(cands[0][1])
                extra = f" (chosen among {len(cands)} by preference)" if len(cands) > 1 else ""
                notes.append(f"{role.name}: series {cands[0][1]}{extra}")
            elif role.required:
                notes.append(f"required role {role.name}: no series qualifies")
                return None
            else:
                missing_optional.append(role.name)
                notes.append(f"optional role {role.name}: none yet (grace {rule.optional_grace_seconds:g} s)")
        return StudyRoute(rule=rule.name, pipeline=rule.pipeline, inputs=inputs,
                          missing_optional=missing_optional, destinations=[dict(d) for d in rule.destinations],
                          priority=rule.priority, optional_grace_seconds=rule.optional_grace_seconds,
                          candidates=candidates, explanations=list(notes))

    def header_tags(self) -> set[int]:
        """The DICOM tags the rules read from a series' first header (conditions, preferences,
        and SeriesNumber, which breaks ties between candidates)."""
        out = {0x00200011}
        for rule in self.rules:
            for cond in (rule.study, rule.series, *(r.when for r in rule.roles)):
                if cond is not None:
                    out |= cond.tags()
            for role in rule.roles:
                for kind, arg in role.prefer:
                    if kind == "match":
                        out |= arg.tags()
                    elif arg.tag is not None:
                        out.add(arg.tag)
        return out

    def unknown_peers(self, known: Collection[str]) -> list[str]:
        """``file:line: rules[i].destinations[j].peer (rule name): ...`` per destination naming a
        peer that is not in ``known`` (node.yaml's ``peers``)."""
        out = []
        for i, rule in enumerate(self.rules):
            for j, d in enumerate(rule.destinations):
                if "peer" in d and d["peer"] not in known:
                    line = _line_for(self.lines, ("rules", i, "destinations", j, "peer"))
                    out.append(f"{self.source}:{line if line is not None else '?'}: "
                               f"rules[{i}].destinations[{j}].peer (rule {rule.name}): unknown peer "
                               f"{d['peer']!r} (node.yaml peers: {', '.join(sorted(known)) or 'none'})")
            if rule.prior and rule.prior.get("enabled", True) and rule.prior.get("peer") not in known:
                line = _line_for(self.lines, ("rules", i, "prior", "peer"))
                out.append(f"{self.source}:{line if line is not None else '?'}: "
                           f"rules[{i}].prior.peer (rule {rule.name}): unknown peer "
                           f"{rule.prior.get('peer')!r} (node.yaml peers: "
                           f"{', '.join(sorted(known)) or 'none'})")
        return out

    def peer_names(self) -> set[str]:
        """Peer names used by destinations (for cross-checking with node.yaml)."""
        return ({d["peer"] for r in self.rules for d in r.destinations if "peer" in d}
                | {r.prior["peer"] for r in self.rules if r.prior and r.prior.get("enabled", True)})


def _rank(cands: list[Any], prefer: list[tuple[str, Any]]) -> list[Any]:
    """Order candidates by the role's preferences, then most images, newest SeriesNumber, UID."""

    def key(t: Any) -> tuple[Any, ...]:
        ctx, uid, info, ds = t
        k: list[Any] = []
        for kind, arg in prefer:
            if kind == "match":
                k.append(0 if arg.evaluate(ctx)[0] else 1)
            else:
                v = _as_float(arg.get(ctx)) if arg.get(ctx) is not _MISSING else None
                if v is None:
                    k.append((1, 0.0))
                else:
                    k.append((0, -v if kind == "highest" else v))
        k.append(-(info.n_images if info is not None else 0))
        sn = _as_float(_lookup_dataset(ds, 0x00200011)) if ds is not None else None
        k.append(-(sn or 0.0))
        k.append(uid)
        return tuple(k)

    return sorted(cands, key=key)
