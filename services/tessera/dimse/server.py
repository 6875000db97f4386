"""The pynetdicom Application Entity and its listeners: the DICOM port, and the TLS
port when configured (PS3.15 B.1, the Basic TLS Secure Transport Connection Profile:
TLS 1.2 or later, the client's certificate verified against ``dimse_tls_ca`` when set).

Presentation contexts (PS3.8 9.3.2.2): every Storage SOP Class, known, retired or
private (pynetdicom's unrestricted storage service: in both roles, so C-GET's
requesters can take the sub-operations), in the first Transfer Syntax the requester
proposes, and the Patient Root and Study Root Q/R FIND, MOVE and GET models and
Verification, with every Transfer Syntax pydicom knows: a compressed instance is
received, stored and served as sent.
"""

from __future__ import annotations

import logging
import ssl
from functools import partial
from typing import Any

from pydicom import config as pydicom_config
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import _STORAGE_CLASSES
from pynetdicom.transport import ThreadedAssociationServer

from tessera.dimse import metrics, policy, tcp
from tessera.dimse.context import Gateway
from tessera.dimse.echo import handle_echo
from tessera.dimse.find import handle_find
from tessera.dimse.retrieve import handle_get, handle_move
from tessera.dimse.sop import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    VERIFICATION,
)
from tessera.dimse.store import handle_store

log = logging.getLogger(__name__)

QUERY_RETRIEVE = (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    STUDY_ROOT_GET,
)
TRANSFER_SYNTAXES = [str(ts) for ts in AllTransferSyntaxes]


def build_ae(gateway: Gateway) -> AE:
    settings = gateway.settings
    # received data sets go straight to a file, undecoded (pynetdicom issue #438, #583)
    _config.STORE_RECV_CHUNKED_DATASET = True
    # and sub-operations sent from the archive's file as it is (tessera.dimse.filesend)
    _config.STORE_SEND_CHUNKED_DATASET = True
    # every storage SOP class, retired and private ones included, in the Transfer Syntax
    # proposed first (whether the archive can keep it is the STOW-RS answer's to say)
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    # requests' identifiers are logged by us without their values, never by pynetdicom
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    policy.install()
    # pydicom is not asked to judge the values it forwards (a 65-character LO stored by
    # the archive is sent as it is), nor pynetdicom to log each request
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    level = logging.getLogger().getEffectiveLevel()
    logging.getLogger("pynetdicom").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    ae = AE(ae_title=gateway.ae_title)
    ae.tessera_policy = policy.Policy(gateway.ae_title, gateway.nodes.get)  # type: ignore[attr-defined]
    ae.maximum_associations = settings.dimse_max_associations
    ae.maximum_pdu_size = settings.dimse_max_pdu
    ae.acse_timeout = settings.dimse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.dimse_timeout
    ae.connection_timeout = 10
    ae.add_supported_context(VERIFICATION, TRANSFER_SYNTAXES)
    for sop_class in QUERY_RETRIEVE:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    for uid in _STORAGE_CLASSES.values():
        ae.add_supported_context(uid, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    return ae


def handlers(gateway: Gateway) -> list[Any]:
    def accepted(event: evt.Event) -> None:
        metrics.ASSOCIATIONS.labels("accepted").inc()

    def aborted(event: evt.Event) -> None:
        metrics.ASSOCIATIONS.labels("aborted").inc()

    return [
        (evt.EVT_C_ECHO, partial(handle_echo, gateway)),
        (evt.EVT_C_STORE, partial(handle_store, gateway)),
        (evt.EVT_C_FIND, partial(handle_find, gateway)),
        (evt.EVT_C_MOVE, partial(handle_move, gateway)),
        (evt.EVT_C_GET, partial(handle_get, gateway)),
        tcp.HANDLER,
        (evt.EVT_ACCEPTED, accepted),
        (evt.EVT_ABORTED, aborted),
    ]


def server_tls(cert: str, key: str, ca: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def start(gateway: Gateway, ae: AE) -> list[ThreadedAssociationServer]:
    """The listeners, serving in their own threads."""
    settings = gateway.settings
    plain = ae.start_server(
        (settings.host, settings.dimse_port), block=False, evt_handlers=handlers(gateway)
    )
    assert plain is not None  # not blocking: the server is returned
    servers: list[ThreadedAssociationServer] = [plain]
    if settings.dimse_tls_port:
        if not (settings.dimse_tls_cert and settings.dimse_tls_key):
            raise SystemExit("the DIMSE TLS port needs TESSERA_DIMSE_TLS_CERT and _KEY")
        tls = server_tls(settings.dimse_tls_cert, settings.dimse_tls_key, settings.dimse_tls_ca)
        secure = ae.start_server(
            (settings.host, settings.dimse_tls_port),
            block=False,
            evt_handlers=handlers(gateway),
            ssl_context=tls,
        )
        assert secure is not None
        servers.append(secure)
    metrics.ACTIVE.set_function(lambda: len(ae.active_associations))
    return servers
