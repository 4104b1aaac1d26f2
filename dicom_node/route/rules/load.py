"""Load ``routing.yaml``: validate it, compile its conditions, report every error with file:line.

``config/routing.yaml`` is what PACS administrators edit. :func:`load_rules` validates it
(pydantic, :mod:`.schema`), compiles its conditions (:mod:`.conditions`) into a
:class:`~dicom_node.route.rules.ruleset.RuleSet`, and reports every error with file, line and
field; an invalid file raises :class:`RulesConfigError` (the CLI exits non-zero with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dicom_node.route.rules.conditions import Condition, _CondError, _Field
from dicom_node.route.rules.ruleset import Rule, RuleSet, _Role
from dicom_node.route.rules.schema import (
    RulesConfigError,
    RulesFileModel,
    _dotted,
    _line_for,
    _parse_dotted,
    _yaml_lines,
)

__all__ = ["RulesConfigError", "default_rules_path", "load_rules", "loads_rules"]



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
                          optional_grace_seconds=r.optional_grace_seconds, stop=r.stop,
                          prior=r.prior.as_dict() if r.prior is not None else None))
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
    return RuleSet(rules, source, lines)


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
