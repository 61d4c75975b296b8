"""Where a store lives besides a local directory: object storage settings (fsspec options).

Credentials never go into these settings (they end up in the round's stored config): they come
from the usual places of the storage library, for S3 the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), ``~/.aws`` profiles or an instance/pod role.
The endpoint and the region may be set here or through ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` and ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; ``SEMISAM_STORAGE`` (inline JSON
or the path of a JSON file) gives defaults for every command, e.g.
``SEMISAM_STORAGE='{"endpoint_url": "http://minio:9000"}'``.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, field_validator

from .base import StrictModel

STORAGE_ENV = "SEMISAM_STORAGE"
# option names that would carry a secret into a stored config
_SECRET_OPTIONS = frozenset({"key", "secret", "token", "password", "aws_access_key_id",
                             "aws_secret_access_key", "aws_session_token", "credentials"})


class StorageConfig(StrictModel):
    """fsspec settings for a store given as a URL (``s3://bucket/prefix``); unused for local paths.

    Attributes:
        endpoint_url: S3-compatible endpoint (MinIO, Ceph, a test server); None: the
            environment's ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else AWS itself.
        region: bucket region; None: ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` or the profile's.
        profile: a named profile of ``~/.aws/credentials``.
        anon: unsigned requests (public buckets).
        forward_credentials: copy the driver's ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
            / ``AWS_SESSION_TOKEN`` into the Ray workers' ``runtime_env`` (they are then stored in
            Ray's GCS and may show in the dashboard). Off by default: on a cluster give every node
            its own credentials (role, Kubernetes Secret).
        options: further fsspec options, merged last (e.g. ``{"config_kwargs": {...}}``);
            secrets are refused here.
    """

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint URL")
    region: str | None = Field(None, description="bucket region")
    profile: str | None = Field(None, description="named AWS profile")
    anon: bool = Field(False, description="unsigned requests (public buckets)")
    forward_credentials: bool = Field(False, description="copy the driver's AWS keys to workers")
    options: dict[str, Any] = Field(default_factory=dict, description="extra fsspec options")

    @field_validator("options")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(k for k in value if k.lower() in _SECRET_OPTIONS)
        if bad:
            raise ValueError(f"credentials do not belong in the config ({', '.join(bad)}); "
                             "use the environment or a profile")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"endpoint_url must be a URL like http://host:9000, got {value!r}")
        return value

    def merged_over(self, base: StorageConfig) -> StorageConfig:
        """These settings where set (non-default), ``base`` elsewhere."""
        data = base.model_dump()
        mine = self.model_dump(exclude_defaults=True)
        options = {**data.pop("options"), **mine.pop("options", {})}
        return StorageConfig.model_validate({**data, **mine, "options": options})

    def resolved_endpoint(self) -> str | None:
        """The endpoint: this config's, else the environment's S3 endpoint variables."""
        return (self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or None)

    def resolved_region(self) -> str | None:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
