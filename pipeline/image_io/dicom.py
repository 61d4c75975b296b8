"""DICOM series: a folder of slice files -> one volume per series (SeriesInstanceUID).

Reader: pydicom and a geometry-aware stack written here, not SimpleITK's series reader. Each
problem a PACS export can have becomes one line naming the folder, the series and the files,
where SimpleITK/GDCM sorts silently (or warns on stderr) and fails with C++ exceptions; pydicom
is a small pure-Python dependency, and the same library writes the test series.

Per series:

* slices are ordered by their position along the slice normal ``n = row x column`` of
  ImageOrientationPatient (the projection ``ImagePositionPatient . n``), never by file name or
  InstanceNumber;
* the slice spacing is the step of those positions; it must be uniform (a gap larger than 1.5
  steps is a missing slice), two slices at the same position are duplicates, and every slice
  must share the orientation, the pixel spacing and the rows x columns;
* objects without pixel data or without geometry (structured reports, presentation states,
  RT structures, ...) and files that are not DICOM are skipped with one line each.

The volume keeps DICOM's storage order with the fastest axis first, as the other readers do:
``image[i, j, k]`` = column ``i``, row ``j`` of the ``k``-th slice along ``n``. The affine maps
``(i, j, k, 1)`` to world millimetres in RAS (DICOM's patient LPS with x and y negated), the
voxel values are the modality values (RescaleSlope/RescaleIntercept applied).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semisam.schemas import InputError, validate_volume_id
from semisam.store import update_from_file

from .validate import check_geometry, check_image, display_path, input_error
from .volume import LoadedVolume

log = logging.getLogger(__name__)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ORIENTATION_TOL = 1e-4
_POSITION_TOL = 1e-3  # mm, relative to the slice step


def _pydicom():
    try:
        import pydicom
    except ImportError:  # pragma: no cover - a dependency of the project
        raise InputError("DICOM input needs pydicom (pip install pydicom)") from None
    return pydicom


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_dir(path: Path, probe: int = 8) -> bool:
    """True when ``path`` is a folder whose first files (by name) include a DICOM file."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return any(_has_preamble(p) for p in files[:probe])


@dataclass
class _Slice:
    path: Path
    ds: object
    position: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float]
    shape: tuple[int, int]


@dataclass(frozen=True)
class DicomSeries:
    """One series of a folder: its uid, description and slice files (unordered)."""

    uid: str
    description: str
    number: int | None
    files: tuple[Path, ...]


def scan_dicom_dir(path: Path) -> tuple[dict[str, list[_Slice]], list[str]]:
    """Image slices of a folder grouped by SeriesInstanceUID, and one line per skipped file."""
    pydicom = _pydicom()
    path = Path(path)
    series: dict[str, list[_Slice]] = {}
    skipped: list[str] = []
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=False)
        except Exception as exc:  # noqa: BLE001 (pydicom raises many kinds on non-DICOM files)
            skipped.append(f"{f.name}: not a DICOM file ({type(exc).__name__})")
            continue
        if "PixelData" not in ds:
            kind = getattr(ds, "Modality", None) or getattr(ds, "SOPClassUID", "?")
            skipped.append(f"{f.name}: not an image object ({kind}, no pixel data)")
            continue
        missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                               "SeriesInstanceUID") if k not in ds]
        if missing:
            skipped.append(f"{f.name}: image without geometry (no {', '.join(missing)})")
            continue
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            skipped.append(f"{f.name}: multi-frame image objects are not supported")
            continue
        series.setdefault(str(ds.SeriesInstanceUID), []).append(_Slice(
            path=f, ds=ds, position=np.asarray(ds.ImagePositionPatient, np.float64),
            orientation=np.asarray(ds.ImageOrientationPatient, np.float64),
            spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
            shape=(int(ds.Rows), int(ds.Columns))))
    for line in skipped:
        log.warning("%s: skipped %s", display_path(path), line)
    return series, skipped


def list_series(path: Path) -> list[DicomSeries]:
    """The image series of a DICOM folder, by SeriesNumber then uid."""
    series, _ = scan_dicom_dir(path)
    out = []
    for uid, slices in series.items():
        ds = slices[0].ds
        number = getattr(ds, "SeriesNumber", None)
        out.append(DicomSeries(uid=uid, description=str(getattr(ds, "SeriesDescription", "")),
                               number=int(number) if number not in (None, "") else None,
                               files=tuple(s.path for s in slices)))
    return sorted(out, key=lambda s: (s.number is None, s.number or 0, s.uid))


def _check_alike(folder: Path, where: str, slices: list[_Slice]) -> None:
    """Every slice shares the first one's orientation, rows x columns and pixel spacing."""
    first = slices[0]
    for s in slices[1:]:
        if not np.allclose(s.orientation, first.orientation, atol=_ORIENTATION_TOL):
            raise input_error(folder, f"{where}: mixed orientations ({first.path.name} "
                                      f"{first.orientation.round(4).tolist()}, {s.path.name} "
                                      f"{s.orientation.round(4).tolist()})")
        if s.shape != first.shape:
            raise input_error(folder, f"{where}: slices of different sizes ({first.path.name} "
                                      f"{first.shape}, {s.path.name} {s.shape})")
        if not np.allclose(s.spacing, first.spacing, rtol=1e-4):
            raise input_error(folder, f"{where}: slices with different pixel spacing "
                                      f"({first.path.name} {first.spacing}, {s.path.name} {s.spacing})")


def _order(folder: Path, where: str, slices: list[_Slice], normal: np.ndarray
           ) -> tuple[list[_Slice], float]:
    """The slices sorted along ``normal`` and their step in mm; duplicated, missing, unevenly
    spaced or in-plane shifted slices are refused (one line naming the files)."""
    depth = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(depth, kind="stable")
    slices, depth = [slices[i] for i in order], depth[order]
    if len(slices) < 2:
        raise input_error(folder, f"{where}: a single slice is not a 3D volume")
    steps = np.diff(depth)
    dup = np.flatnonzero(steps < _POSITION_TOL)
    if dup.size:
        i = int(dup[0])
        raise input_error(folder, f"{where}: duplicated slice at {depth[i]:.3f} mm along the "
                                  f"normal ({slices[i].path.name}, {slices[i + 1].path.name})")
    step = float(np.median(steps))
    gaps = np.flatnonzero(steps > 1.5 * step)
    if gaps.size:
        i = int(gaps[0])
        missing = int(round(steps[i] / step)) - 1
        raise input_error(folder, f"{where}: {missing} slice(s) missing between "
                                  f"{slices[i].path.name} and {slices[i + 1].path.name} "
                                  f"({depth[i]:.3f} -> {depth[i + 1]:.3f} mm, step {step:.3f} mm)")
    if np.abs(steps - step).max() > max(_POSITION_TOL, 0.01 * step):
        raise input_error(folder, f"{where}: uneven slice spacing ({steps.min():.3f} to "
                                  f"{steps.max():.3f} mm)")
    for s in slices:
        offset = s.position - slices[0].position
        if np.linalg.norm(offset - (offset @ normal) * normal) > max(1e-2, 0.01 * step):
            raise input_error(folder, f"{where}: {s.path.name} is shifted within its plane "
                                      "(not one stack)")
    return slices, step


def _stack(folder: Path, uid: str, slices: list[_Slice]) -> tuple[np.ndarray, np.ndarray, str]:
    """``(image XxYxZ float32, RAS affine, stored pixel dtype)`` of one series; one-line `InputError` on problems."""
    where = f"series {uid}"
    _check_alike(folder, where, slices)
    first = slices[0]
    row, col = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, col)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise input_error(folder, f"{where}: ImageOrientationPatient {first.orientation.tolist()} "
                                  "is not two orthogonal unit vectors")
    slices, step = _order(folder, where, slices, normal)
    planes, dtype = [], "?"
    for s in slices:
        raw = _pixels(folder, s)
        dtype = str(raw.dtype)
        pixels = raw.astype(np.float64)
        slope = float(getattr(s.ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(s.ds, "RescaleIntercept", 0) or 0)
        planes.append((pixels * slope + intercept).T)  # (columns, rows): fastest axis first
    image = np.stack(planes, axis=-1).astype(np.float32)
    row_spacing, col_spacing = first.spacing  # PixelSpacing: between rows, between columns
    lps = np.eye(4)
    lps[:3, 0] = row * col_spacing  # i: along a row (next column)
    lps[:3, 1] = col * row_spacing  # j: down a column (next row)
    lps[:3, 2] = normal * step
    lps[:3, 3] = slices[0].position
    return image, _LPS_TO_RAS @ lps, dtype


def _pixels(folder: Path, s: _Slice) -> np.ndarray:
    """``s.ds.pixel_array``; a compressed transfer syntax without an installed decoder, or pixel
    data that cannot be decoded, is one `InputError` naming the file and the syntax (and, when a
    decoder is missing, the packages that provide one)."""
    try:
        return s.ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom's decoders raise many types
        syntax = getattr(getattr(s.ds, "file_meta", None), "TransferSyntaxUID", None)
        name = f"{syntax.name} ({syntax})" if syntax is not None else "unknown transfer syntax"
        needs = _missing_decoder(syntax)
        if needs is not None:
            raise input_error(folder, f"{s.path.name}: pixel data in {name}, which no installed "
                                      f"package decodes ({needs})") from None
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise input_error(folder, f"{s.path.name}: pixel data in {name} cannot be decoded "
                                  f"({first})") from None


def _missing_decoder(syntax) -> str | None:
    """What to install for ``syntax`` when pydicom has no working decoder for it, else None."""
    if syntax is None:
        return None
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(syntax)
    except NotImplementedError:
        return "pydicom has no decoder for it"
    if decoder.is_available:
        return None
    options = [d.split(" - requires ", 1)[-1] for d in decoder.missing_dependencies]
    return "install one of: " + "; ".join(options) if options else "no decoder plugin"


@dataclass(frozen=True)
class DicomVolume:
    volume_id: str
    series: DicomSeries
    image: np.ndarray
    spacing: tuple[float, float, float]
    affine: list[list[float]]
    sha256: str
    source_dtype: str


def _series_sha(files) -> str:
    """Hex sha256 over the slice files' names and bytes, in name order."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        digest.update(f.name.encode())
        update_from_file(digest, f)
    return digest.hexdigest()


def series_sha256(folder: Path) -> str:
    """The hash `read_dicom_series` records for a one-series folder (its slice files' names
    and bytes), from the headers only; a multi-series folder hashes all its series' files."""
    files = [f for s in list_series(folder) for f in s.files]
    return _series_sha(files)


def _series_ids(folder: Path, infos: list[DicomSeries]) -> dict[str, str]:
    """SeriesInstanceUID -> volume id: the folder's name for a single series, else
    ``<folder>_s<SeriesNumber>``; series that share a SeriesNumber (or have none) get the last
    8 digits of their uid instead of or after it, so every id is unique and does not depend on
    the order the files are listed in (a warning names the shared number)."""
    base = folder.resolve().name
    if len(infos) <= 1:
        return {s.uid: validate_volume_id(base) for s in infos}
    counts = Counter(s.number for s in infos)
    ids = {}
    for s in infos:
        tail = s.uid.replace(".", "")[-8:]
        if s.number is None:
            ids[s.uid] = validate_volume_id(f"{base}_{tail}")
        elif counts[s.number] > 1:
            ids[s.uid] = validate_volume_id(f"{base}_s{s.number}_{tail}")
        else:
            ids[s.uid] = validate_volume_id(f"{base}_s{s.number}")
    for number in sorted(n for n, c in counts.items() if n is not None and c > 1):
        log.warning("%s: %d series share SeriesNumber %d; their ids end in their uid: %s",
                    display_path(folder), counts[number], number,
                    ", ".join(ids[s.uid] for s in infos if s.number == number))
    return ids


def read_dicom_dir(path: Path, only: str | None = None) -> list[DicomVolume]:
    """Every image series of a folder as a volume (id: the folder's name, ``_s<SeriesNumber>``
    appended when the folder holds several series); with ``only`` (a SeriesInstanceUID), just
    that series, with the id it has among the others.

    Raises:
        InputError: no image series (or no series ``only``), or a series with missing or
            duplicated slices, mixed orientations or sizes (one line naming the series and the
            files).
    """
    folder = Path(path)
    scanned, skipped = scan_dicom_dir(folder)
    if not scanned:
        detail = f" ({skipped[0]}{', ...' if len(skipped) > 1 else ''})" if skipped else ""
        raise input_error(folder, f"no DICOM image series in the folder{detail}")
    infos = list_series(folder)
    if len(infos) > 1 and only is None:
        log.info("%s: %d series (%s): one volume each", display_path(folder), len(infos),
                 "; ".join(f"{s.number} {s.description!r} {len(s.files)} slices" for s in infos))
    ids = _series_ids(folder, infos)
    if only is not None:
        infos = [info for info in infos if info.uid == only]
        if not infos:
            raise input_error(folder, f"no DICOM image series {only} in the folder")
    out = []
    for info in infos:
        image, affine, dtype = _stack(folder, info.uid, scanned[info.uid])
        image = check_image(image, folder)
        spacing = tuple(float(n) for n in np.linalg.norm(affine[:3, :3], axis=0))
        spacing, affine_list = check_geometry(spacing, affine, folder)
        out.append(DicomVolume(volume_id=ids[info.uid], series=info,
                               image=image, spacing=spacing, affine=affine_list,
                               sha256=_series_sha(info.files), source_dtype=dtype))
    return out


def dicom_volume_id(path: Path) -> str:
    """The volume id of a single-series DICOM folder: the folder's name."""
    return validate_volume_id(Path(path).resolve().name)


def series_volume_ids(path: Path) -> list[tuple[str, str | None]]:
    """``(volume id, SeriesInstanceUID)`` of each image series of a folder, from the headers;
    one ``(folder name, None)`` when it holds a single series (or none: reading says why)."""
    infos = list_series(Path(path))
    if len(infos) <= 1:
        return [(dicom_volume_id(path), None)]
    ids = _series_ids(Path(path), infos)
    return [(ids[info.uid], info.uid) for info in infos]


def read_dicom_series(path: Path, uid: str | None = None) -> LoadedVolume:
    """A single-series DICOM folder, or series ``uid`` of a folder, as a `LoadedVolume`
    (what `readers.read_volume` returns).

    Raises:
        InputError: see `read_dicom_dir`; also when no ``uid`` is given and the folder holds
            several series (it names them: read them with `read_dicom_dir`, or give each
            series its own folder).
    """
    volumes = read_dicom_dir(path, only=uid)
    if len(volumes) > 1:
        names = ", ".join(f"{v.series.uid} ({v.series.description or 'no description'}, "
                          f"{len(v.series.files)} slices)" for v in volumes)
        raise input_error(path, f"holds {len(volumes)} DICOM series: {names}; give each series "
                                "its own folder")
    v = volumes[0]
    return LoadedVolume(path=Path(path), image=v.image, label=None, spacing=v.spacing,
                        affine=v.affine, source_format="dicom", source_dtype=v.source_dtype,
                        sha256=v.sha256)
