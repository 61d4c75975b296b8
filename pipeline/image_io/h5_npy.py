"""UA-MT style h5 files (datasets ``image`` and optional ``label``, a ``spacing`` attribute or
dataset) and single ``.npy`` arrays: no world geometry, spacing only."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from semisam.schemas import InputError

from .validate import check_file, input_error
from .volume import READ_ERRORS, RawVolume

__all__ = ["h5_spacing", "read_h5", "read_h5_label", "read_npy"]

def h5_spacing(fh: h5py.File) -> tuple[float, ...]:
    """``spacing`` from a file or ``image``/``label`` attribute or a dataset; else 1 mm."""
    sources = [fh.attrs] + [
        fh[n].attrs for n in ("image", "label") if isinstance(fh.get(n), h5py.Dataset)
    ]
    for attrs in sources:
        if "spacing" in attrs:
            return tuple(np.asarray(attrs["spacing"], dtype=np.float64).ravel().tolist())
    if isinstance(fh.get("spacing"), h5py.Dataset):
        return tuple(np.asarray(fh["spacing"][()], dtype=np.float64).ravel().tolist())
    return (1.0, 1.0, 1.0)


def read_h5(path: Path) -> RawVolume:
    with h5py.File(path, "r") as fh:
        if not isinstance(fh.get("image"), h5py.Dataset):
            raise input_error(path, f"h5 file has no 'image' dataset (found: {sorted(fh.keys())})")
        image = fh["image"][()]
        label_obj = fh.get("label")
        label = label_obj[()] if isinstance(label_obj, h5py.Dataset) else None
        spacing = h5_spacing(fh)
    affine = np.diag([*spacing, 1.0]) if len(spacing) == 3 else np.eye(4)
    return RawVolume(image=image, label=label, spacing=spacing, affine=affine)


def read_npy(path: Path) -> RawVolume:
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise input_error(path, "array has unsupported dtype object") from None
        raise
    if not isinstance(data, np.ndarray):
        raise input_error(path, f"not a single .npy array (got {type(data).__name__})")
    return RawVolume(image=data, label=None, spacing=(1.0, 1.0, 1.0), affine=np.eye(4))



def read_h5_label(path: Path) -> RawVolume:
    """An h5 label file: its ``label`` dataset (or ``image`` if it has none) as the raw image."""
    check_file(path)
    try:
        with h5py.File(path, "r") as fh:
            name = "label" if isinstance(fh.get("label"), h5py.Dataset) else "image"
            if not isinstance(fh.get(name), h5py.Dataset):
                raise input_error(
                    path, f"h5 label file has no 'label' dataset (found: {sorted(fh.keys())})"
                )
            data = fh[name][()]
            spacing = h5_spacing(fh)
    except InputError:
        raise
    except READ_ERRORS as exc:
        raise input_error(
            path, f"cannot read h5 file, truncated or corrupt? ({type(exc).__name__}: {exc})"
        ) from None
    affine = np.diag([*spacing, 1.0]) if len(spacing) == 3 else np.eye(4)
    return RawVolume(image=data, label=None, spacing=spacing, affine=affine)
