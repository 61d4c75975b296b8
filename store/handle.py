"""Opening a semisam Zarr store (local directory or fsspec URL) and checking its schema."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import zarr

from semisam.schemas import SCHEMA_VERSION, StorageConfig, StoreError

from .remote import fsspec_options, is_url, probe_writable, url_has_store

log = logging.getLogger(__name__)

_NO_STORE = "no semisam store here (run `semisam ingest` first)"


def _check_local(location: str, create: bool) -> None:
    """The local-directory checks: a store exists, or may be created and written."""
    path = Path(location)
    if (path / "zarr.json").exists():
        return
    if not create:
        raise StoreError(f"{location}: {_NO_STORE}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".semisam-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"{location}: store path is not writable ({exc.strerror})") from None


def _check_url(location: str, options: dict[str, Any], create: bool) -> None:
    """The same checks through fsspec (a missing bucket or missing credentials are errors)."""
    if url_has_store(location, options):
        return
    if not create:
        raise StoreError(f"{location}: {_NO_STORE}")
    probe_writable(location, options)


def _open_group(location: str, mode: str, options: dict[str, Any] | None,
                create: bool) -> zarr.Group:
    kwargs: dict[str, Any] = {"use_consolidated": False}
    if options is not None:
        kwargs["storage_options"] = options
    try:
        return zarr.open_group(store=location, mode=mode, **kwargs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        if not create:
            raise StoreError(f"{location}: {_NO_STORE}") from None
        return zarr.open_group(store=location, mode="a", **kwargs)
    except PermissionError as exc:
        raise StoreError(f"{location}: store is not accessible ({exc})") from None
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a non-store directory
        raise StoreError(
            f"{location}: not a readable Zarr v3 store ({type(exc).__name__}: {exc})") from None


def open_store(store: str | Path, *, create: bool = False, read_only: bool = False,
               storage: StorageConfig | None = None) -> zarr.Group:
    """Open the root group of a semisam store.

    Args:
        store: a local directory (``data.zarr``) or an fsspec URL (``s3://bucket/prefix``).
        create: create an empty store (with ``schema_version``) if none exists there.
        read_only: open without write access.
        storage: object-store settings for URLs (endpoint, region, ...), over the
            ``SEMISAM_STORAGE`` and ``AWS_*`` environment; ignored for local paths.

    Returns:
        The root `zarr.Group`.

    Raises:
        StoreError: missing store (and not ``create``), unwritable or unreachable location,
            missing bucket or credentials, not a semisam store, or a store written by a newer
            schema.
    """
    location = str(store)
    location = location.removeprefix("file://")
    options = None
    if is_url(location):
        options = fsspec_options(location, storage)
        _check_url(location, options, create)
    else:
        _check_local(location, create)
    root = _open_group(location, "r" if read_only else "a", options, create)
    version = root.attrs.get("schema_version")
    if version is None:
        if not create or read_only:
            raise StoreError(
                f"{location}: Zarr group without 'schema_version': not a semisam store")
        root.attrs.update({"schema_version": SCHEMA_VERSION, "description": "semisam store"})
    elif not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreError(
            f"{location}: store schema_version {version!r} is newer than this semisam "
            f"understands ({SCHEMA_VERSION}); upgrade semisam"
        )
    return root
