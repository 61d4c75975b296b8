"""Reading input volumes: NIfTI (``.nii``, ``.nii.gz``), NRRD, UA-MT style h5 and ``.npy``.

Every reader keeps the axis order of the file (NIfTI and NRRD: the file's fastest axis first,
as nibabel and pynrrd return it) and reports geometry as a 4x4 affine mapping voxel indices
``(i, j, k, 1)`` to world millimetres in RAS (nibabel's convention; NRRD LPS/LAS spaces are
converted). Library exceptions on unreadable files become one-line `InputError`s.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import nrrd
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from semisam.schemas import InputError, validate_volume_id

from .validate import (
    check_geometry,
    check_image,
    check_label,
    check_label_shape,
    check_suffix,
    display_path,
    input_error,
    split_suffix,
)

log = logging.getLogger(__name__)

# What the libraries raise on truncated, corrupt or mislabelled files.
_READ_ERRORS: tuple[type[BaseException], ...] = (
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

# NRRD world spaces and the sign flips of (x, y, z) that turn them into RAS.
_NRRD_SPACE_TO_RAS: dict[str, tuple[float, float, float]] = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
}


@dataclass(frozen=True)
class LoadedVolume:
    """One validated input volume.

    Attributes:
        path: the file it was read from.
        image: ``XxYxZ`` float32, axis order as stored in the file.
        label: ``XxYxZ`` uint8 in {0, 1} from the same file (h5 ``label``), else None.
        spacing: voxel size in mm along the three array axes.
        affine: 4x4 nested list, voxel index -> world mm (RAS).
        source_format: ``nifti`` | ``nrrd`` | ``h5`` | ``npy``.
        source_dtype: the image dtype in the file (e.g. ``uint8``) before conversion to float32.
        sha256: hex sha256 of the file bytes.
    """

    path: Path
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: list[list[float]]
    source_format: str
    source_dtype: str
    sha256: str


@dataclass
class _Raw:
    """What a format reader returns before validation."""

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    affine: np.ndarray


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of the bytes of ``path`` (read in ``block``-byte pieces)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(block):
                digest.update(chunk)
    except OSError as exc:
        raise input_error(path, f"cannot read file ({exc.strerror or exc})") from None
    return digest.hexdigest()


def volume_id_for(path: Path) -> str:
    """The volume id of a file: its name without the format suffix, validated as a path segment.

    Raises:
        InputError: unsupported suffix, or a name that is not a safe id (``'..'``, control
            characters, spaces, ...).
    """
    path = Path(path)
    check_suffix(path)
    stem, _ = split_suffix(path)  # type: ignore[misc]  # check_suffix guarantees a match
    try:
        return validate_volume_id(stem)
    except InputError as exc:
        raise input_error(path, str(exc)) from None


def _read_nifti(path: Path) -> _Raw:
    if path.name.lower().endswith(".gz"):
        # decompress the whole stream first: gzip checks its CRC and length at the end, which
        # nibabel's reader never reaches, so scrambled deflate data would pass as voxels
        with gzip.open(path, "rb") as f:
            img = nib.Nifti1Image.from_bytes(f.read())
    else:
        img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)  # reads every byte now
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return _Raw(
        image=data, label=None, spacing=zooms, affine=np.asarray(img.affine, dtype=np.float64)
    )


def _nrrd_affine(header: dict, ndim: int, path: Path) -> tuple[tuple[float, ...], np.ndarray]:
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


def _read_nrrd(path: Path) -> _Raw:
    data, header = nrrd.read(str(path))  # index_order="F": array axes = file axes (x, y, z)
    spacing, affine = _nrrd_affine(header, data.ndim, path)
    return _Raw(image=data, label=None, spacing=spacing, affine=affine)


def _h5_spacing(fh: h5py.File) -> tuple[float, ...]:
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


def _read_h5(path: Path) -> _Raw:
    with h5py.File(path, "r") as fh:
        if not isinstance(fh.get("image"), h5py.Dataset):
            raise input_error(path, f"h5 file has no 'image' dataset (found: {sorted(fh.keys())})")
        image = fh["image"][()]
        label_obj = fh.get("label")
        label = label_obj[()] if isinstance(label_obj, h5py.Dataset) else None
        spacing = _h5_spacing(fh)
    affine = np.diag([*spacing, 1.0]) if len(spacing) == 3 else np.eye(4)
    return _Raw(image=image, label=label, spacing=spacing, affine=affine)


def _read_npy(path: Path) -> _Raw:
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise input_error(path, "array has unsupported dtype object") from None
        raise
    if not isinstance(data, np.ndarray):
        raise input_error(path, f"not a single .npy array (got {type(data).__name__})")
    return _Raw(image=data, label=None, spacing=(1.0, 1.0, 1.0), affine=np.eye(4))


_READERS = {"nifti": _read_nifti, "nrrd": _read_nrrd, "h5": _read_h5, "npy": _read_npy}


def _read_raw(path: Path) -> tuple[str, _Raw]:
    """Format and raw contents of ``path``; every library failure becomes an `InputError`."""
    fmt = check_suffix(path)
    if not path.is_file():
        raise input_error(path, "no such file")
    try:
        return fmt, _READERS[fmt](path)
    except InputError:
        raise
    except nrrd.NRRDError as exc:
        raise input_error(path, f"bad NRRD header or data ({exc})") from None
    except _READ_ERRORS as exc:
        raise input_error(
            path, f"cannot read {fmt} file, truncated or corrupt? ({type(exc).__name__}: {exc})"
        ) from None


def read_volume(path: Path, *, binarize: bool = False) -> LoadedVolume:
    """Read and validate one image file (and the ``label`` an h5 file may carry).

    Args:
        path: a ``.nii``, ``.nii.gz``, ``.nrrd``, ``.h5``/``.hdf5`` (datasets ``image`` and
            optional ``label``) or ``.npy`` file.
        binarize: map an embedded label's values ``> 0`` to 1 instead of refusing non-binary labels.

    Returns:
        The `LoadedVolume`: ``XxYxZ`` float32 image, optional uint8 label, spacing (mm), affine.

    Raises:
        InputError: one line naming the file and the problem (see `validate`).
    """
    path = Path(path)
    fmt, raw = _read_raw(path)
    source_dtype = str(raw.image.dtype)
    image = check_image(raw.image, path)
    label = None
    if raw.label is not None:
        label = check_label(raw.label, path, binarize=binarize)
        check_label_shape(label.shape, image.shape, path)
    spacing, affine = check_geometry(raw.spacing, raw.affine, path)
    return LoadedVolume(
        path=path,
        image=image,
        label=label,
        spacing=spacing,
        affine=affine,
        source_format=fmt,
        source_dtype=source_dtype,
        sha256=file_sha256(path),
    )


def read_label(
    path: Path, *, binarize: bool = False
) -> tuple[np.ndarray, tuple[float, float, float], list[list[float]]]:
    """Read and validate a label file given separately from its image.

    For an h5 file the ``label`` dataset is read (``image`` if there is no ``label``).

    Returns:
        ``(label, spacing, affine)``: ``XxYxZ`` uint8 in {0, 1}, voxel size in mm, 4x4 affine.

    Raises:
        InputError: unreadable file, or a label that is not integer, >= 0 and binary (unless
            ``binarize``).
    """
    path = Path(path)
    if check_suffix(path) == "h5":
        raw = _read_raw_h5_label(path)
    else:
        raw = _read_raw(path)[1]
    label = check_label(raw.image, path, binarize=binarize)
    spacing, affine = check_geometry(raw.spacing, raw.affine, path)
    return label, spacing, affine


def _read_raw_h5_label(path: Path) -> _Raw:
    """An h5 label file: its ``label`` dataset (or ``image`` if it has none) as the raw image."""
    if not path.is_file():
        raise input_error(path, "no such file")
    try:
        with h5py.File(path, "r") as fh:
            name = "label" if isinstance(fh.get("label"), h5py.Dataset) else "image"
            if not isinstance(fh.get(name), h5py.Dataset):
                raise input_error(
                    path, f"h5 label file has no 'label' dataset (found: {sorted(fh.keys())})"
                )
            data = fh[name][()]
            spacing = _h5_spacing(fh)
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise input_error(
            path, f"cannot read h5 file, truncated or corrupt? ({type(exc).__name__}: {exc})"
        ) from None
    affine = np.diag([*spacing, 1.0]) if len(spacing) == 3 else np.eye(4)
    return _Raw(image=data, label=None, spacing=spacing, affine=affine)
