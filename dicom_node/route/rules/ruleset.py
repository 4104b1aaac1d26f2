"""Routing rules: which series of a study feed which pipeline, and where results go.

``config/routing.yaml`` is what PACS administrators edit. ``load_rules(path)``
validates it (pydantic) and reports every error with file, line and field; an
invalid file raises :class:`RulesConfigError` (the CLI exits non-zero with it).

Conditions (used by ``study``, ``series``, ``inputs.<role>.when`` and ``prefer``)
-------------------------------------------------------------------------------
A condition is a mapping; several keys in one mapping must all hold.

* ``all: [cond, ...]``, ``any: [cond, ...]``, ``not: cond`` -- nesting.
* ``<field>: <matcher>`` where ``<field>`` is

  - a derived attribute (lower case): ``contrast``, ``weighting``,
    ``dimensionality``, ``derived``, ``orientation``, ``n_images``,
    ``n_instances``, ``n_acquisitions``, ``modality``, ``is_image``, ``flags``,
    ``manufacturer``, ``repetition_time``, ``echo_time``, ``inversion_time``,
    ``slice_thickness``, ``b_value_max``, ``series_uid``, ``calling_ae``;
  - a DICOM keyword (``SeriesDescription``, ``BodyPartExamined``, ...); for
    Enhanced MR objects a keyword missing at the top level is looked up in the
    shared, then the first per-frame functional group;
  - a tag, quoted: ``"0018,0080"`` or ``"(0019,109C)"`` (private tags included).

* ``<matcher>`` is

  - a scalar: equals (strings case-insensitive, numbers numerically; for
    multi-valued attributes any single value or the whole ``A\\B`` value);
  - a list: one of;
  - a mapping of operators, all of which must hold: ``equals``, ``in``,
    ``regex`` (case-insensitive search), ``min``/``max`` (numeric, inclusive),
    ``exists`` (true/false), ``contains`` (one value of a multi-valued
    attribute, or a substring), ``not`` (negates a matcher).

A missing attribute fails every matcher except ``exists: false`` and ``not``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicom_node.route.classify import SeriesInfo, classify_series

KNOWN_PIPELINES = ("ms-lesions",)

DERIVED_ATTRS = {
    "contrast", "weighting", "dimensionality", "derived", "orientation", "n_images", "n_instances",
    "n_acquisitions", "modality", "is_image", "flags", "manufacturer", "repetition_time", "echo_time",
    "inversion_time", "slice_thickness", "b_value_max", "series_uid", "calling_ae",
}
OPERATORS = {"equals", "in", "regex", "min", "max", "exists", "contains", "not"}
TAG_RX = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?$")
_MISSING = object()


class RulesConfigError(ValueError):
    """Invalid routing file; ``str()`` lists every problem as ``file:line: field: message``."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("\n".join(messages))


# ============================================================================================
# field access


def _py(value: Any) -> Any:
    """DICOM element value -> plain Python (str, float, list, bool)."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("latin-1").strip("\x00 ").strip()
        except Exception:  # pragma: no cover
            return None
    if isinstance(value, str):
        return value.strip()
    if hasattr(value, "__iter__") and not isinstance(value, Dataset):
        try:
            items = list(value)
        except TypeError:
            return str(value)
        if items and all(isinstance(i, Dataset) for i in items):
            return True  # a sequence: only "exists" is meaningful
        return [_py(i) for i in items]
    try:
        f = float(value)
        return f
    except (TypeError, ValueError):
        return str(value).strip()


def _lookup_dataset(ds: Dataset | None, tag: int) -> Any:
    if ds is None:
        return _MISSING
    if tag in ds:
        return _py(ds[tag].value)
    # Enhanced MR: look into the functional groups (shared first, then first frame)
    for seq_kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(seq_kw)
        if not seq:
            continue
        try:
            item = seq[0]
        except (IndexError, TypeError):
            continue
        if tag in item:
            return _py(item[tag].value)
        for elem in item:
            if elem.VR == "SQ" and elem.value:
                sub = elem.value[0]
                if tag in sub:
                    return _py(sub[tag].value)
    return _MISSING


class _Field:
    """A resolved field name of a condition."""

    def __init__(self, name: str):
        self.name = name
        self.derived = name in DERIVED_ATTRS
        self.tag: int | None = None
        if not self.derived:
            m = TAG_RX.match(name)
            if m:
                self.tag = int(Tag(int(m.group(1), 16), int(m.group(2), 16)))
            else:
                t = tag_for_keyword(name)
                if t is None:
                    raise ValueError(
                        f"unknown field {name!r}: not a derived attribute ({', '.join(sorted(DERIVED_ATTRS))}),"
                        " not a DICOM keyword and not a tag like \"0018,0080\"")
                self.tag = int(t)

    def get(self, ctx: _Ctx) -> Any:
        if self.derived:
            if self.name == "calling_ae":
                v = ctx.context.get("calling_ae")
                return _MISSING if v is None else v
            if ctx.info is None:
                return _MISSING
            v = getattr(ctx.info, self.name, None)
            return _MISSING if v is None else v
        assert self.tag is not None
        return _lookup_dataset(ctx.ds, self.tag)


@dataclass
class _Ctx:
    ds: Dataset | None
    info: SeriesInfo | None
    context: dict[str, Any] = field(default_factory=dict)


# ============================================================================================
# matchers and conditions


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, list):
        v = v[0] if v else None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _scalar_eq(a: Any, b: Any) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        sa = str(a).strip().lower() in ("true", "yes", "1")
        sb = str(b).strip().lower() in ("true", "yes", "1")
        return sa == sb
    fa, fb = _as_float(a), _as_float(b)
    if fa is not None and fb is not None and not isinstance(a, list):
        return abs(fa - fb) <= 1e-6 * max(1.0, abs(fa), abs(fb))
    return str(a).strip().lower() == str(b).strip().lower()


def _eq(value: Any, want: Any) -> bool:
    if isinstance(value, list):
        joined = "\\".join(str(v) for v in value)
        return _scalar_eq(joined, want) or any(_scalar_eq(v, want) for v in value)
    return _scalar_eq(value, want)


def _show(v: Any) -> str:
    if v is _MISSING:
        return "absent"
    if isinstance(v, list):
        return "\\".join(str(x) for x in v) or "''"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, str) else str(v)


class _Matcher:
    """Compiled matcher for one field value."""

    def __init__(self, spec: Any, path: str):
        self.ops: list[tuple[str, Any]] = []
        if isinstance(spec, dict):
            if not spec:
                raise _CondError(path, "empty matcher")
            for op, arg in spec.items():
                if op not in OPERATORS:
                    raise _CondError(f"{path}.{op}", f"unknown operator {op!r} (use one of {', '.join(sorted(OPERATORS))})")
                if op == "not":
                    self.ops.append(("not", _Matcher(arg, f"{path}.not")))
                elif op == "regex":
                    try:
                        self.ops.append(("regex", re.compile(str(arg), re.IGNORECASE)))
                    except re.error as exc:
                        raise _CondError(f"{path}.regex", f"invalid regular expression: {exc}") from None
                elif op in ("min", "max"):
                    if _as_float(arg) is None or isinstance(arg, (list, dict)):
                        raise _CondError(f"{path}.{op}", f"{op} needs a number, got {arg!r}")
                    self.ops.append((op, float(arg)))
                elif op == "in":
                    if not isinstance(arg, list) or not arg:
                        raise _CondError(f"{path}.in", "'in' needs a non-empty list")
                    self.ops.append(("in", arg))
                elif op == "exists":
                    if not isinstance(arg, bool):
                        raise _CondError(f"{path}.exists", "'exists' needs true or false")
                    self.ops.append(("exists", arg))
                else:
                    if isinstance(arg, (dict, list)):
                        raise _CondError(f"{path}.{op}", f"'{op}' needs a single value")
                    self.ops.append((op, arg))
        elif isinstance(spec, list):
            if not spec:
                raise _CondError(path, "empty list (one-of needs values)")
            self.ops.append(("in", spec))
        elif spec is None:
            raise _CondError(path, "no value given (use exists: false to test for absence)")
        else:
            self.ops.append(("equals", spec))

    def test(self, value: Any) -> tuple[bool, str]:
        for op, arg in self.ops:
            ok, why = self._one(op, arg, value)
            if not ok:
                return False, why
        return True, ""

    def describe(self) -> str:
        parts = []
        for op, arg in self.ops:
            if op == "not":
                parts.append(f"not ({arg.describe()})")
            elif op == "regex":
                parts.append(f"matches /{arg.pattern}/")
            elif op == "in":
                parts.append(f"one of {arg}")
            elif op == "min":
                parts.append(f">= {arg:g}")
            elif op == "max":
                parts.append(f"<= {arg:g}")
            elif op == "exists":
                parts.append("present" if arg else "absent")
            elif op == "contains":
                parts.append(f"contains {arg!r}")
            else:
                parts.append(f"== {arg!r}")
        return " and ".join(parts)

    @staticmethod
    def _one(op: str, arg: Any, value: Any) -> tuple[bool, str]:
        if op == "exists":
            present = value is not _MISSING and value not in ("", [], None)
            return (present == arg), ("is absent" if not present else f"is present ({_show(value)})")
        if op == "not":
            ok, _ = arg.test(value)
            return (not ok), f"is {_show(value)}, wanted not ({arg.describe()})"
        if value is _MISSING:
            return False, "is absent"
        if op == "equals":
            return _eq(value, arg), f"is {_show(value)}, wanted {arg!r}"
        if op == "in":
            return any(_eq(value, a) for a in arg), f"is {_show(value)}, wanted one of {arg}"
        if op == "regex":
            text = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
            return bool(arg.search(text)), f"is {_show(value)}, wanted /{arg.pattern}/"
        if op in ("min", "max"):
            f = _as_float(value)
            if f is None:
                return False, f"is {_show(value)}, not a number"
            ok = f >= arg if op == "min" else f <= arg
            return ok, f"is {_show(value)}, wanted {'>=' if op == 'min' else '<='} {arg:g}"
        if op == "contains":
            if isinstance(value, list):
                return any(_scalar_eq(v, arg) for v in value), f"is {_show(value)}, wanted to contain {arg!r}"
            return str(arg).lower() in str(value).lower(), f"is {_show(value)}, wanted to contain {arg!r}"
        return False, f"unknown operator {op}"  # pragma: no cover


class _CondError(Exception):
    def __init__(self, path: str, msg: str):
        self.path, self.msg = path, msg
        super().__init__(f"{path}: {msg}")


class Condition:
    """A compiled condition tree; ``evaluate`` returns (ok, reasons-for-failure)."""

    def __init__(self, kind: str, children: list[Condition] | None = None,
                 fld: _Field | None = None, matcher: _Matcher | None = None):
        self.kind = kind
        self.children = children or []
        self.fld = fld
        self.matcher = matcher

    @classmethod
    def compile(cls, spec: Any, path: str, errors: list[_CondError] | None = None) -> Condition:
        """Compile a YAML condition.

        Errors raise ``_CondError(path, msg)``; with an ``errors`` list they are collected
        there instead (every problem of a file is reported at once).
        """
        own = errors is None
        errs: list[_CondError] = [] if own else errors  # type: ignore[assignment]
        cond = cls._compile(spec, path, errs)
        if own and errs:
            raise errs[0]
        return cond

    @classmethod
    def _compile(cls, spec: Any, path: str, errs: list[_CondError]) -> Condition:
        if isinstance(spec, list):
            return cls("all", [cls._compile(s, f"{path}[{i}]", errs) for i, s in enumerate(spec)])
        if not isinstance(spec, dict) or not spec:
            errs.append(_CondError(path, f"a condition must be a non-empty mapping, got {spec!r}"))
            return cls("all", [])
        parts: list[Condition] = []
        for key, val in spec.items():
            key = str(key)
            sub = f"{path}.{key}"
            if key in ("all", "any"):
                if not isinstance(val, list) or not val:
                    errs.append(_CondError(sub, f"'{key}' needs a non-empty list of conditions"))
                    continue
                parts.append(cls(key, [cls._compile(s, f"{sub}[{i}]", errs) for i, s in enumerate(val)]))
            elif key == "not":
                parts.append(cls("not", [cls._compile(val, sub, errs)]))
            else:
                try:
                    parts.append(cls("field", fld=_Field(key), matcher=_Matcher(val, sub)))
                except ValueError as exc:
                    errs.append(_CondError(sub, str(exc)))
                except _CondError as exc:
                    errs.append(exc)
        return parts[0] if len(parts) == 1 else cls("all", parts)

    def evaluate(self, ctx: _Ctx) -> tuple[bool, list[str]]:
        if self.kind == "field":
            assert self.fld is not None and self.matcher is not None
            ok, why = self.matcher.test(self.fld.get(ctx))
            return ok, ([] if ok else [f"{self.fld.name} {why}"])
        if self.kind == "all":
            fails: list[str] = []
            for c in self.children:
                ok, why = c.evaluate(ctx)
                if not ok:
                    fails.extend(why)
            return (not fails), fails
        if self.kind == "any":
            fails = []
            for c in self.children:
                ok, why = c.evaluate(ctx)
                if ok:
                    return True, []
                fails.append(" and ".join(why))
            return False, ["none of: " + " | ".join(fails)]
        if self.kind == "not":
            ok, _ = self.children[0].evaluate(ctx)
            return (not ok), ([] if not ok else [f"not ({self.children[0].describe()}) failed"])
        raise AssertionError(self.kind)  # pragma: no cover

    def describe(self) -> str:
        if self.kind == "field":
            assert self.fld is not None and self.matcher is not None
            return f"{self.fld.name} {self.matcher.describe()}"
        if self.kind == "not":
            return f"not ({self.children[0].describe()})"
        return f" {self.kind} ".join(f"({c.describe()})" for c in self.children)


# ============================================================================================
# pydantic schema of routing.yaml


class DestinationModel(BaseModel):
    """One destination: a peer of node.yaml, an explicit AE, or back to the sender."""

    model_config = ConfigDict(extra="forbid")
    peer: str | None = None
    ae_title: str | None = Field(default=None, min_length=1, max_length=16)
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    sender: bool | None = None
    overlay: bool = True  # false: this destination gets SEG + SR only (viewers that show SEG)

    @model_validator(mode="after")
    def _one_form(self) -> DestinationModel:
        forms = [self.peer is not None, self.ae_title is not None or self.host is not None or self.port is not None,
                 self.sender is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of: peer: NAME | ae_title + host + port | sender: true")
        if forms[1] and (self.ae_title is None or self.host is None or self.port is None):
            raise ValueError("an explicit destination needs ae_title, host and port")
        if self.sender is False:
            raise ValueError("sender: false is not a destination (remove it)")
        return self

    def as_dict(self) -> dict[str, Any]:
        if self.peer is not None:
            d: dict[str, Any] = {"peer": self.peer}
        elif self.sender:
            d = {"sender": True}
        else:
            d = {"ae_title": self.ae_title, "host": self.host, "port": self.port}
        if not self.overlay:
            d["overlay"] = False
        return d


class RoleModel(BaseModel):
    """An input role of a pipeline (e.g. flair, t1)."""

    model_config = ConfigDict(extra="forbid")
    required: bool = False
    when: Any = None
    prefer: list[dict[str, Any]] = Field(default_factory=list)


class RuleModel(BaseModel):
    """One routing rule."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    enabled: bool = True
    pipeline: str
    study: Any = None
    series: Any = None
    inputs: dict[str, RoleModel]
    destinations: list[DestinationModel] = Field(default_factory=lambda: [DestinationModel(sender=True)],
                                                 min_length=1)
    priority: int = Field(default=5, ge=0, le=9)
    optional_grace_seconds: float = Field(default=0.0, ge=0, le=86400)
    stop: bool = True

    @field_validator("pipeline")
    @classmethod
    def _known_pipeline(cls, v: str) -> str:
        if v not in KNOWN_PIPELINES:
            raise ValueError(f"unknown pipeline {v!r} (known: {', '.join(KNOWN_PIPELINES)})")
        return v

    @field_validator("inputs")
    @classmethod
    def _roles(cls, v: dict[str, RoleModel]) -> dict[str, RoleModel]:
        if not v:
            raise ValueError("at least one input role is needed")
        for role in v:
            if not re.match(r"^[a-z][a-z0-9_]*$", role):
                raise ValueError(f"role name {role!r} must be lower case letters, digits, _")
        if not any(r.required for r in v.values()):
            raise ValueError("at least one input role must be required: true")
        return v


class RulesFileModel(BaseModel):
    """Top level of routing.yaml."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(default=1, ge=1, le=1)
    rules: list[RuleModel] = Field(min_length=1)

    @field_validator("rules")
    @classmethod
    def _unique(cls, v: list[RuleModel]) -> list[RuleModel]:
        seen = set()
        for r in v:
            if r.name in seen:
                raise ValueError(f"duplicate rule name {r.name!r}")
            seen.add(r.name)
        return v


# ============================================================================================
# YAML line numbers


def _yaml_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map paths like ('rules', 0, 'inputs') to 1-based line numbers using yaml.compose."""
    out: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                out[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
                out[path + (key,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return out


def _dotted(path: Sequence[Any]) -> str:
    s = ""
    for p in path:
        if isinstance(p, int):
            s += f"[{p}]"
        else:
            s += ("." if s else "") + str(p)
    return s or "(top level)"


def _parse_dotted(path: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(out)


def _line_for(lines: dict[tuple[Any, ...], int], path: Sequence[Any]) -> int | None:
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get(())


# ============================================================================================
# the rule set


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


def _series_tuple(item: Any) -> tuple[str, Dataset | None, SeriesInfo]:
    uid, ds, info = item
    if isinstance(ds, (list, tuple)):
        ds = ds[0] if ds else None
    return str(uid), ds, info


class RuleSet:
    """Compiled routing rules; pure functions of headers and :class:`SeriesInfo`."""

    def __init__(self, rules: list[Rule], source: str = "<rules>"):
        self.rules = rules
        self.source = source

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
        if isinstance(ds, (list, tuple)):
            ds = None
        ctx = _Ctx(ds, info, dict(context or {}))
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

    def peer_names(self) -> set[str]:
        """Peer names used by destinations (for cross-checking with node.yaml)."""
        return {d["peer"] for r in self.rules for d in r.destinations if "peer" in d}


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


# ============================================================================================
# loading


def _compile_rules(model: RulesFileModel, raw: dict[str, Any]) -> tuple[list[Rule], list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []
    rules: list[Rule] = []

    def comp(spec: Any, path: str) -> Condition | None:
        if spec is None:
            return None
        found: list[_CondError] = []
        cond = Condition.compile(spec, path, found)
        errors.extend((e.path, e.msg) for e in found)
        return cond

    for i, r in enumerate(model.rules):
        base = f"rules[{i}]"
        roles = []
        for rname, rm in r.inputs.items():
            rpath = f"{base}.inputs.{rname}"
            prefer: list[tuple[str, Any]] = []
            for j, p in enumerate(rm.prefer):
                ppath = f"{rpath}.prefer[{j}]"
                if len(p) == 1 and next(iter(p)) in ("highest", "lowest"):
                    kind, fname = next(iter(p.items()))
                    try:
                        prefer.append((kind, _Field(str(fname))))
                    except ValueError as exc:
                        errors.append((f"{ppath}.{kind}", str(exc)))
                else:
                    c = comp(p, ppath)
                    if c is not None:
                        prefer.append(("match", c))
            roles.append(_Role(rname, rm.required, comp(rm.when, f"{rpath}.when"), prefer))
        rules.append(Rule(name=r.name, description=r.description, enabled=r.enabled, pipeline=r.pipeline,
                          study=comp(r.study, f"{base}.study"), series=comp(r.series, f"{base}.series"),
                          roles=roles, destinations=[d.as_dict() for d in r.destinations], priority=r.priority,
                          optional_grace_seconds=r.optional_grace_seconds, stop=r.stop))
    return rules, errors


def loads_rules(text: str, source: str = "<string>") -> RuleSet:
    """Parse and validate routing rules from YAML text (see :func:`load_rules`)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else "?"
        raise RulesConfigError([f"{source}:{line}: YAML syntax error: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise RulesConfigError([f"{source}: YAML error: {exc}"]) from None
    lines = _yaml_lines(text)
    if not isinstance(raw, dict):
        raise RulesConfigError([f"{source}:1: (top level): expected a mapping with a 'rules' list"])
    try:
        model = RulesFileModel.model_validate(raw)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            line = _line_for(lines, loc)
            where = _dotted(loc)
            name = _rule_name(raw, loc)
            msg = str(err["msg"]).removeprefix("Value error, ")
            msgs.append(f"{source}:{line if line is not None else '?'}: {where}{name}: {msg}")
        raise RulesConfigError(msgs) from None
    rules, errors = _compile_rules(model, raw)
    if errors:
        msgs = []
        for path, msg in errors:
            tpath = _parse_dotted(path)
            line = _line_for(lines, tpath)
            msgs.append(f"{source}:{line if line is not None else '?'}: {path}{_rule_name(raw, tpath)}: {msg}")
        raise RulesConfigError(msgs)
    return RuleSet(rules, source)


def _rule_name(raw: Any, loc: Sequence[Any]) -> str:
    try:
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            name = raw["rules"][loc[1]].get("name")
            if name:
                return f" (rule {name})"
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return ""


def load_rules(path: str | Path) -> RuleSet:
    """Load and validate ``routing.yaml``.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    RuleSet

    Raises
    ------
    RulesConfigError
        With one ``file:line: field: message`` per problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesConfigError([f"{path}: cannot read routing file: {exc.strerror or exc}"]) from None
    return loads_rules(text, str(path))


def default_rules_path() -> Path:
    """``config/routing.yaml`` of the working directory, else the one shipped with the code."""
    here = Path("config") / "routing.yaml"
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[3] / "config" / "routing.yaml"


# ============================================================================================
# `dicom-node rules test`


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
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's flush
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
            info = SeriesInfo(contrast="UNKNOWN", weighting="UNKNOWN", is_image=False, flags=["corrupt"],
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
                out.write(f"    rule {r.rule} -> pipeline {r.pipeline}, inputs {r.inputs}"
                          f"{', waiting up to ' + format(r.optional_grace_seconds, 'g') + ' s for ' + ','.join(r.missing_optional) if r.missing_optional else ''}"
                          f", destinations {r.destinations}, priority {r.priority}\n")
    out.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dicom_node.route.rules test PATH... [--json] [--rules FILE]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m dicom_node.route.rules")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("test", help="dry-run the routing rules over DICOM files/folders")
    t.add_argument("paths", nargs="+")
    t.add_argument("--json", action="store_true", help="one JSON object per line per series")
    t.add_argument("--rules", default=None, help="routing file (default config/routing.yaml)")
    args = ap.parse_args(argv)
    return rules_test_main(args.paths, args.rules, args.json)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
