"""Node configuration: pydantic models loaded from ``config/node.yaml``.

Relative paths in the file (``data_dir``, ``routing_file``, TLS files) are resolved against the
directory that holds the YAML file, so a checkout can be run from anywhere.

Errors name the file, the line and the field, e.g.::

    config/node.yaml:7: port: Input should be less than or equal to 65535
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dicom_node.run.options import PipelineOptions, Precision

__all__ = [
    "ConfigError",
    "NodeConfig",
    "load_config",
    "PeerMatch",
    "Peer",
]


class ConfigError(ValueError):
    """An invalid configuration file; the message names file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeerMatch(_Strict):
    """One allow-list entry: a calling AE title and/or a source address (both must match)."""

    ae_title: str | None = None
    host: str | None = None

    @model_validator(mode="after")
    def _one_set(self) -> "PeerMatch":
        if not self.ae_title and not self.host:
            raise ValueError("an allowed_peers entry needs ae_title and/or host")
        return self


class Peer(_Strict):
    """A known DICOM peer (PACS) that results can be sent to, by name."""

    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)

    @field_validator("ae_title")
    @classmethod
    def _aet(cls, v: str) -> str:
        return _check_aet(v)


class CompletionConfig(_Strict):
    """Series completion: quiet period and early completion."""

    quiet_seconds: float = Field(default=10.0, gt=0)
    early: bool = True  # complete as soon as the expected instance count is reliably known
    # complete this long after the association that delivered a series is released (and no
    # other open association delivers it); 0: quiet period only
    release_grace_seconds: float = Field(default=2.0, ge=0)


class IngestConfig(_Strict):
    """What to keep of what arrives (everything is always accepted, never refused)."""

    drop_non_mr: bool = False  # True: non-MR objects get Success but are not written
    drop_modalities: list[str] = Field(default_factory=list)  # e.g. ["SR", "PR"]
    fsync: bool = True  # fsync each instance before the response (false: benchmarks/test rigs only)
    fsync_dir: bool = False  # also fsync the directory after each rename (strict POSIX; 2nd flush)


class ScpConfig(_Strict):
    """Network tuning of the Storage SCP."""

    # the maximum PDU length we advertise and the bound of every P-DATA-TF read (0: advertise
    # unlimited, read at most dicom_node.receive.limits.HARD_MAX_PDU = 64 MiB)
    max_pdu: int = Field(default=16 * 2**20, ge=0, le=64 * 2**20)
    max_associations: int = Field(default=16, ge=1)
    max_connections_per_address: int = Field(default=8, ge=1)  # refused at accept beyond
    association_request_timeout: float = Field(default=10.0, gt=0)  # whole A-ASSOCIATE-RQ
    check_called_ae_title: bool = True  # reject associations addressed to another AE title
    network_timeout: float = Field(default=60.0, gt=0)
    # bytes/s each DIMSE command set or data set must average after network_timeout (a drip of
    # tiny valid PDUs is cut off; 0: no bound); dicom_node.receive.limits.MIN_MESSAGE_RATE
    min_message_rate: float = Field(default=1024.0, ge=0)
    acse_timeout: float = Field(default=30.0, gt=0)
    dimse_timeout: float = Field(default=60.0, gt=0)
    poll_interval_ms: float = Field(default=0.2, ge=0.0, le=1.0)  # pynetdicom reactor poll (lib: 1)
    fast_dimse: bool = True  # C-STORE fast paths through pynetdicom (dicom_node._pynetdicom.fastdimse)


class TlsConfig(_Strict):
    """Optional TLS for the SCP."""

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None  # set -> clients must present a certificate signed by it

    @model_validator(mode="after")
    def _files(self) -> "TlsConfig":
        if self.enabled and (self.cert_file is None or self.key_file is None):
            raise ValueError("tls.enabled needs cert_file and key_file")
        return self


_DEFAULT = PipelineOptions()


class RunnerConfig(_Strict):
    enabled: bool = True  # false: jobs are queued but not run by this process
    concurrency: int = Field(default=1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # a job whose worker process dies (OOM kill, crash) runs again this many times on a fresh
    # worker before it is failed; 0: fail at once
    worker_death_retries: int = Field(default=1, ge=0)
    # pipeline options: defaults and meaning in dicom_node.run.options.PipelineOptions
    threshold: float = Field(default=_DEFAULT.threshold, gt=0, lt=1)
    min_voxels: int = Field(default=_DEFAULT.min_voxels, ge=1)
    min_volume_mm3: float = Field(default=_DEFAULT.min_volume_mm3, ge=0)
    thin_slice_grow: float | None = Field(default=_DEFAULT.thin_slice_grow, gt=0, lt=1)
    fractional_seg: bool = _DEFAULT.fractional
    weights: Path | None = None  # None: the shipped model (ai/weights/ms_unet.pt)
    tta: bool = _DEFAULT.tta
    precision: Precision = _DEFAULT.precision
    # how the worker processes get memory (ai.memory.tune): "tuned" (numpy without huge-page
    # advice, glibc keeps freed blocks up to 32 MB during a job) or "system" (the defaults)
    allocator: Literal["tuned", "system"] = "tuned"

    def pipeline_options(self) -> PipelineOptions:
        """Options handed to the pipeline of every job."""
        return PipelineOptions(threshold=self.threshold, min_voxels=self.min_voxels,
                               min_volume_mm3=self.min_volume_mm3, thin_slice_grow=self.thin_slice_grow,
                               fractional=self.fractional_seg,
                               weights=str(self.weights) if self.weights else None,
                               tta=self.tta, precision=self.precision)


class OutboxConfig(_Strict):
    """Delivery of results: backoff, how long to keep trying, C-ECHO probes of a lost PACS."""

    retry_for_hours: float = Field(default=72.0, gt=0)  # then dead-lettered (still revived by echo)
    base_delay_s: float = Field(default=2.0, gt=0)  # first retry delay, doubled per failure...
    max_delay_s: float = Field(default=300.0, gt=0)  # ...up to this
    max_attempts: int = Field(default=0, ge=0)  # 0: no count limit, retry_for_hours decides
    echo_interval_s: float = Field(default=60.0, ge=0)  # C-ECHO an unreachable PACS; 0: never
    timeout_s: float = Field(default=30.0, gt=0)  # connection/ACSE/DIMSE timeout of a send

    def outbox_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`dicom_node.send.outbox.Outbox`."""
        return {"max_attempts": self.max_attempts, "base_delay_s": self.base_delay_s,
                "max_delay_s": self.max_delay_s, "retry_for_s": self.retry_for_hours * 3600.0,
                "echo_interval_s": self.echo_interval_s, "timeout_s": self.timeout_s}


class HttpConfig(_Strict):
    port: int = Field(default=0, ge=0, le=65535)  # metrics/health, 0 = off
    host: str = "127.0.0.1"


class LogConfig(_Strict):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: Path | None = None  # None -> stderr


class NodeConfig(_Strict):
    """The whole node configuration (see README "node.yaml reference")."""

    ae_title: str = "AINODE"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    data_dir: Path = Path("../var")
    allowed_peers: list[PeerMatch] = Field(default_factory=list)
    allow_any_peer: bool = False
    peers: list[Peer] = Field(default_factory=list)
    completion: CompletionConfig = Field(default_factory=CompletionConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    scp: ScpConfig = Field(default_factory=ScpConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    min_free_disk_mb: float = Field(default=500.0, ge=0)
    routing_file: Path = Path("routing.yaml")
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    # not from the file: where it was loaded from
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("ae_title")
    @classmethod
    def _aet(cls, v: str) -> str:
        return _check_aet(v)

    # -- derived paths -------------------------------------------------------------------
    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def outbox_db(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    def peer(self, name: str) -> Peer | None:
        """Return the known peer called ``name`` (or None)."""
        for p in self.peers:
            if p.name == name:
                return p
        return None

    def peer_by_ae(self, ae_title: str) -> Peer | None:
        """Return the first known peer whose AE title is ``ae_title`` (or None)."""
        for p in self.peers:
            if p.ae_title == ae_title.strip():
                return p
        return None

    def resolve_paths(self, base: Path) -> "NodeConfig":
        """Make relative paths absolute against ``base`` (the config file's directory)."""

        def _abs(p: Path | None) -> Path | None:
            if p is None:
                return None
            p = Path(p).expanduser()
            return p if p.is_absolute() else (base / p).resolve()

        self.data_dir = _abs(self.data_dir)  # type: ignore[assignment]
        self.routing_file = _abs(self.routing_file)  # type: ignore[assignment]
        self.tls.cert_file = _abs(self.tls.cert_file)
        self.tls.key_file = _abs(self.tls.key_file)
        self.tls.ca_file = _abs(self.tls.ca_file)
        self.log.file = _abs(self.log.file)
        self.runner.weights = _abs(self.runner.weights)
        return self


def _check_aet(v: str) -> str:
    v = v.strip()
    if not v or len(v) > 16 or "\\" in v or not v.isprintable():
        raise ValueError("an AE title is 1-16 printable characters without backslash")
    return v


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (deepest existing node)."""
    line = None if node is None else node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == key:
                    line = k.start_mark.line + 1
                    nxt = v
                    break
            if nxt is None:
                return line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                return line
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def load_config(path: str | Path) -> NodeConfig:
    """Load and validate a node configuration file.

    Parameters
    ----------
    path : str or Path
        The YAML file (``config/node.yaml``).

    Returns
    -------
    NodeConfig
        Validated configuration with absolute paths.

    Raises
    ------
    ConfigError
        The file is missing, not YAML, or a field is invalid; the message names file, line and
        field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping of settings")
    try:
        cfg = NodeConfig.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(node, loc)
            field = ".".join(str(x) for x in loc) or "(top level)"
            msgs.append(f"{path}:{line or 1}: {field}: {err['msg']}")
        raise ConfigError("\n".join(msgs)) from None
    cfg.source = path.resolve()
    return cfg.resolve_paths(path.resolve().parent)
