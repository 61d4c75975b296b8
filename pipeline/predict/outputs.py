"""Predict's outputs in ``OUT``: ``<id>.nii.gz`` (the label), ``<id>_prob.nii.gz`` (on request)
and ``classes.json`` (multi-class students), each written under a temporary name and renamed;
the label's header (``descrip``) names the prediction's fingerprint, so a rerun can tell a
finished scan from one to redo."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from semisam.schemas import ClassMap

__all__ = ["CLASSES_FILE", "LABEL_SUFFIX", "PROB_SUFFIX", "finished", "output_paths",
           "write_classes_file", "write_scan"]

log = logging.getLogger(__name__)

LABEL_SUFFIX = ".nii.gz"
PROB_SUFFIX = "_prob.nii.gz"
CLASSES_FILE = "classes.json"
DESCRIP_PREFIX = "semisam predict "


def output_paths(out_dir: Path, volume_id: str) -> tuple[Path, Path]:
    """``(label, probability)`` files of a volume."""
    return out_dir / f"{volume_id}{LABEL_SUFFIX}", out_dir / f"{volume_id}{PROB_SUFFIX}"


def _descrip(path: Path) -> str | None:
    import nibabel as nib

    try:
        raw = nib.load(str(path)).header["descrip"]
    except Exception:  # noqa: BLE001 (an unreadable leftover is simply redone)
        return None
    return bytes(np.asarray(raw).item()).decode("ascii", "replace").rstrip("\x00")


def finished(out_dir: Path, volume_id: str, fp: str, probabilities: bool) -> bool:
    """True when the outputs of ``volume_id`` are there and were made with fingerprint ``fp``."""
    label, prob = output_paths(out_dir, volume_id)
    if not label.is_file() or (probabilities and not prob.is_file()):
        return False
    return _descrip(label) == DESCRIP_PREFIX + fp


def _save(image, path: Path) -> None:
    import nibabel as nib

    tmp = path.with_name(f".{path.name[: -len(LABEL_SUFFIX)]}.partial{LABEL_SUFFIX}")
    nib.save(image, str(tmp))
    os.replace(tmp, path)


def write_scan(out_dir: Path, volume_id: str, mask: np.ndarray, prob: np.ndarray | None,
               affine: np.ndarray, fp: str) -> None:
    """Write one scan's outputs: the probability map first (when ``prob`` is given), then the
    label, so a label file is there only when the scan is complete.

    Args:
        mask: ``XxYxZ`` uint8 label (class values, 0 background).
        prob: ``XxYxZ`` float confidence in [0, 1], or None for no probability map.
        affine: 4x4 voxel index -> world mm (RAS) of the input.
        fp: the prediction's fingerprint, written into the headers.
    """
    from ..image_io.nifti import output_image  # nibabel loads on use

    label_path, prob_path = output_paths(out_dir, volume_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    descrip = DESCRIP_PREFIX + fp
    if prob is not None:
        _save(output_image(np.clip(prob, 0, 1).astype(np.float32), affine, descrip, label=False),
              prob_path)
    _save(output_image(mask, affine, descrip, label=True), label_path)


def write_classes_file(out_dir: Path, classes: ClassMap) -> Path:
    """``OUT/classes.json`` (``{"value": "name"}``, as export writes it), atomically; a
    different map already there is replaced (logged)."""
    path = Path(out_dir) / CLASSES_FILE
    text = json.dumps(classes.to_attrs(), indent=2)
    if path.is_file():
        try:
            old = path.read_text()
        except OSError:
            old = None
        if old == text:
            return path
        log.warning("%s: replaced (it named other classes: %s)", path, (old or "?").strip()[:120])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CLASSES_FILE}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
