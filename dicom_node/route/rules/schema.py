"""The pydantic schema of routing.yaml, and the YAML line numbers its errors point to."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from dicom_node.run.pipeline import routable_pipelines


class RulesConfigError(ValueError):
    """Invalid routing file; ``str()`` lists every problem as ``file:line: field: message``."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("\n".join(messages))


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


class PriorModel(BaseModel):
    """A rule's ``prior:`` block: compare each study with the patient's prior study.

    The node asks ``peer`` (a peer of node.yaml that answers C-FIND and C-MOVE, Study Root) for
    the same patient's earlier studies of ``modality`` within ``lookback_days`` before the
    study, retrieves the most recent one's series to itself (C-MOVE to the node's own AE title:
    the PACS must know the node as a DICOM modality; or, with ``retrieve: get``, C-GET on the
    node's own association) and selects its inputs with this rule's ``inputs``."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    peer: str = Field(min_length=1)
    lookback_days: int = Field(default=1825, ge=1, le=36500)
    modality: str = Field(default="MR", min_length=1, max_length=16)
    timeout_seconds: float = Field(default=300.0, gt=0, le=86400)
    retrieve: Literal["move", "get"] = "move"  # C-MOVE to the node's AE title, or C-GET

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


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
    prior: PriorModel | None = None

    @field_validator("pipeline")
    @classmethod
    def _known_pipeline(cls, v: str) -> str:
        known = routable_pipelines()  # the runner's registry
        if v not in known:
            raise ValueError(f"unknown pipeline {v!r} (known: {', '.join(known)})")
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
