"""Private: every use of pynetdicom internals, behind one version guard (:func:`problems`).

pynetdicom is pinned to the series verified here (``pynetdicom~=3.0.4`` in ``pyproject.toml``,
verified with 3.0.4). Public hooks are used where pynetdicom has them: event handlers
(``EVT_CONN_OPEN`` sets TCP_NODELAY, ``EVT_C_STORE``/``EVT_C_ECHO`` serve requests),
``AE.require_called_aet``, ``_config.UNRESTRICTED_STORAGE_SERVICE``. Patches remain only where no
hook exists:

1. :mod:`.gate`: ``ACSE._negotiate_as_acceptor`` is wrapped so that the node's association gate
   (called AE title, allowed peers by AE title *and* host, association count, low disk) rejects
   with the right A-ASSOCIATE-RJ reason, logged and counted, before negotiation.
   ``AE.require_calling_aet`` knows AE titles only, not hosts, ``AE.require_called_aet`` rejects
   silently, and neither can refuse for a transient reason such as low disk.
2. :mod:`.net`: the ``time`` module global of ``pynetdicom.association`` and ``pynetdicom.dul``
   is swapped for a clock whose ``sleep`` is capped (:func:`.net.set_reactor_poll`): the reactor
   threads' 1 ms poll interval is fixed in code.
3. :mod:`.reactor`: before each C-STORE the sender clears ``Association._reactor_checkpoint``
   and waits for ``_is_paused``, closing a race in ``send_c_store`` where the reactor takes the
   C-STORE response off the queue (cf. pynetdicom issue #435); no hook reaches that checkpoint.
4. :mod:`.fastdimse` (with :mod:`.dimsecodec`, :mod:`.pduread`, :mod:`.fastcheck`): C-STORE
   fast paths for the SCP's associations (PDU read, DIMSE decode and encode, reactor waits),
   installed per association from ``EVT_CONN_OPEN``. pynetdicom has no hook for its PDU and
   DIMSE codecs. Besides this guard, :func:`.fastcheck.available` compares
   its encodings with pynetdicom's once and falls back to stock pynetdicom when they differ.
   When the fast path is off (or unavailable), :func:`.pduread.install_reader` still replaces
   ``DULServiceProvider._read_pdu_data`` so that the stock path's PDU reads are bounded too
   (:class:`dicom_node.receive.limits.PduGuard`: declared length checked before allocation,
   deadlines).
5. :mod:`.serve` wraps ``Association._serve_request`` per association (any request other
   than C-STORE/C-ECHO is answered 0x0211 instead of silence);
   :mod:`dicom_node.receive.scp` installs it and starts its
   server with ``AE.make_server(server_class=...)`` (the connection gate at accept,
   :func:`dicom_node.receive.limits.server_class`), registering it in ``AE._servers`` as
   ``AE.start_server`` does.

:data:`PRIVATE_NAMES` lists every private name those modules use; :func:`problems` checks the
version series and each name against the installed pynetdicom, and ``tests/test_pynetdicom_guard.py``
fails CI when the guard does not hold.
"""

from __future__ import annotations

import functools
import importlib
import inspect

__all__ = ["VERIFIED_SERIES", "PRIVATE_NAMES", "problems", "require"]

VERIFIED_SERIES = "3.0"

# "module" or "module:Class" -> names used. Class names are class attributes or instance
# attributes assigned in the class's ``__init__``.
PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "pynetdicom.association": ("time",),
    "pynetdicom.dul": ("time",),
    "pynetdicom._handlers": ("standard_pdu_recv_handler", "standard_pdu_sent_handler",
                             "standard_dimse_recv_handler", "standard_dimse_sent_handler"),
    "pynetdicom.acse:ACSE": ("_negotiate_as_acceptor", "requestor", "send_reject", "assoc"),
    "pynetdicom.association:Association": (
        "_serve_request", "_abort_nonblocking", "_run_reactor", "_reactor_checkpoint", "_is_paused",
        "_sent_release", "_accepted_cx", "dimse", "dul", "kill"),
    "pynetdicom.dul:DULServiceProvider": (
        "_read_pdu_data", "_decode_pdu", "_send", "_recv_pdu", "kill_dul", "run", "event_queue",
        "to_provider_queue", "socket"),
    "pynetdicom.dimse:DIMSEServiceProvider": (
        "receive_primitive", "send_msg", "maximum_pdu_size", "msg_queue", "message", "cancel_req"),
    "pynetdicom.dimse_messages:DIMSEMessage": ("decode_msg", "message_to_primitive",
                                               "primitive_to_message", "data_set", "command_set"),
    "pynetdicom.pdu:P_DATA_TF": ("to_primitive", "encode"),
    "pynetdicom.service_class:StorageServiceClass": ("SCP",),
    "pynetdicom.ae:ApplicationEntity": ("_servers",),
}


def _has(obj: object, name: str) -> bool:
    if hasattr(obj, name):
        return True
    init = getattr(obj, "__init__", None)
    if not inspect.isclass(obj) or init is None:
        return False
    try:
        return f"self.{name} " in inspect.getsource(init) or f"self.{name}:" in inspect.getsource(init)
    except (OSError, TypeError):
        return False


@functools.cache
def problems() -> tuple[str, ...]:
    """What does not hold in the installed pynetdicom: an empty tuple when the guard holds."""
    import pynetdicom

    found: list[str] = []
    version = str(getattr(pynetdicom, "__version__", "?"))
    if not version.startswith(VERIFIED_SERIES + "."):
        found.append(f"pynetdicom {version} is not the verified {VERIFIED_SERIES}.x series")
    for where, names in PRIVATE_NAMES.items():
        module_name, _, class_name = where.partition(":")
        try:
            obj: object = importlib.import_module(module_name)
            if class_name:
                obj = getattr(obj, class_name)
        except (ImportError, AttributeError) as exc:
            found.append(f"{where}: {exc}")
            continue
        missing = [n for n in names if not _has(obj, n)]
        if missing:
            found.append(f"{where} lacks {', '.join(missing)}")
    return tuple(found)


def require(what: str) -> None:
    """Raise RuntimeError naming ``what`` (a patch) when the guard does not hold."""
    found = problems()
    if found:
        raise RuntimeError(f"{what} needs pynetdicom internals that this pynetdicom lacks: "
                           + "; ".join(found))
