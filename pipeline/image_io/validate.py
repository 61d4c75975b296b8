"""Checks on input volumes and labels. Each failure is an `InputError` with one line naming the
file and the problem, e.g. ``scans/a.nii.gz: image has 12 NaN voxels``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from semisam.schemas import MAX_CLASS_VALUE, InputError

log = logging.getLogger(__name__)

#: Supported file suffixes (lower case, longest first) and the format each one means.
SUFFIX_FORMATS: tuple[tuple[str, str], ...] = (
    (".nii.gz", "nifti"),
    (".nii", "nifti"),
    (".nrrd", "nrrd"),
    (".hdf5", "h5"),
    (".h5", "h5"),
    (".npy", "npy"),
)

_NUMERIC_KINDS = ("f", "i", "u")  # dtype.kind of images we accept


def display_path(path: Path | str) -> str:
    """``str(path)``, with control and other non-printable characters escaped (one line, safe)."""
    text = str(path)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def input_error(path: Path | str, problem: str) -> InputError:
    """An `InputError` reading ``<path>: <problem>`` on one line."""
    one_line = " ".join(str(problem).split())
    return InputError(f"{display_path(path)}: {one_line}")


def split_suffix(path: Path) -> tuple[str, str] | None:
    """``(stem, format)`` of a supported file name, or None if its suffix is not supported."""
    lower = path.name.lower()
    for suffix, fmt in SUFFIX_FORMATS:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)], fmt
    return None


def check_suffix(path: Path) -> str:
    """The format (nifti | nrrd | h5 | npy) of ``path``; `InputError` if unsupported."""
    split = split_suffix(path)
    if split is None:
        allowed = ", ".join(s for s, _ in SUFFIX_FORMATS)
        raise input_error(path, f"unsupported file type (supported: {allowed})")
    return split[1]


def check_file(path: Path) -> None:
    """Raise `InputError` unless ``path`` is a regular file (or a link to one), saying what it is:
    a directory named like a volume, a broken symbolic link, a missing file, a pipe or device."""
    path = Path(path)
    if path.is_file():
        return
    if path.is_symlink() and not path.exists():
        try:
            target = str(path.readlink())
        except OSError:
            target = "?"
        raise input_error(path, f"broken symbolic link (to {display_path(target)}: no such file)")
    if path.is_dir():
        raise input_error(path, "is a directory, not a volume file (only files are ingested)")
    if path.exists():
        raise input_error(path, "not a regular file (a pipe, socket or device?)")
    raise input_error(path, "no such file")


def check_dtype(array: np.ndarray, path: Path, what: str, *, allow_bool: bool = False) -> None:
    """Raise `InputError` unless ``array`` holds int, uint or float values (bool if allowed)."""
    kind = array.dtype.kind
    if kind in _NUMERIC_KINDS or (allow_bool and kind == "b"):
        return
    raise input_error(
        path, f"{what} has unsupported dtype {array.dtype} (need integer or floating point values)"
    )


def as_3d(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Return ``array`` as ``XxYxZ``: trailing singleton axes beyond the third are dropped.

    Raises:
        InputError: fewer than 3 axes, more than one volume (a 4th axis longer than 1), or an
            axis of length 0.
    """
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim < 3:
        raise input_error(
            path, f"{what} is {array.ndim}D with shape {array.shape}; need a 3D volume"
        )
    if array.ndim > 3:
        raise input_error(
            path,
            f"{what} is {array.ndim}D with shape {array.shape}; need one 3D volume "
            f"(a 4D file may hold only one volume)",
        )
    if 0 in array.shape:
        raise input_error(path, f"{what} has a zero-length axis, shape {array.shape}")
    return array


def check_image(array: np.ndarray, path: Path) -> np.ndarray:
    """Validate an image and return it as ``XxYxZ`` float32.

    Raises:
        InputError: unsupported dtype, not 3D, zero-length axis, NaN or Inf voxels, values beyond
            float32, or a constant volume.
    """
    check_dtype(array, path, "image")
    array = as_3d(array, path, "image")
    if array.dtype.kind == "f":
        n_nan = int(np.count_nonzero(np.isnan(array)))
        if n_nan:
            raise input_error(path, f"image has {n_nan} NaN voxels (of {array.size})")
        n_inf = int(np.count_nonzero(np.isinf(array)))
        if n_inf:
            raise input_error(path, f"image has {n_inf} Inf voxels (of {array.size})")
    with np.errstate(over="ignore", invalid="ignore"):
        image = array.astype(np.float32, copy=False)
    if array.dtype != np.float32 and not np.isfinite(image).all():
        raise input_error(path, f"image values exceed the float32 range (dtype {array.dtype})")
    low, high = float(image.min()), float(image.max())
    if low == high:
        raise input_error(path, f"image is constant (every voxel = {low:g}): nothing to segment")
    return image


def check_label(array: np.ndarray, path: Path, *, binarize: bool = False,
                keep_classes: bool = False) -> np.ndarray:
    """Validate a label volume and return it as ``XxYxZ`` uint8: {0, 1}, or class values.

    Labels must be integers >= 0 (floating point values are accepted when integral). Values other
    than {0, 1} are an error unless ``binarize``, which maps ``label > 0`` to 1, or
    ``keep_classes`` (a multi-class ingest), which keeps them as class values up to 255.

    Raises:
        InputError: unsupported dtype, not 3D, non-finite, fractional or negative values,
            non-binary values with neither option, or values above 255.
    """
    check_dtype(array, path, "label", allow_bool=True)
    array = as_3d(array, path, "label")
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        n_bad = int(np.count_nonzero(~np.isfinite(array)))
        if n_bad:
            raise input_error(path, f"label has {n_bad} NaN/Inf voxels")
        n_frac = int(np.count_nonzero(array != np.round(array)))
        if n_frac:
            raise input_error(
                path, f"label has {n_frac} non-integer voxels; labels must be integers"
            )
    values = np.unique(array)
    if values[0] < 0:
        raise input_error(
            path, f"label has negative values (min {values[0]:g}); labels must be >= 0"
        )
    if values[-1] <= 1:
        return array.astype(np.uint8)
    shown = ", ".join(f"{v:g}" for v in values[:10]) + (", ..." if values.size > 10 else "")
    if keep_classes and not binarize:
        if values[-1] > MAX_CLASS_VALUE:
            raise input_error(path, f"label has values {{{shown}}}; class values must be "
                              f"0..{MAX_CLASS_VALUE}")
        return array.astype(np.uint8)
    if not binarize:
        raise input_error(
            path,
            f"label has values {{{shown}}}; a binary label {{0, 1}} is required "
            "(use --binarize to map label > 0 to 1, or --classes to keep the classes)",
        )
    log.debug("%s: binarized label values %s to {0, 1}", display_path(path), values.tolist())
    return (array > 0).astype(np.uint8)


def check_label_shape(
    label_shape: tuple[int, ...], image_shape: tuple[int, ...], path: Path
) -> None:
    """Raise `InputError` (naming the label file ``path``) if the shapes differ."""
    if tuple(label_shape) != tuple(image_shape):
        raise input_error(
            path, f"label shape {tuple(label_shape)} differs from image shape {tuple(image_shape)}"
        )


def check_geometry(
    spacing: tuple[float, ...], affine: np.ndarray, path: Path
) -> tuple[tuple[float, float, float], list[list[float]]]:
    """Validate voxel spacing (3 finite values > 0, mm) and a finite 4x4 affine.

    Returns:
        ``(spacing, affine)`` as a float tuple and a nested 4x4 list.
    """
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise input_error(path, f"voxel spacing must be 3 finite values > 0 mm, got {values}")
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise input_error(path, f"affine must be a finite 4x4 matrix, got {matrix.tolist()}")
    return (values[0], values[1], values[2]), matrix.tolist()


_AXES = "ijk"


def align_label(
    label: np.ndarray,
    label_affine: list[list[float]] | np.ndarray,
    image_shape: tuple[int, ...],
    image_affine: list[list[float]] | np.ndarray,
    path: Path,
    tol: float = 1e-2,
) -> np.ndarray:
    """The label on the image's voxel grid, judged by the world geometry of both files.

    ``inv(label_affine) @ image_affine`` maps image voxels to label voxels. When it is the
    identity the label is returned as is. When it only reorders and/or reverses axes (the same
    world grid stored in another axis order or direction, e.g. an export that mirrors the
    voxel order and its affine), the label is transposed/flipped onto the image grid and a
    warning says so. Anything else (another spacing, a shift, a rotation, or a mirrored affine
    over other voxels) is refused: training on it would teach the wrong anatomy.

    Args:
        tol: allowed deviation from an exact axis mapping, in voxels.

    Raises:
        InputError: the label is not on the image's world grid (naming ``path``).
    """
    lab_aff = np.asarray(label_affine, dtype=np.float64)
    img_aff = np.asarray(image_affine, dtype=np.float64)
    try:
        to_label = np.linalg.inv(lab_aff) @ img_aff
    except np.linalg.LinAlgError:
        raise input_error(path, "label affine is singular: cannot place the label") from None
    offset = to_label[:3, 3]
    source_axis, sign = _axis_mapping(to_label[:3, :3], tol)
    signed_perm = bool(source_axis)
    if signed_perm:  # the same axes up to order/direction: a shape mismatch says just that
        check_label_shape(tuple(label.shape[a] for a in source_axis), image_shape, path)
    fits = signed_perm and all(
        label.shape[source_axis[a]] == image_shape[a]
        and abs(offset[source_axis[a]] - (0 if sign[a] > 0 else image_shape[a] - 1)) <= tol
        for a in range(3)
    )
    if not fits:
        shown = np.round(to_label[:3], 3).tolist()
        raise input_error(
            path,
            f"label is not on its image's world grid (label shape {tuple(label.shape)}, image "
            f"shape {tuple(image_shape)}; image voxel -> label voxel {shown}): resample the "
            "label onto the image first",
        )
    if source_axis == [0, 1, 2] and sign == [1, 1, 1]:
        return label
    return _reorient(label, source_axis, sign, path)


def _axis_mapping(linear: np.ndarray, tol: float) -> tuple[list[int], list[int]]:
    """``(source axis, sign)`` per image axis when the 3x3 image-voxel -> label-voxel matrix
    ``linear`` is a signed permutation (within ``tol`` voxels), else ``([], [])``."""
    perm = np.round(linear)
    signed_perm = (
        np.allclose(linear, perm, atol=tol)
        and (np.abs(perm).sum(axis=0) == 1).all()
        and (np.abs(perm).sum(axis=1) == 1).all()
    )
    if not signed_perm:
        return [], []
    source_axis = [int(np.argmax(np.abs(perm[:, a]))) for a in range(3)]
    return source_axis, [int(perm[source_axis[a], a]) for a in range(3)]


def _reorient(label: np.ndarray, source_axis: list[int], sign: list[int], path: Path
              ) -> np.ndarray:
    """``label`` transposed to ``source_axis`` and reversed where ``sign`` is -1, with a warning
    naming the change (the same world grid in another axis order/direction)."""
    aligned = np.transpose(label, source_axis)
    flips = tuple(a for a in range(3) if sign[a] < 0)
    if flips:
        aligned = np.flip(aligned, axis=flips)
    changes = []
    if source_axis != [0, 1, 2]:
        changes.append("axes (" + ", ".join(_AXES[a] for a in source_axis) + ") -> (i, j, k)")
    if flips:
        changes.append("reversed along " + ", ".join(_AXES[a] for a in flips))
    log.warning(
        "%s: label reoriented onto its image's voxel grid (%s): same world grid, other axis "
        "order/direction",
        display_path(path),
        "; ".join(changes),
    )
    return np.ascontiguousarray(aligned)
