"""The gateway's HTTP API, as the router forwards it (README "DIMSE", "Peers").

The gateway owns its AE registry and its SCU jobs; the router authenticates the caller
(the admin permission), audits the request, and forwards these paths unchanged to
``dimse_url`` with its internal credential, as it does for the shard services:

    GET    /admin/dicom-nodes                   every registered AE
    PUT    /admin/dicom-nodes/{aet}             register or change an AE: {"host", "port",
                                                "operations": [...], "labels", "tls",
                                                "description"}
    GET    /admin/dicom-nodes/{aet}
    DELETE /admin/dicom-nodes/{aet}
    POST   /admin/dicom-nodes/{aet}/echo        C-ECHO it (SCU)
    POST   /admin/dicom-nodes/{aet}/find        C-FIND on it: {"level", "query": {...}}
    POST   /admin/dicom-nodes/{aet}/move        C-MOVE from it into Tessera: a job
    POST   /admin/dicom-nodes/{aet}/store       C-STORE studies of Tessera to it: a job
    GET    /admin/dimse-jobs                    the jobs, newest first
    GET    /admin/dimse-jobs/{id}               one job and its progress

The gateway also holds the DICOMweb peers (remote archives reached over HTTPS) and
their transfer jobs:

    GET    /admin/peers                         every peer (secrets masked)
    PUT    /admin/peers/{name}                  register or change one: {"url", "kind":
                                                "dicomweb"|"tessera", "auth": {"type":
                                                "none"|"bearer"|"basic"|
                                                "client_credentials", ...}, "caCert",
                                                "verifyTls", "description"}
    GET    /admin/peers/{name}
    DELETE /admin/peers/{name}
    POST   /admin/peers/{name}/check            reach it (a search there)
    POST   /admin/peers/{name}/pull             from it into Tessera: {"studies": [...]} |
                                                {"series": [...]} | {"instances": [...]} |
                                                {"query": {...}}, "verify": bool; a job
    POST   /admin/peers/{name}/push             from Tessera to it: {"studies"|"query"}
    POST   /admin/peers/{name}/mirror           follow it: {"from": "now", "since",
                                                "interval"}; runs until cancelled
    GET    /admin/peer-jobs                     the jobs, newest first
    GET    /admin/peer-jobs/{id}                one job: state and progress
    DELETE /admin/peer-jobs/{id}                cancel it

and the webhooks that deliver the cluster's change feed (:mod:`tessera.dimse.webhooks`):

    GET    /admin/webhooks                      every webhook (secrets masked), its counts
    PUT    /admin/webhooks/{name}               {"url", "secret", "actions": [...],
                                                "maxAttempts", "from": "now"|"beginning"}
    GET    /admin/webhooks/{name}
    DELETE /admin/webhooks/{name}
    GET    /admin/webhooks/{name}/dead-letters  the batches it could not deliver
    POST   /admin/webhooks/{name}/dead-letters/{id}/retry   send one again
    DELETE /admin/webhooks/{name}/dead-letters/{id}
"""

NODES = "/admin/dicom-nodes"
JOBS = "/admin/dimse-jobs"
PEERS = "/admin/peers"
PEER_JOBS = "/admin/peer-jobs"
WEBHOOKS = "/admin/webhooks"
PREFIXES = (NODES, JOBS, PEERS, PEER_JOBS, WEBHOOKS)
