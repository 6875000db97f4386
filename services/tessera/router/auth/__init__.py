"""Authentication, authorization and the audit trail at the router (the one public
endpoint). See :mod:`.middleware` for what happens to each request, :mod:`.oidc` for
bearer tokens from an OpenID provider, :mod:`.apikeys` for Tessera's own API keys,
:mod:`.claims` for how claims become permissions and labels, :mod:`.audit` for the
trail, and :mod:`.security` for how they are configured.
"""
