"""Opening a semisam Zarr store (local directory or fsspec URL) and checking its schema."""

from __future__ import annotations

import logging
from pathlib import Path

import zarr

from semisam.schemas import SCHEMA_VERSION, StoreError

log = logging.getLogger(__name__)


def _is_url(store: str) -> bool:
    return "://" in store


def open_store(store: str | Path, *, create: bool = False, read_only: bool = False) -> zarr.Group:
    """Open the root group of a semisam store.

    Args:
        store: a local directory (``data.zarr``) or an fsspec URL (``s3://bucket/prefix``).
        create: create an empty store (with ``schema_version``) if none exists there.
        read_only: open without write access.

    Returns:
        The root `zarr.Group`.

    Raises:
        StoreError: missing store (and not ``create``), unwritable path, not a semisam store,
            or a store written by a newer schema.
    """
    location = str(store)
    if not _is_url(location):
        path = Path(location)
        if not (path / "zarr.json").exists():
            if not create:
                raise StoreError(f"{location}: no semisam store here (run `semisam ingest` first)")
            try:
                path.mkdir(parents=True, exist_ok=True)
                probe = path / ".semisam-write-probe"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise StoreError(f"{location}: store path is not writable ({exc.strerror})") from None
    mode = "r" if read_only else "a"
    try:
        root = zarr.open_group(store=location, mode=mode, use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        if not create:
            raise StoreError(f"{location}: no semisam store here (run `semisam ingest` first)") from None
        root = zarr.open_group(store=location, mode="a", use_consolidated=False)
    except PermissionError as exc:
        raise StoreError(f"{location}: store is not accessible ({exc})") from None
    except Exception as exc:  # zarr raises several types for a non-store directory
        raise StoreError(f"{location}: not a readable Zarr v3 store ({type(exc).__name__}: {exc})") from None
    version = root.attrs.get("schema_version")
    if version is None:
        if not create or read_only:
            raise StoreError(f"{location}: Zarr group without 'schema_version': not a semisam store")
        root.attrs.update({"schema_version": SCHEMA_VERSION, "description": "semisam store"})
    elif not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreError(
            f"{location}: store schema_version {version!r} is newer than this semisam "
            f"understands ({SCHEMA_VERSION}); upgrade semisam"
        )
    return root
