"""Who is asking, and what they may do: shared by the router and the shard services.

* :mod:`.principal`  :class:`Principal` (subject, client, permissions, labels) and the
                     four permissions: read, write, delete, admin;
* :mod:`.internal`   the router's short-lived credential to the shards
                     (:class:`InternalCredential`) and the middleware with which every
                     shard service refuses a request without it (:class:`InternalAuth`).

The router authenticates clients (OIDC bearer tokens, API keys:
``tessera.router.auth``) and hands the shards a :class:`Principal` inside the internal
credential, so a shard filters by the caller's labels without knowing how they logged in.
"""

from tessera.shared.auth.principal import ALL_PERMISSIONS, Permission, Principal

__all__ = ["ALL_PERMISSIONS", "Permission", "Principal"]
