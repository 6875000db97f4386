"""The DIMSE gateway's HTTP API, as the router forwards it (README "DIMSE").

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
"""

NODES = "/admin/dicom-nodes"
JOBS = "/admin/dimse-jobs"
PREFIXES = (NODES, JOBS)
