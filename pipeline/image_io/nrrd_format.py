"""NRRD files: the detached data file rule and the geometry (``space directions`` / ``space
origin``, LPS/LAS spaces converted to RAS)."""

from __future__ import annotations

import logging
from pathlib import Path

import nrrd
import numpy as np

from .validate import display_path, input_error
from .volume import RawVolume

__all__ = ["nrrd_affine", "nrrd_data_file", "read_nrrd"]

log = logging.getLogger(__name__)

# NRRD world spaces and the sign flips of (x, y, z) that turn them into RAS.
_NRRD_SPACE_TO_RAS: dict[str, tuple[float, float, float]] = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
}



def nrrd_data_file(path: Path) -> Path | None:
    """The detached voxel data file a NRRD header names (``data file: NAME``), None when the
    voxels follow the header (or the header cannot be read: the reader says why).

    Only one data file in the header's folder (or below it) is accepted: a header that pulls
    voxels from elsewhere (``../../other/det.raw``) would make what is ingested depend on files
    outside what the user pointed at, so it is refused; so is a list or pattern of files.

    Raises:
        InputError: a list/pattern of data files, a data file outside the header's folder, or
            a missing data file.
    """
    try:
        header = nrrd.read_header(str(path))
    except (nrrd.NRRDError, OSError, ValueError, UnicodeDecodeError):
        return None
    name = header.get("data file", header.get("datafile"))
    if name is None:
        return None
    name = str(name).strip()
    if name.upper().startswith("LIST") or ("%" in name and " " in name):
        raise input_error(path, f"NRRD 'data file: {name}' names several files; only one "
                                "detached data file is supported")
    folder, target = path.resolve().parent, (path.parent / name).resolve()
    if not target.is_relative_to(folder):
        raise input_error(path, f"NRRD 'data file: {name}' is outside the header's folder "
                                f"({target}); put the data file next to its header")
    if not target.is_file():
        raise input_error(path, f"NRRD detached data file {name} not found ({target})")
    return target



def nrrd_affine(header: dict, ndim: int, path: Path) -> tuple[tuple[float, ...], np.ndarray]:
    """Spacing (column norms) and RAS affine from ``space directions`` / ``space origin``."""
    affine = np.eye(4)
    if ndim < 3:  # the image check reports this
        return (1.0, 1.0, 1.0), affine
    directions = header.get("space directions")
    if directions is not None:
        dirs = np.asarray(directions, dtype=np.float64)
        if (
            dirs.ndim != 2
            or dirs.shape[0] < 3
            or dirs.shape[1] != 3
            or not np.isfinite(dirs[:3]).all()
        ):
            raise input_error(
                path,
                f"bad NRRD header: 'space directions' {directions!r} is not 3 vectors of length 3",
            )
        affine[:3, :3] = dirs[:3].T  # column j = world step of array axis j
    elif header.get("spacings") is not None:
        affine[:3, :3] = np.diag(np.asarray(header["spacings"], dtype=np.float64)[:3])
    origin = header.get("space origin")
    if origin is not None:
        affine[:3, 3] = np.asarray(origin, dtype=np.float64)[:3]
    space = str(header.get("space", "")).lower()
    if space in _NRRD_SPACE_TO_RAS:
        affine[:3, :] *= np.asarray(_NRRD_SPACE_TO_RAS[space])[:, None]
    elif space:
        log.warning(
            "%s: NRRD space %r kept as is (not converted to RAS)", display_path(path), space
        )
    spacing = tuple(float(n) for n in np.linalg.norm(affine[:3, :3], axis=0))
    return spacing, affine


def read_nrrd(path: Path) -> RawVolume:
    data_file = nrrd_data_file(path)
    if data_file is not None:
        log.info("%s: voxel data in the detached file %s", display_path(path),
                 display_path(data_file))
    data, header = nrrd.read(str(path))  # index_order="F": array axes = file axes (x, y, z)
    spacing, affine = nrrd_affine(header, data.ndim, path)
    return RawVolume(image=data, label=None, spacing=spacing, affine=affine,
                has_geometry=header.get("space directions") is not None)

