"""NIfTI-1/2 files: the header checked against the bytes the file holds, and the geometry rules
(sform, else qform, else pixdim) that give spacing and affine from one source."""

from __future__ import annotations

import gzip
import logging
import math
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError

from semisam.schemas import InputError

from .validate import display_path, input_error
from .volume import RawVolume

__all__ = ["nifti_geometry", "read_nifti"]

log = logging.getLogger(__name__)

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


def read_nifti(path: Path) -> RawVolume:
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
    return RawVolume(image=data, label=None, spacing=spacing, affine=affine, has_geometry=True)


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



def output_image(data: np.ndarray, affine: np.ndarray, descrip: str, *, label: bool,
                 slope: float | None = None) -> nib.Nifti1Image:
    """A NIfTI-1 image the project writes (predict, export): ``data`` (``XxYxZ``, its own
    dtype) with ``affine`` (voxel index -> world mm, RAS) as both qform and sform (code 1,
    scanner; a sheared affine is exact in the sform) and units mm.

    Args:
        label: a label map (intent ``label``); else a map in [0, 1] (cal_min/max 0..1).
        slope: for a map stored as integers, the scale that gives [0, 1] (``scl_slope``).
        descrip: the header's description (cut to 80 bytes).
    """
    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_data_dtype(data.dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    header.set_xyzt_units(xyz="mm")
    if label:
        header.set_intent("label")
    else:
        if slope is not None:
            header.set_slope_inter(slope, 0.0)
        header["cal_min"], header["cal_max"] = 0.0, 1.0
    header["descrip"] = descrip.encode()[:80]
    return image
