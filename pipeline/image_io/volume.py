"""What the image readers return: a validated `LoadedVolume` or `LoadedLabel`, and the raw
contents a format reader hands to validation (`RawVolume`)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nrrd
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

__all__ = ["READ_ERRORS", "LoadedLabel", "LoadedVolume", "RawVolume"]

#: What the libraries raise on truncated, corrupt or mislabelled files.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    RuntimeError,
    zlib.error,
    ImageFileError,
    HeaderDataError,
    nrrd.NRRDError,
)


@dataclass(frozen=True)
class LoadedVolume:
    """One validated input volume.

    Attributes:
        path: the file (or DICOM folder) it was read from.
        image: ``XxYxZ`` float32, axis order as stored in the file.
        label: ``XxYxZ`` uint8 in {0, 1} from the same file (h5 ``label``), else None.
        spacing: voxel size in mm along the three array axes.
        affine: 4x4 nested list, voxel index -> world mm (RAS).
        source_format: ``nifti`` | ``nrrd`` | ``h5`` | ``npy`` | ``dicom``.
        source_dtype: the image dtype in the file (e.g. ``uint8``) before conversion to float32.
        sha256: hex sha256 of the source (`readers.source_sha256`).
        has_geometry: the file places its voxels in the world (NIfTI; NRRD with
            ``space directions``); npy, h5 and NRRD without directions do not.
    """

    path: Path
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: list[list[float]]
    source_format: str
    source_dtype: str
    sha256: str
    has_geometry: bool = False


@dataclass(frozen=True)
class LoadedLabel:
    """A label file read on its own: ``XxYxZ`` uint8 {0, 1}, spacing, affine, and whether the
    file places its voxels in the world (see `LoadedVolume.has_geometry`)."""

    label: np.ndarray
    spacing: tuple[float, float, float]
    affine: list[list[float]]
    has_geometry: bool


@dataclass
class RawVolume:
    """What a format reader returns before validation: the file's arrays as stored, spacing
    (mm) and 4x4 affine (voxel index -> world mm, RAS)."""

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    affine: np.ndarray
    has_geometry: bool = False  # the file says where its voxels are (NIfTI, NRRD directions)
