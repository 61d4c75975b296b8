"""Volumes in the store: ``volumes/<id>/image``, ``volumes/<id>/label`` and their metadata."""

from __future__ import annotations

import numpy as np
import zarr

from semisam.schemas import (
    MULTICLASS_SCHEMA_VERSION,
    ClassMap,
    InputError,
    StoreError,
    VolumeMeta,
    binary_classes,
    validate_volume_id,
    volume_path,
)

DIMENSION_NAMES = ("i", "j", "k")  # voxel index axes of the source file (affine maps them to mm)


def slice_chunks(shape: tuple[int, ...], slice_axis: int = 2, slices_per_chunk: int = 8) -> tuple[int, ...]:
    """Chunk shape: whole planes, ``slices_per_chunk`` planes along ``slice_axis``."""
    chunks = list(shape)
    chunks[slice_axis] = max(1, min(shape[slice_axis], slices_per_chunk))
    return tuple(int(c) for c in chunks)


def list_volumes(root: zarr.Group) -> list[str]:
    """Sorted ids of every ingested volume."""
    if "volumes" not in root:
        return []
    return sorted(root["volumes"].group_keys())


def read_meta(root: zarr.Group, volume_id: str) -> VolumeMeta:
    """The `VolumeMeta` of one volume. Raises `StoreError` if it is absent or unreadable."""
    path = volume_path(volume_id)
    try:
        attrs = dict(root[path].attrs)
        return VolumeMeta.model_validate(attrs["meta"])
    except KeyError:
        raise StoreError(f"volume '{volume_id}': not in the store (or ingest did not finish)") from None


def list_metas(root: zarr.Group) -> list[VolumeMeta]:
    """Metadata of every fully ingested volume (ids without metadata are skipped)."""
    metas = []
    for vid in list_volumes(root):
        attrs = dict(root[volume_path(vid)].attrs)
        if "meta" in attrs:
            metas.append(VolumeMeta.model_validate(attrs["meta"]))
    return metas


def read_image(root: zarr.Group, volume_id: str) -> np.ndarray:
    """``XxYxZ`` float32 image.

    Raises:
        InputError: a chunk of it cannot be decoded (truncated or corrupt: the codec's
            RuntimeError/ValueError), one line naming the volume; bad data, not retried.
            I/O errors (OSError) pass through: they may be transient.
    """
    try:
        return np.asarray(root[f"{volume_path(volume_id)}/image"][...], dtype=np.float32)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"volume '{volume_id}': its image in the store cannot be read "
                         f"({type(exc).__name__}: {first}); re-ingest it") from None


def read_label(root: zarr.Group, volume_id: str) -> np.ndarray | None:
    """``XxYxZ`` uint8 label, or None for an unlabeled volume."""
    path = f"{volume_path(volume_id)}/label"
    if path not in root:
        return None
    return np.asarray(root[path][...], dtype=np.uint8)


def write_volume(
    root: zarr.Group,
    meta: VolumeMeta,
    image: np.ndarray,
    label: np.ndarray | None,
) -> None:
    """Write one volume. Metadata (which marks it ingested) goes last.

    Args:
        image: ``XxYxZ`` float32.
        label: ``XxYxZ`` uint8 {0,1} or None.
    """
    validate_volume_id(meta.volume_id)
    if image.ndim != 3:
        raise InputError(f"volume '{meta.volume_id}': image must be 3D, got shape {image.shape}")
    if label is not None and label.shape != image.shape:
        raise InputError(
            f"volume '{meta.volume_id}': label shape {label.shape} differs from image {image.shape}"
        )
    group = root.require_group(volume_path(meta.volume_id))
    if "meta" in group.attrs:  # re-ingest: unmark until the new arrays are in place
        del group.attrs["meta"]
    chunks = slice_chunks(image.shape)
    group.create_array("image", data=image.astype(np.float32, copy=False), chunks=chunks,
                       overwrite=True, dimension_names=DIMENSION_NAMES)
    if label is not None:
        group.create_array("label", data=label.astype(np.uint8, copy=False), chunks=chunks,
                           overwrite=True, dimension_names=DIMENSION_NAMES)
    elif "label" in group:
        del group["label"]
    group.attrs.update({"meta": meta.model_dump(mode="json")})


def read_reference(root: zarr.Group, volume_id: str) -> np.ndarray | None:
    """Ground truth for evaluation: ``volumes/<id>/reference`` (volumes ingested as unlabeled
    that came with a label), else ``label``, else None. ``XxYxZ`` uint8 {0,1}."""
    base = volume_path(volume_id)
    for name in ("reference", "label"):
        if f"{base}/{name}" in root:
            return np.asarray(root[f"{base}/{name}"][...], dtype=np.uint8)
    return None


def read_class_map(root: zarr.Group) -> ClassMap:
    """The store's class map (root attribute ``classes``); a store without one (every store
    written before class maps, and every one-structure store) is ``{1: "foreground"}``."""
    raw = root.attrs.get("classes")
    if raw is None:
        return binary_classes()
    try:
        return ClassMap(names={int(k): v for k, v in dict(raw).items()})
    except (ValueError, TypeError, AttributeError) as exc:
        raise StoreError(f"store attribute 'classes' is not a valid class map ({exc})") from None


def write_class_map(root: zarr.Group, classes: ClassMap) -> None:
    """Record ``classes`` in the store root. A one-structure map ``{1: "foreground"}`` is not
    written (such stores stay as they always were); any other map raises the store's
    ``schema_version`` to `MULTICLASS_SCHEMA_VERSION`, which older semisam versions refuse
    instead of reading its labels as binary."""
    if not classes.multiclass and classes.names == binary_classes().names:
        return
    root.attrs.update({"classes": classes.to_attrs(),
                       "schema_version": max(int(root.attrs.get("schema_version", 1)),
                                             MULTICLASS_SCHEMA_VERSION)})
