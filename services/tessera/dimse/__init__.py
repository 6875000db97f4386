"""The DIMSE gateway: DICOM networking (PS3.7, PS3.8) in front of the archive.

Modalities and PACS associate with it (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET as an
SCP), and the admin API drives it as an SCU (echo, find, move into Tessera, store to a
node). It holds no images: every operation is a DICOMweb request to the router, made on
behalf of the calling AE's credential, so DIMSE and DICOMweb share one archive, one set
of rules and one audit trail, across every shard.

    nodes      the AE registry (who may associate, from where, to do what)
    policy     association acceptance: AE titles and addresses (PS3.8 9.3.4)
    archive    the router as the gateway sees it (STOW-RS, QIDO-RS, WADO-RS)
    echo, store, find, retrieve   one module per DIMSE service as an SCP
    scu        the gateway as an SCU; jobs: the long SCU operations, kept in PostgreSQL
    server     the pynetdicom AE and its listeners (plain and TLS)
    app        the HTTP side: probes, metrics, the registry and SCU API
"""
