"""A new, uniquely named bucket on the test S3 API server."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from tessera.local.processes import create_bucket


def new_bucket(s3_settings: Mapping[str, str], prefix: str) -> str:
    """Create ``<prefix>-<random>`` with the ``s3_settings`` fixture's credentials."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    create_bucket(
        s3_settings["s3_endpoint_url"],
        name,
        access_key_id=s3_settings["s3_access_key_id"],
        secret_access_key=s3_settings["s3_secret_access_key"],
        region=s3_settings["s3_region"],
    )
    return name
