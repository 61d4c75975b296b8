"""Opening a semisam Zarr store (local directory or fsspec URL) and checking its schema."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import zarr

from semisam.schemas import NEW_STORE_SCHEMA_VERSION, SCHEMA_VERSION, StorageConfig, StoreError

from .remote import fsspec_options, is_url, missing_bucket, probe_writable, url_has_store

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
    bucket = missing_bucket(location, options)
    if bucket is not None:  # the message ingest gives, from every command
        raise StoreError(f"{location}: bucket or location does not exist (no bucket '{bucket}')")
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
        root.attrs.update({"schema_version": NEW_STORE_SCHEMA_VERSION,
                           "description": "semisam store"})
    elif not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreError(
            f"{location}: store schema_version {version!r} is newer than this semisam "
            f"understands ({SCHEMA_VERSION}); upgrade semisam"
        )
    return root


# OSErrors that mean the store cannot take writes at all (every later write fails the same way),
# with the words messages use. A volume that failed with one of them is not bad data.
_WRITE_FAILURES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "no space left (disk quota exceeded)",
    errno.EROFS: "store is on a read-only file system",
    errno.EACCES: "permission denied writing the store",
}
_WRITE_FAILURE_TEXT = {  # the same failures after crossing a process boundary as text
    "[Errno 28]": errno.ENOSPC, "No space left on device": errno.ENOSPC,
    "[Errno 122]": errno.EDQUOT, "Disk quota exceeded": errno.EDQUOT,
    "[Errno 30]": errno.EROFS, "Read-only file system": errno.EROFS,
    "[Errno 13]": errno.EACCES, "Permission denied": errno.EACCES,
}


def store_write_failure(exc: BaseException | str | None) -> str | None:
    """What makes ``exc`` a store-wide write failure (``"no space left on device"``, ...) or None.

    ``exc`` may be an exception (its ``__cause__``/``__context__`` chain and a Ray task error's
    ``cause`` are followed) or the one-line text of one (a worker's record)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, str):
            for needle, code in _WRITE_FAILURE_TEXT.items():
                if needle in item:
                    return _WRITE_FAILURES[code]
            continue
        if isinstance(item, OSError) and item.errno in _WRITE_FAILURES:
            return _WRITE_FAILURES[item.errno]
        if isinstance(item, BaseException):
            todo += [item.__cause__, item.__context__, getattr(item, "cause", None), str(item)]
    return None


def store_full_error(location: str, failure: str, doing: str, after: str = "") -> StoreError:
    """One line for a store that cannot take writes: ``<store>: no space left on device while
    <doing>; <after> nothing is lost: ...``."""
    fix = ("make the store writable" if "read-only" in failure or "permission" in failure
           else "free space (or raise the quota)")
    tail = f" {after}" if after else ""
    return StoreError(f"{location}: {failure} while {doing};{tail} {fix} and rerun the same "
                      "command to go on (what was stored is kept)")
