"""The format dispatch of image input: one entry point for a volume, a label, a volume id and
the sources a command line names (`collect_sources`), whatever the source (NIfTI
``.nii``/``.nii.gz``, NRRD, UA-MT style h5, ``.npy``, a folder of DICOM slices), shared by
ingest and predict.

Every reader keeps the axis order of the file (NIfTI and NRRD: the file's fastest axis first,
as nibabel and pynrrd return it) and reports geometry as a 4x4 affine mapping voxel indices
``(i, j, k, 1)`` to world millimetres in RAS (nibabel's convention; NRRD LPS/LAS spaces are
converted). Library exceptions on unreadable files become one-line `InputError`s. The format
rules live in `nifti`, `nrrd_format`, `h5_npy` and `dicom`; the checks in `validate`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

import nrrd
import numpy as np

from semisam.schemas import InputError, validate_volume_id
from semisam.store import update_from_file

from .dicom import dicom_volume_id, is_dicom_dir, read_dicom_series, series_sha256
from .h5_npy import read_h5, read_h5_label, read_npy
from .nifti import read_nifti
from .nrrd_format import nrrd_data_file, read_nrrd
from .validate import (
    check_file,
    check_geometry,
    check_image,
    check_label,
    check_label_shape,
    check_suffix,
    display_path,
    input_error,
    split_suffix,
)
from .volume import READ_ERRORS, LoadedLabel, LoadedVolume, RawVolume

__all__ = [
    "collect_sources",
    "read_label",
    "read_label_file",
    "read_volume",
    "source_sha256",
    "volume_id_for",
]

log = logging.getLogger(__name__)


def collect_sources(sources: Iterable[Path | str]) -> list[Path]:
    """Expand directories (every non-hidden entry directly inside named like a supported file,
    or a sub-folder of DICOM slices, sorted by name; entries that are not files fail later, one
    line each). A folder of DICOM slices named as a source is one volume.

    Files named explicitly are kept whatever their suffix (an unsupported one fails later, on its
    own); duplicates (same resolved path) are dropped.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    for source in sources:
        source = Path(source)
        if source.is_dir() and is_dicom_dir(source):
            found = [source]  # a folder of DICOM slices is one volume (one series)
        elif source.is_dir():
            # anything named like a volume: a directory or a broken link named so fails on its
            # own (one line), instead of vanishing from the ingest unnoticed; sub-folders of
            # DICOM slices are volumes too
            found = sorted(
                p
                for p in source.iterdir()
                if not p.name.startswith(".")
                and (split_suffix(p) is not None or (p.is_dir() and is_dicom_dir(p)))
            )
            if not found:
                log.warning("%s: directory holds no supported volume files", display_path(source))
        else:
            found = [source]
        for path in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files


def source_sha256(path: Path) -> str:
    """Hex sha256 of an image source: the bytes of a file; of a detached NRRD, the header's bytes
    then the data file's name and bytes; of a folder of DICOM slices, the series' hash
    (`dicom.series_sha256`: its slice files' names and bytes).

    Raises:
        InputError: a file cannot be read (one line naming it).
    """
    path = Path(path)
    if path.is_dir():
        return series_sha256(path)
    digest = hashlib.sha256()
    data = nrrd_data_file(path) if path.name.lower().endswith(".nrrd") else None
    for part in (path, data) if data is not None else (path,):
        if part is data:  # a detached NRRD: its data file's name and bytes count too
            digest.update(b"\0data file\0" + part.name.encode())
        try:
            update_from_file(digest, part)
        except OSError as exc:
            raise input_error(part, f"cannot read file ({exc.strerror or exc})") from None
    return digest.hexdigest()


def volume_id_for(path: Path) -> str:
    """The volume id of a file: its name without the format suffix, validated as a path segment.

    Raises:
        InputError: unsupported suffix, or a name that is not a safe id (``'..'``, control
            characters, spaces, ...).
    """
    path = Path(path)
    if is_dicom_dir(path):  # a folder of DICOM slices: its name (`dicom.dicom_volume_id`)
        return dicom_volume_id(path)
    check_suffix(path)
    stem, _ = split_suffix(path)  # type: ignore[misc]  # check_suffix guarantees a match
    try:
        return validate_volume_id(stem)
    except InputError as exc:
        raise input_error(path, str(exc)) from None


_READERS = {"nifti": read_nifti, "nrrd": read_nrrd, "h5": read_h5, "npy": read_npy}


def _read_raw(path: Path) -> tuple[str, RawVolume]:
    """Format and raw contents of ``path``; every library failure becomes an `InputError`."""
    fmt = check_suffix(path)
    check_file(path)
    try:
        return fmt, _READERS[fmt](path)
    except InputError:
        raise
    except nrrd.NRRDError as exc:
        raise input_error(path, f"bad NRRD header or data ({exc})") from None
    except READ_ERRORS as exc:
        raise input_error(
            path, f"cannot read {fmt} file, truncated or corrupt? ({type(exc).__name__}: {exc})"
        ) from None


def read_volume(path: Path, *, binarize: bool = False, keep_classes: bool = False) -> LoadedVolume:
    """Read and validate one image file (and the ``label`` an h5 file may carry).

    Args:
        path: a ``.nii``, ``.nii.gz``, ``.nrrd``, ``.h5``/``.hdf5`` (datasets ``image`` and
            optional ``label``) or ``.npy`` file.
        binarize: map an embedded label's values ``> 0`` to 1 instead of refusing non-binary labels.
        keep_classes: keep an embedded label's class values (multi-class ingest).

    Returns:
        The `LoadedVolume`: ``XxYxZ`` float32 image, optional uint8 label, spacing (mm), affine.

    Raises:
        InputError: one line naming the file and the problem (see `validate`).
    """
    path = Path(path)
    if is_dicom_dir(path):  # a folder of DICOM slices, one series (`dicom.read_dicom_series`)
        return read_dicom_series(path)
    fmt, raw = _read_raw(path)
    source_dtype = str(raw.image.dtype)
    image = check_image(raw.image, path)
    label = None
    if raw.label is not None:
        label = check_label(raw.label, path, binarize=binarize, keep_classes=keep_classes)
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
        sha256=source_sha256(path),
        has_geometry=raw.has_geometry,
    )


def read_label(
    path: Path, *, binarize: bool = False, keep_classes: bool = False
) -> tuple[np.ndarray, tuple[float, float, float], list[list[float]]]:
    """Read and validate a label file given separately from its image.

    For an h5 file the ``label`` dataset is read (``image`` if there is no ``label``).

    Returns:
        ``(label, spacing, affine)``: ``XxYxZ`` uint8 in {0, 1}, voxel size in mm, 4x4 affine.

    Raises:
        InputError: unreadable file, or a label that is not integer, >= 0 and binary (unless
            ``binarize``).
    """
    loaded = read_label_file(path, binarize=binarize, keep_classes=keep_classes)
    return loaded.label, loaded.spacing, loaded.affine


def read_label_file(path: Path, *, binarize: bool = False, keep_classes: bool = False
                    ) -> LoadedLabel:
    """`read_label`, with whether the file has a world geometry (`LoadedLabel`)."""
    path = Path(path)
    if check_suffix(path) == "h5":
        raw = read_h5_label(path)
    else:
        raw = _read_raw(path)[1]
    label = check_label(raw.image, path, binarize=binarize, keep_classes=keep_classes)
    spacing, affine = check_geometry(raw.spacing, raw.affine, path)
    return LoadedLabel(label, spacing, affine, raw.has_geometry)
