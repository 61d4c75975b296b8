"""Corrected labels back into the store (`semisam correct`).

A user exports a round (``semisam export --round r --to out/``), fixes
``out/pseudo_label/<id>.nii.gz`` in ITK-SNAP or 3D Slicer and brings the folder (or single files)
back. For each file named ``<id>.nii.gz`` (also ``.nii``, ``.nrrd``):

- the volume must be in the store; the file is read like an ingest label (integer values,
  class values of the store only) and placed on the stored image by world geometry
  (`image_io.validate.align_label`: identical grids pass, another axis order/direction of the same
  grid is reoriented, anything else is refused in one line);
- ``volumes/<id>/label`` is written and then the volume's metadata is marked labeled with
  ``label_sha256`` = the file's sha256, and a `LabelCorrection` goes beside it in the volume's
  attributes (``correction``): corrected from round r, the file's name and sha256, voxels changed
  against that round's pseudo-label. Nothing else in the store is written; images, references,
  rounds and other volumes stay byte for byte;
- a file whose sha256 is already the volume's recorded correction is a no-op (a rerun writes
  nothing); a volume labeled at ingest is refused (its label is the user's own, not a correction).

The next ``train``/``loop`` reads the volume as labeled (its data fingerprint includes the
labeled flag and label hash, so a resumed run sees the change).
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

import numpy as np
import zarr
from pydantic import Field

from semisam.schemas import InputError, StoreError, StrictModel, VolumeStatus, utcnow, volume_path
from semisam.store import (
    list_rounds,
    read_class_map,
    read_meta,
    read_output,
    read_record,
    slice_chunks,
)

from .image_io import read_label_file, source_sha256
from .image_io.validate import align_label, display_path

log = logging.getLogger(__name__)

SUFFIXES = (".nii.gz", ".nii", ".nrrd")
CORRECTION_ATTR = "correction"


class LabelCorrection(StrictModel):
    """Provenance of a corrected label (``volumes/<id>`` attribute ``correction``)."""

    source_name: str = Field(description="file name of the corrected label (no directory)")
    sha256: str = Field(description="sha256 of the corrected file's bytes")
    round: int | None = Field(description="round whose pseudo-label was corrected (None: none)")
    pseudo_label_sha256: str | None = Field(
        None, description="checksum of that round's pseudo-label, from its record")
    changed_voxels: int | None = Field(None, description="voxels that differ from that pseudo-label")
    foreground_voxels: int = Field(description="voxels > 0 in the corrected label")
    corrected_at: str = Field(default_factory=utcnow)


class CorrectionStatus(str, Enum):
    added = "added"
    replaced = "replaced"
    unchanged = "unchanged"


class CorrectedVolume(StrictModel):
    volume_id: str
    status: CorrectionStatus
    correction: LabelCorrection


def collect_files(sources: list[Path]) -> list[Path]:
    """Label files among ``sources`` (files, or folders searched one level deep, also in a
    ``pseudo_label/`` subfolder as `export` writes it), sorted. Raises `InputError` for a
    missing path or a folder without label files."""
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            found = [p for d in (src, src / "pseudo_label") if d.is_dir() for p in sorted(d.iterdir())
                     if p.is_file() and p.name.endswith(SUFFIXES)]
            if not found:
                raise InputError(f"{display_path(src)}: no label files ({', '.join(SUFFIXES)}) in it")
            files.extend(found)
        elif src.is_file():
            files.append(src)
        else:
            raise InputError(f"{display_path(src)}: no such file or folder")
    return sorted(set(files))


def volume_id_of(path: Path) -> str:
    """``<id>`` of ``<id>.nii.gz`` etc. Raises `InputError` for another suffix."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    raise InputError(f"{display_path(path)}: not a label file (expected {', '.join(SUFFIXES)})")


def corrected_round(root: zarr.Group, volume_id: str, round_index: int | None) -> int | None:
    """The round the correction starts from: ``round_index`` when given (it must hold a finished
    pseudo-label of the volume), else the last round that has one, else None."""
    rounds = list_rounds(root)
    if round_index is not None:
        record = read_record(root, round_index, volume_id) if round_index in rounds else None
        if record is None or record.status != VolumeStatus.done:
            raise InputError(f"volume '{volume_id}': round {round_index} has no finished "
                             "pseudo-label of it (--round names the round you exported)")
        return round_index
    for r in reversed(rounds):
        record = read_record(root, r, volume_id)
        if record is not None and record.status == VolumeStatus.done:
            return r
    return None


def load_correction(root: zarr.Group, path: Path) -> tuple[str, np.ndarray, str]:
    """``(volume_id, label, sha256)``: the file read as a label of the store's classes and
    placed on the stored image's voxel grid (``XxYxZ`` uint8)."""
    volume_id = volume_id_of(path)
    try:
        meta = read_meta(root, volume_id)
    except StoreError:
        raise InputError(f"{display_path(path)}: no volume '{volume_id}' in the store (the file "
                         "name must be the volume id, as `semisam export` writes it)") from None
    loaded = read_label_file(path, keep_classes=True)
    label = align_label(loaded.label, loaded.affine, meta.shape, meta.affine, path)
    allowed = {0, *read_class_map(root).names}
    extra = sorted(set(np.unique(label).tolist()) - allowed)
    if extra:
        raise InputError(f"{display_path(path)}: label values {extra} are not classes of the store "
                         f"(allowed {sorted(allowed)})")
    return volume_id, np.ascontiguousarray(label, dtype=np.uint8), source_sha256(path)


def check_correctable(root: zarr.Group, path: Path, volume_id: str, round_index: int | None
                      ) -> int | None:
    """The round the correction starts from (`corrected_round`); raises `InputError` for a
    volume labeled at ingest (its label is the user's own, not a correction)."""
    if read_meta(root, volume_id).labeled and CORRECTION_ATTR not in root[volume_path(volume_id)].attrs:
        raise InputError(f"{display_path(path)}: volume '{volume_id}' was labeled at ingest; "
                         "corrections replace pseudo-labels of unlabeled volumes only")
    return corrected_round(root, volume_id, round_index)


def apply_correction(root: zarr.Group, path: Path, round_index: int | None = None) -> CorrectedVolume:
    """Bring one corrected label file into the store (see the module docstring)."""
    volume_id, label, sha = load_correction(root, path)
    group = root[volume_path(volume_id)]
    meta = read_meta(root, volume_id)
    previous = group.attrs.get(CORRECTION_ATTR)
    if previous is not None and previous.get("sha256") == sha and meta.labeled:
        return CorrectedVolume(volume_id=volume_id, status=CorrectionStatus.unchanged,
                               correction=LabelCorrection.model_validate(previous))
    r = check_correctable(root, path, volume_id, round_index)
    pseudo = read_output(root, r, "pseudo_label", volume_id) if r is not None else None
    record = read_record(root, r, volume_id) if r is not None else None
    correction = LabelCorrection(
        source_name=path.name, sha256=sha, round=r,
        pseudo_label_sha256=(record.checksums.get("pseudo_label") if record else None),
        changed_voxels=None if pseudo is None else int(np.count_nonzero(pseudo != label)),
        foreground_voxels=int(np.count_nonzero(label)))
    group.create_array("label", data=label, chunks=slice_chunks(label.shape), overwrite=True,
                       dimension_names=("i", "j", "k"))
    new_meta = meta.model_copy(update={"labeled": True, "label_sha256": sha})
    group.attrs.update({"meta": new_meta.model_dump(mode="json"),
                        CORRECTION_ATTR: correction.model_dump(mode="json")})
    status = CorrectionStatus.replaced if previous is not None else CorrectionStatus.added
    log.info("%s: %s as the label of '%s' (round %s, %s voxels changed)", display_path(path),
             status.value, volume_id, r, correction.changed_voxels)
    return CorrectedVolume(volume_id=volume_id, status=status, correction=correction)


def apply_corrections(root: zarr.Group, sources: list[Path], round_index: int | None = None
                      ) -> list[CorrectedVolume]:
    """Every file of ``sources`` (`collect_files`), checked all first: one bad file stops the
    command before anything is written."""
    files = collect_files(sources)
    ids = [volume_id_of(p) for p in files]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(f"volume '{dup[0]}' has more than one corrected file among the inputs")
    for path in files:  # validate everything before the first write
        check_correctable(root, path, load_correction(root, path)[0], round_index)
    return [apply_correction(root, p, round_index) for p in files]


def read_correction(root: zarr.Group, volume_id: str) -> LabelCorrection | None:
    """The volume's recorded `LabelCorrection`, or None."""
    raw = root[volume_path(volume_id)].attrs.get(CORRECTION_ATTR)
    return None if raw is None else LabelCorrection.model_validate(raw)
