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
import math
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
class _Raw:
    """What a format reader returns before validation."""

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    affine: np.ndarray
    has_geometry: bool = False  # the file says where its voxels are (NIfTI, NRRD directions)


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of the bytes of ``path`` (read in ``block``-byte pieces); of a folder of DICOM
    slices, the series' hash (its slice files' names and bytes, pipeline/ingest/dicom.py)."""
    if Path(path).is_dir():
        from .dicom import series_sha256

        return series_sha256(Path(path))
    digest = hashlib.sha256()
    data = nrrd_data_file(Path(path)) if str(path).lower().endswith(".nrrd") else None
    for part in (Path(path), data) if data is not None else (Path(path),):
        if part is data:  # a detached NRRD: its data file's name and bytes count too
            digest.update(b"\0data file\0" + part.name.encode())
        try:
            with open(part, "rb") as fh:
                while chunk := fh.read(block):
                    digest.update(chunk)
        except OSError as exc:
            raise input_error(part, f"cannot read file ({exc.strerror or exc})") from None
    return digest.hexdigest()


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


def volume_id_for(path: Path) -> str:
    """The volume id of a file: its name without the format suffix, validated as a path segment.

    Raises:
        InputError: unsupported suffix, or a name that is not a safe id (``'..'``, control
            characters, spaces, ...).
    """
    path = Path(path)
    from .dicom import dicom_volume_id, is_dicom_dir

    if is_dicom_dir(path):  # a folder of DICOM slices: its name (pipeline/ingest/dicom.py)
        return dicom_volume_id(path)
    check_suffix(path)
    stem, _ = split_suffix(path)  # type: ignore[misc]  # check_suffix guarantees a match
    try:
        return validate_volume_id(stem)
    except InputError as exc:
        raise input_error(path, str(exc)) from None


_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADERS = {348: nib.Nifti1Header, 540: nib.Nifti2Header}  # sizeof_hdr -> header class


def _size_text(n: float) -> str:
    """``1.0 KB``, ``256.0 GB``: a byte count for messages (powers of 1000)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _nifti_header(head: bytes, path: Path, what: str) -> nib.Nifti1Header:
    """The header at the start of ``head`` (NIfTI-1 or NIfTI-2, either byte order), unfixed
    (``check=False``: nibabel's fixes, such as pixdim 0 -> 1, would hide what the file says)."""
    if not head:
        raise input_error(path, f"empty file (0 bytes{what})")
    for order in ("<", ">"):
        size = int(np.frombuffer(head[:4], f"{order}i4")[0]) if len(head) >= 4 else 0
        if size in _NIFTI_HEADERS:
            klass = _NIFTI_HEADERS[size]
            if len(head) < size:
                raise input_error(path, f"too short for a NIfTI header ({len(head)} bytes{what}, "
                                        f"a header is {size})")
            return klass(head[:size], endianness=order, check=False)
    raise input_error(path, f"cannot read nifti file, truncated or corrupt? (not a NIfTI header: "
                            f"its{what.replace(',', '')} bytes start with {head[:16]!r})")


def _check_nifti_header(header: nib.Nifti1Header, path: Path) -> tuple[int, int]:
    """Refuse headers nibabel would read with silent guesses; ``(data offset, data bytes)``.

    - pixdim[1..3] must be finite and > 0 (nibabel sets 0 to 1 mm with only a warning; spacing
      drives 95HD/ASD in mm and any resampling);
    - a scl_slope of 0 or NaN/Inf means "no scaling" (NIfTI: scaling applies only when the slope
      is nonzero; nibabel writes NaN for float images and ignores both fields then), unless
      scl_inter asks for an offset: that is ambiguous, so it is refused for 0 and NaN alike;
    - the voxel data the header claims (shape x dtype) is computed here, so it can be compared
      with the bytes the file holds before anything is allocated.
    """
    try:
        shape = tuple(int(n) for n in header.get_data_shape())
        dtype = header.get_data_dtype()
    except (HeaderDataError, ValueError, KeyError) as exc:
        raise input_error(path, f"bad NIfTI header ({exc})") from None
    pixdim = [float(v) for v in header["pixdim"][1 : 1 + min(3, len(shape))]]
    if not all(math.isfinite(v) and v > 0 for v in pixdim):
        shown = ", ".join(f"{v:g}" for v in pixdim)
        raise input_error(
            path,
            f"NIfTI header field pixdim[1:{1 + len(pixdim)}] = ({shown}): voxel spacing must be "
            "finite and > 0 mm (nibabel would assume 1 mm); fix the spacing in the header",
        )
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if (slope == 0 or not math.isfinite(slope)) and math.isfinite(inter) and inter != 0:
        raise input_error(
            path,
            f"NIfTI header field scl_slope is {slope:g} but scl_inter is {inter:g}: the intensity "
            f"scaling is ambiguous (a slope of {slope:g} means no scaling, which drops the "
            "offset); set scl_slope to 1 to apply the offset, or scl_inter to 0",
        )
    if slope != 0 and math.isfinite(slope) and not math.isfinite(inter):
        raise input_error(path, f"NIfTI header field scl_inter is {inter:g} (scl_slope {slope:g})")
    offset = max(int(header.get_data_offset()), int(header["sizeof_hdr"]) + 4)
    return offset, int(np.prod(shape, dtype=np.float64)) * dtype.itemsize


def _too_short(path: Path, header: nib.Nifti1Header, need: int, have: int, what: str) -> InputError:
    shape = tuple(int(n) for n in header.get_data_shape())
    return input_error(
        path,
        f"header claims shape {shape} {header.get_data_dtype()} = {_size_text(need)} of voxel "
        f"data, but the file holds {_size_text(max(have, 0))}{what}: truncated (still being "
        "copied?) or a wrong header",
    )


def _read_nifti(path: Path) -> _Raw:
    """Read a NIfTI-1/2 file after checking its header against the bytes it holds.

    The header is read first (unfixed) and its claimed voxel data compared with the file's size
    (``.nii``) or with the decompressed stream (``.nii.gz``, read in pieces: a header claiming
    256 GB costs what the file holds, not 256 GB). A ``.gz`` stream is read to its end, so
    gzip checks its CRC and length, which nibabel's reader never reaches (scrambled deflate
    data would otherwise pass as voxels).
    """
    with open(path, "rb") as fh:
        start = fh.read(540)
    gz_name = path.name.lower().endswith(".gz")
    if start[:2] != _GZIP_MAGIC:
        if gz_name and start:
            try:
                _nifti_header(start, path, "")
                hint = "an uncompressed NIfTI named .nii.gz: rename it to .nii"
            except InputError:
                raise input_error(path, "cannot read nifti file, truncated or corrupt? (not "
                                        f"gzip-compressed: it starts with {start[:16]!r})") from None
            raise input_error(path, f"not gzip-compressed ({hint})")
        header = _nifti_header(start, path, "")
        offset, nbytes = _check_nifti_header(header, path)
        size = path.stat().st_size
        if size < offset + nbytes:
            raise _too_short(path, header, nbytes, size - offset, "")
        img = nib.load(str(path))
    else:
        what = ", decompressed"
        with gzip.open(path, "rb") as f:
            head = f.read(540)
            header = _nifti_header(head, path, what)
            offset, nbytes = _check_nifti_header(header, path)
            buf = bytearray(head[: offset + nbytes])
            total = len(head)
            while piece := f.read(1 << 22):  # to the end: gzip checks CRC and length there
                total += len(piece)
                room = offset + nbytes - len(buf)
                if room > 0:
                    buf += piece[:room]
        if total < offset + nbytes:
            raise _too_short(path, header, nbytes, total - offset, what)
        klass = nib.Nifti2Image if int(header["sizeof_hdr"]) == 540 else nib.Nifti1Image
        img = klass.from_bytes(bytes(buf))
    data = np.asanyarray(img.dataobj)  # reads every byte now
    spacing, affine = nifti_geometry(img.header, path)
    return _Raw(image=data, label=None, spacing=spacing, affine=affine, has_geometry=True)


def nifti_geometry(
    header: nib.Nifti1Header, path: Path, tol: float = 1e-3
) -> tuple[tuple[float, ...], np.ndarray]:
    """Spacing (mm) and 4x4 affine of a NIfTI header, both from the same source.

    The NIfTI rules: the sform when ``sform_code > 0``, else the qform when ``qform_code > 0``,
    else pixdim alone. Spacing is the column norms of that affine's 3x3 part (pixdim for the
    qform, which is built from pixdim). A warning says so when both codes are set and the two
    matrices differ by more than ``tol`` mm in any entry.

    Raises:
        InputError: the chosen matrix is singular (a zero or dependent column): it places no
            voxels in the world; naming the field and its code.
    """
    sform, scode = header.get_sform(coded=True)
    qform, qcode = header.get_qform(coded=True)
    if scode:
        affine, field, code = np.asarray(sform, dtype=np.float64), "sform", int(scode)
    elif qcode:
        affine, field, code = np.asarray(qform, dtype=np.float64), "qform", int(qcode)
    else:
        affine, field, code = np.asarray(header.get_base_affine(), dtype=np.float64), "pixdim", 0
    if scode and qcode and np.abs(np.asarray(qform) - affine).max() > tol:
        log.warning(
            "%s: NIfTI sform and qform disagree (sform voxel size %s mm, qform %s mm); using "
            "the sform (sform_code %d > 0) for spacing and affine",
            display_path(path), _mm(affine), _mm(np.asarray(qform)), code,
        )
    spacing = tuple(float(n) for n in np.linalg.norm(affine[:3, :3], axis=0))
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9 * max(
        1.0, float(np.prod(spacing))
    ):
        raise input_error(
            path,
            f"NIfTI header {field} (code {code}) is singular (voxel size {_mm(affine)} mm, "
            "determinant 0): it places no voxels in the world; fix the header's "
            f"{field}{' or set sform_code to 0 to use the qform' if field == 'sform' else ''}",
        )
    return spacing, affine


def _mm(affine: np.ndarray) -> str:
    """``0.8x0.8x2``: the column norms of a 4x4 affine's 3x3 part, in mm."""
    return "x".join(f"{n:g}" for n in np.round(np.linalg.norm(affine[:3, :3], axis=0), 4))


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
    data_file = nrrd_data_file(path)
    if data_file is not None:
        log.info("%s: voxel data in the detached file %s", display_path(path),
                 display_path(data_file))
    data, header = nrrd.read(str(path))  # index_order="F": array axes = file axes (x, y, z)
    spacing, affine = _nrrd_affine(header, data.ndim, path)
    return _Raw(image=data, label=None, spacing=spacing, affine=affine,
                has_geometry=header.get("space directions") is not None)


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
    check_file(path)
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
    from .dicom import is_dicom_dir, read_dicom_series

    if is_dicom_dir(path):  # a folder of DICOM slices, one series (pipeline/ingest/dicom.py)
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
        sha256=file_sha256(path),
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
        raw = _read_raw_h5_label(path)
    else:
        raw = _read_raw(path)[1]
    label = check_label(raw.image, path, binarize=binarize, keep_classes=keep_classes)
    spacing, affine = check_geometry(raw.spacing, raw.affine, path)
    return LoadedLabel(label, spacing, affine, raw.has_geometry)


def _read_raw_h5_label(path: Path) -> _Raw:
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
            spacing = _h5_spacing(fh)
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise input_error(
            path, f"cannot read h5 file, truncated or corrupt? ({type(exc).__name__}: {exc})"
        ) from None
    affine = np.diag([*spacing, 1.0]) if len(spacing) == 3 else np.eye(4)
    return _Raw(image=data, label=None, spacing=spacing, affine=affine)
