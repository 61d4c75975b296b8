"""Stores given as URLs (``s3://bucket/prefix`` and other fsspec protocols).

The checks `open_store` makes on a local directory (is there a store, can it be created, is it
writable) are made here through fsspec, and the settings of `StorageConfig` become fsspec
options. Listing caches are off: other processes (workers, the driver) change the store.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from semisam.schemas import STORAGE_ENV, StorageConfig, StoreError
from semisam.schemas.settings import load_settings

log = logging.getLogger(__name__)

S3_PROTOCOLS = ("s3", "s3a")
# environment variables a worker needs to reach the same store as the driver (no secrets)
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_PROFILE")
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def is_url(store: str) -> bool:
    """True for ``protocol://...`` locations (fsspec), False for local paths."""
    return "://" in store and not store.startswith("file://")


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0].lower()


def env_storage() -> StorageConfig:
    """The ``SEMISAM_STORAGE`` defaults (inline JSON or a JSON file, read through
    `semisam.schemas.settings.Settings`); empty when unset.

    Raises:
        ConfigError: the variable is neither valid JSON nor a readable JSON file, or a field
            is invalid (or another ``SEMISAM_*`` variable is invalid).
    """
    return load_settings().storage or StorageConfig()


def effective_storage(storage: StorageConfig | None) -> StorageConfig:
    """``storage`` over the ``SEMISAM_STORAGE`` defaults (the environment when None)."""
    base = env_storage()
    return base if storage is None else storage.merged_over(base)


def fsspec_options(url: str, storage: StorageConfig | None = None) -> dict[str, Any]:
    """fsspec ``storage_options`` for ``url``.

    For S3: ``endpoint_url``, ``client_kwargs.region_name``, ``profile``, ``anon`` from the
    config or the environment; credentials are left to botocore's usual chain.
    """
    cfg = effective_storage(storage)
    opts: dict[str, Any] = {}
    if protocol_of(url) in S3_PROTOCOLS:
        opts["use_listings_cache"] = False
        endpoint, region = cfg.resolved_endpoint(), cfg.resolved_region()
        if endpoint:
            opts["endpoint_url"] = endpoint
        if region:
            opts["client_kwargs"] = {"region_name": region}
        if cfg.profile:
            opts["profile"] = cfg.profile
        if cfg.anon:
            opts["anon"] = True
    return {**opts, **cfg.options}


def _filesystem(url: str, options: dict[str, Any]):
    """A synchronous fsspec filesystem and the path inside it."""
    import fsspec

    try:
        return fsspec.url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        raise StoreError(f"{url}: cannot open this URL ({exc})") from None


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ("no storage credentials found "
                "(set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)")
    text = str(exc).splitlines()[0] if str(exc) else name
    return f"{name}: {text}"


def url_has_store(url: str, options: dict[str, Any]) -> bool:
    """Whether ``<url>/zarr.json`` exists. Raises `StoreError` if the location is unreachable."""
    fs, path = _filesystem(url, options)
    try:
        return bool(fs.exists(f"{path.rstrip('/')}/zarr.json"))
    except Exception as exc:  # noqa: BLE001 - botocore/aiohttp raise many types
        raise StoreError(f"{url}: store location is not accessible ({_describe(exc)})") from None


_BUCKET_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}


def missing_bucket(url: str, options: dict[str, Any]) -> str | None:
    """The bucket (container) of ``url`` when the object store says it does not exist, else
    None (no bucket in this protocol, the bucket exists, or the answer is not a plain "not
    found": denied access and network errors are reported by the other checks)."""
    fs, path = _filesystem(url, options)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    bucket = path.strip("/").split("/")[0]
    if not bucket or not protocols & _BUCKET_PROTOCOLS:
        return None
    try:
        fs.info(bucket)
    except FileNotFoundError:
        return bucket
    except Exception:  # noqa: BLE001 - not an answer about existence
        return None
    return None


def probe_writable(url: str, options: dict[str, Any]) -> None:
    """Write and delete a probe object under ``url``; `StoreError` if that is impossible."""
    fs, path = _filesystem(url, options)
    probe = f"{path.rstrip('/')}/.semisam-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except FileNotFoundError as exc:
        raise StoreError(f"{url}: bucket or location does not exist ({_describe(exc)})") from None
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"{url}: store location is not writable ({_describe(exc)})") from None


def worker_env(storage: StorageConfig | None = None) -> dict[str, str]:
    """Environment variables to hand to Ray workers so that they open the store as the driver
    does: endpoint, region, profile and ``SEMISAM_STORAGE`` when set (as inline JSON, so that a
    worker on another node needs no copy of a settings file); the credentials too when
    ``storage.forward_credentials``."""
    defaults = load_settings().storage
    forward = effective_storage(storage).forward_credentials
    names = FORWARDED_ENV + (CREDENTIAL_ENV if forward else ())
    env = {name: os.environ[name] for name in names if os.environ.get(name)}
    if defaults is not None:
        env[STORAGE_ENV] = defaults.model_dump_json(exclude_defaults=True)
    return env
