"""Rounds in the store: round metadata, per-volume outputs and records.

A volume's outputs are written by exactly one worker, whole arrays at a time; its record with
``status=done`` is written after both arrays, so a volume without a done record is redone.
"""

from __future__ import annotations

import numpy as np
import zarr

from semisam.schemas import (
    RoundMeta,
    VolumeRecord,
    VolumeStatus,
    output_path,
    round_path,
)

from .digest import array_sha256
from .volumes import DIMENSION_NAMES, slice_chunks


def list_rounds(root: zarr.Group) -> list[int]:
    """Indices of the rounds that have begun (their meta is written). A group that holds only a
    lock, left by a start that was refused before the round began, is not a round."""
    if "rounds" not in root:
        return []
    rounds = root["rounds"]
    return sorted(int(k) for k in rounds.group_keys()
                  if k.isdigit() and "meta" in rounds[k].attrs)


def read_round_meta(root: zarr.Group, round_index: int) -> RoundMeta | None:
    path = round_path(round_index)
    if path not in root:
        return None
    attrs = dict(root[path].attrs)
    return RoundMeta.model_validate(attrs["meta"]) if "meta" in attrs else None


def write_round_meta(root: zarr.Group, meta: RoundMeta) -> None:
    group = root.require_group(round_path(meta.round))
    for kind in ("pseudo_label", "confidence", "records"):
        group.require_group(kind)
    group.attrs.update({"meta": meta.model_dump(mode="json")})


def read_record(root: zarr.Group, round_index: int, volume_id: str) -> VolumeRecord | None:
    """The volume's record, or None when absent or unreadable (treated as pending)."""
    path = output_path(round_index, "records", volume_id)
    try:
        if path not in root:
            return None
        attrs = dict(root[path].attrs)
        return VolumeRecord.model_validate(attrs["record"])
    except Exception:  # noqa: BLE001 - a torn record (killed mid-write) counts as pending
        return None


def write_record(root: zarr.Group, round_index: int, record: VolumeRecord) -> None:
    group = root.require_group(output_path(round_index, "records", record.volume_id))
    group.attrs.update({"record": record.model_dump(mode="json")})


def clear_record(root: zarr.Group, round_index: int, volume_id: str) -> None:
    """Forget a volume's record before it is (re)written, so a torn attempt stays pending."""
    path = output_path(round_index, "records", volume_id)
    if path in root:
        del root[path]


def volume_status(root: zarr.Group, round_index: int, volume_id: str) -> VolumeStatus:
    record = read_record(root, round_index, volume_id)
    return VolumeStatus.pending if record is None else record.status


def write_outputs(
    root: zarr.Group,
    round_index: int,
    volume_id: str,
    pseudo_label: np.ndarray,
    confidence: np.ndarray,
    slice_axis: int,
    attrs: dict | None = None,
) -> dict[str, str]:
    """Write both output arrays of one volume (overwriting any earlier attempt).

    Args:
        pseudo_label: ``XxYxZ`` uint8 {0,1}.
        confidence: ``XxYxZ`` uint8, value/255 = confidence.
        attrs: attributes copied onto both arrays (geometry of the source volume).

    Returns:
        ``{"pseudo_label": sha256, "confidence": sha256}`` of what was written.
    """
    if pseudo_label.dtype != np.uint8 or confidence.dtype != np.uint8:
        raise TypeError("pseudo_label and confidence must be uint8")
    checksums = {}
    for kind, data in (("pseudo_label", pseudo_label), ("confidence", confidence)):
        path = output_path(round_index, kind, volume_id)
        parent, name = path.rsplit("/", 1)
        extra = {"encoding": "uint8, value/255 = confidence in [0, 1]"} if kind == "confidence" else {}
        _write_array(root.require_group(parent), name, data, slice_axis, {**(attrs or {}), **extra})
        checksums[kind] = array_sha256(data)
    return checksums


def _write_array(group: zarr.Group, name: str, data: np.ndarray, slice_axis: int, attrs: dict) -> None:
    """A new array ``name`` holding ``data``, chunked by `slice_chunks`, overwriting any old one.

    Chunks that are all zero (the fill value) are not stored, as zarr's default
    ``write_empty_chunks=False`` would do; they are found here in one pass over ``data`` instead
    of zarr comparing every chunk with the fill value.
    """
    chunks = slice_chunks(data.shape, slice_axis)
    array = group.create_array(
        name, shape=data.shape, dtype=data.dtype, chunks=chunks, overwrite=True, attributes=attrs,
        dimension_names=DIMENSION_NAMES, config={"write_empty_chunks": True},
    )
    step, size = chunks[slice_axis], data.shape[slice_axis]
    planes = data.any(axis=tuple(a for a in range(data.ndim) if a != slice_axis))
    filled = [bool(planes[i : i + step].any()) for i in range(0, size, step)]
    region = [slice(None)] * data.ndim
    for first, last in _runs(filled):
        region[slice_axis] = slice(first * step, min(last * step, size))
        array[tuple(region)] = data[tuple(region)]


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of consecutive true flags."""
    runs: list[tuple[int, int]] = []
    for i, flag in enumerate(flags):
        if flag and runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        elif flag:
            runs.append((i, i + 1))
    return runs


def read_output(root: zarr.Group, round_index: int, kind: str, volume_id: str) -> np.ndarray | None:
    path = output_path(round_index, kind, volume_id)
    if path not in root:
        return None
    return np.asarray(root[path][...])
