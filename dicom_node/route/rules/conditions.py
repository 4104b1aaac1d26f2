"""Routing conditions: compile the ``study``/``series``/``when``/``prefer`` mappings and evaluate them.

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

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicom_node.route.classify import SeriesInfo

DERIVED_ATTRS = {
    "contrast", "weighting", "dimensionality", "derived", "orientation", "n_images", "n_instances",
    "n_acquisitions", "modality", "is_image", "flags", "manufacturer", "repetition_time", "echo_time",
    "inversion_time", "slice_thickness", "b_value_max", "series_uid", "calling_ae",
}
OPERATORS = {"equals", "in", "regex", "min", "max", "exists", "contains", "not"}
TAG_RX = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?$")
_MISSING = object()

# ============================================================================================
# field access


def _py(value: Any) -> Any:
    """DICOM element value -> plain Python (str, float, list, bool)."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\x00 ").strip()  # latin-1 decodes any bytes
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
            if isinstance(v, StrEnum):  # Contrast: compared and shown as its plain value
                v = v.value
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
                    raise _CondError(f"{path}.{op}",
                                     f"unknown operator {op!r} (use one of {', '.join(sorted(OPERATORS))})")
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
        errs: list[_CondError] = [] if errors is None else errors
        cond = cls._compile(spec, path, errs)
        if errors is None and errs:
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
                ok, notes = c.evaluate(ctx)
                if not ok:
                    fails.extend(notes)
            return (not fails), fails
        if self.kind == "any":
            fails = []
            for c in self.children:
                ok, notes = c.evaluate(ctx)
                if ok:
                    return True, []
                fails.append(" and ".join(notes))
            return False, ["none of: " + " | ".join(fails)]
        if self.kind == "not":
            ok, _ = self.children[0].evaluate(ctx)
            return (not ok), ([] if not ok else [f"not ({self.children[0].describe()}) failed"])
        raise AssertionError(self.kind)  # pragma: no cover

    def tags(self) -> set[int]:
        """The DICOM tags this condition reads from a series' first header."""
        out = {self.fld.tag} if self.fld is not None and self.fld.tag is not None else set()
        for c in self.children:
            out |= c.tags()
        return out

    def describe(self) -> str:
        if self.kind == "field":
            assert self.fld is not None and self.matcher is not None
            return f"{self.fld.name} {self.matcher.describe()}"
        if self.kind == "not":
            return f"not ({self.children[0].describe()})"
        return f" {self.kind} ".join(f"({c.describe()})" for c in self.children)
