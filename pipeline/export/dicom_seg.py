"""DICOM-SEG (highdicom) of label maps on volumes that came from a DICOM series.

A label map ``XxYxZ`` uint8 (class values, 0 = background) of a volume read from a DICOM folder
(`semisam.pipeline.image_io.dicom`: ``image[i, j, k]`` = column ``i``, row ``j`` of the ``k``-th
slice along the slice normal) becomes one Segmentation object:

* it references the source series (its Study, Series and SOP Instance UIDs, frame by frame)
  and takes the patient, study and frame geometry from the source slices;
* one segment per class present in the store's (or student's) class map, numbered 1..N in
  class-value order, labelled with the class name (coded as ``99SEMISAM`` concepts, category
  SNOMED CT "Anatomical Structure"), algorithm type AUTOMATIC, algorithm "semisam";
* BINARY segmentation, one frame per (slice, segment) with any foreground (empty frames are
  left out, as the standard allows; readers fill them with zeros).

Frame ``k`` of the source (slices ordered by their position along the normal, as at ingest) is
``label[:, :, k].T`` (rows x columns). The source folder is checked first: the series must be
the one ingested (same sha256 of its files) and have the label's grid.

highdicom is an optional dependency (``pip install 'semisam[dicom-seg]'``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from semisam.schemas import ConfigError, InputError, StrictModel, VolumeMeta

if TYPE_CHECKING:
    import numpy as np
    import zarr

    from ..predict import PredictReport
    from .records import ExportedVolume

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'semisam[dicom-seg]' (or pip install highdicom)"
SERIES_NUMBER = 9900  # DICOM-SEG series number (plus the round for exports)


class DicomSegOptions(StrictModel):
    """Settings of a DICOM-SEG export."""

    source: Path | None = Field(
        None, description="folder of the source series, or its parent, when it moved")

    def check_available(self) -> None:
        require_highdicom()


def require_highdicom() -> Any:
    """The highdicom module, or a one-line `ConfigError` saying how to install it."""
    try:
        import highdicom
    except ImportError:
        raise ConfigError(f"DICOM-SEG needs highdicom, which is not installed: {INSTALL_HINT}"
                          ) from None
    return highdicom


def ordered_slices(folder: Path, uid: str | None = None) -> list[Any]:
    """The pydicom datasets of a one-series folder (or of series ``uid`` of a folder), in the
    stored slice order (by position along the slice normal ``row x column``, as ingest)."""
    import numpy as np

    from ..image_io.dicom import scan_dicom_dir
    from ..image_io.validate import input_error

    series, _ = scan_dicom_dir(folder)
    if uid is not None:
        series = {k: v for k, v in series.items() if k == uid}
    if len(series) != 1:
        what = f"series {uid}" if uid else "one DICOM image series"
        raise input_error(folder, f"expected {what}, found {len(series)} series")
    (slices,) = series.values()
    normal = np.cross(slices[0].orientation[:3], slices[0].orientation[3:])
    depth = [float(s.position @ normal) for s in slices]
    return [slices[i].ds for i in np.argsort(depth, kind="stable")]


# Patient and study attributes of type 2 (present, may be empty) that a SEG copies from its
# source; anonymised exports often drop them, and then they are written empty.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate",
          "StudyTime", "AccessionNumber", "ReferringPhysicianName")


def fill_type2(source: list[Any]) -> list[str]:
    """Add the absent `_TYPE2` attributes to the (in-memory) source datasets, empty; returns
    their names."""
    missing = [name for name in _TYPE2 if name not in source[0]]
    for ds in source:
        for name in missing:
            setattr(ds, name, "")
    if missing:
        log.info("source series without %s: written empty in the SEG", ", ".join(missing))
    return missing


def segment_descriptions(names: dict[int, str]) -> list[Any]:
    """One `SegmentDescription` per class, numbered 1..N in class-value order."""
    hd = require_highdicom()
    from importlib.metadata import version

    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="semisam", version=version("semisam"),
        family=codes.cid7162.ArtificialIntelligence)
    out = []
    for number, (value, name) in enumerate(sorted(names.items()), start=1):
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=hd.sr.CodedConcept(
                value=f"class{value}", scheme_designator="99SEMISAM", meaning=name[:64]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    return out


def segment_frames(label: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """``ZxRowsxColumns`` uint8 segment numbers (1..N by class value) of an ``XxYxZ`` label.

    Raises:
        InputError: the label holds a value that is not a class of ``names``.
    """
    import numpy as np

    lut = np.zeros(256, dtype=np.uint8)
    for number, value in enumerate(sorted(names), start=1):
        lut[value] = number
    unknown = sorted(set(np.unique(label).tolist()) - {0, *names})
    if unknown:
        raise InputError(f"label value {unknown[0]} is not a class ({sorted(names)})")
    return np.ascontiguousarray(lut[label].transpose(2, 1, 0))


def build_segmentation(label: np.ndarray, source: list[Any], names: dict[int, str], *,
                       description: str, series_number: int = SERIES_NUMBER) -> Any:
    """The highdicom `Segmentation` of ``label`` (``XxYxZ``) on the ordered ``source``
    slices (``ordered_slices``).

    Raises:
        InputError: the label's grid is not the series' (columns x rows x slices).
    """
    hd = require_highdicom()
    grid = (int(source[0].Columns), int(source[0].Rows), len(source))
    if tuple(label.shape) != grid:
        raise InputError(f"label grid {tuple(label.shape)} is not the series' columns x rows x "
                         f"slices {grid}")
    fill_type2(source)
    logging.getLogger("highdicom").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    try:
        return _segmentation(hd, label, source, names, description, series_number)
    except (AttributeError, ValueError, TypeError) as exc:  # highdicom on odd source headers
        raise InputError(f"highdicom cannot build the SEG on this series ({exc})") from None


def _segmentation(hd: Any, label: np.ndarray, source: list[Any], names: dict[int, str],
                  description: str, series_number: int) -> Any:
    from importlib.metadata import version

    return hd.seg.Segmentation(
        source_images=source, pixel_array=segment_frames(label, names),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(names),
        series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="semisam",
        manufacturer_model_name="semisam student + SAM pseudo-labels",
        software_versions=version("semisam"), device_serial_number="0",
        series_description=description[:64], content_label="SEMISAM",
        content_description=description[:64])


def write_dicom_seg(label: np.ndarray, folder: Path, path: Path, names: dict[int, str], *,
                    description: str, series_number: int = SERIES_NUMBER,
                    uid: str | None = None) -> Path:
    """``label`` on the series of ``folder`` (series ``uid`` of it) as DICOM-SEG ``path``."""
    seg = build_segmentation(label, ordered_slices(folder, uid), names, description=description,
                             series_number=series_number)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def check_dicom_volumes(root: zarr.Group, ids: list[str]) -> None:
    """`InputError` for the first volume not ingested from DICOM (before anything is written)."""
    from semisam.store import read_meta

    for vid in ids:
        meta = read_meta(root, vid)
        if meta.source_format != "dicom":
            raise InputError(
                f"volume '{vid}': ingested from {meta.source_format} ({meta.source_name}), "
                "not from a DICOM series: DICOM-SEG must reference its source series; export "
                "it with --format nifti or ome-zarr")


def find_source(meta: VolumeMeta, where: Path | None) -> Path:
    """The DICOM folder of a stored volume, holding the very series ingested (same sha256):
    ``where`` (the series folder, or its parent holding a folder of the recorded name), else
    the absolute path the store records (ingest --record-paths, or an older store).

    Raises:
        InputError: no folder given nor recorded, no such folder, or its series is not the
            ingested one (one line naming the volume).
    """
    from ..image_io.dicom import is_dicom_dir, series_sha256

    vid, name, recorded = meta.volume_id, meta.source_name, meta.recorded_path
    if where is None and recorded is None:
        raise InputError(f"volume '{vid}': the store records the source series by name "
                         f"({name}) and sha256 only; pass --dicom-source FOLDER (the series "
                         "folder or its parent)")
    candidates = [where, where / name] if where is not None else [Path(recorded)]
    found = [c for c in candidates if is_dicom_dir(c)]
    if not found:
        hint = "" if where is not None else "; pass --dicom-source FOLDER if it moved"
        shown = where if where is not None else name
        raise InputError(f"volume '{vid}': source DICOM series not found at {shown}{hint}")
    for folder in found:
        if series_sha256(folder) == meta.sha256:
            return folder
    raise InputError(f"volume '{vid}': the DICOM series in {found[-1].name} is not the one "
                     "ingested (its files' sha256 differs)")


def export_volume_seg(root: zarr.Group, round_index: int, volume_id: str, out: str, *,
                      options: DicomSegOptions) -> ExportedVolume:
    """``out/<id>.seg.dcm``: the round's pseudo-label of one finished volume as DICOM-SEG."""
    from semisam.store import read_class_map, read_meta, read_output

    from .records import ExportedVolume, skip_reason

    reason = skip_reason(root, round_index, volume_id)
    label = None if reason else read_output(root, round_index, "pseudo_label", volume_id)
    if reason or label is None:
        return ExportedVolume(volume_id=volume_id, written=False,
                              reason=reason or "pseudo_label array missing")
    meta = read_meta(root, volume_id)
    folder = find_source(meta, options.source)
    classes = read_class_map(root)
    names = {v: classes.name(v) for v in classes.values}
    path = Path(out) / f"{volume_id}.seg.dcm"
    try:
        write_dicom_seg(label, folder, path, names, description=f"semisam round {round_index}",
                        series_number=SERIES_NUMBER + round_index)
    except InputError as exc:
        raise InputError(f"volume '{volume_id}': {exc}") from None
    return ExportedVolume(volume_id=volume_id, written=True, files={"dicom_seg": str(path)})


def split_series(source: str) -> tuple[Path, str | None]:
    """``(folder, SeriesInstanceUID or None)`` of a predict input (``FOLDER#series=UID``)."""
    folder, _, uid = str(source).partition("#series=")
    return Path(folder), uid or None


def check_dicom_inputs(inputs: list[Path]) -> None:
    """`InputError` for the first predict input that is not a DICOM series."""
    from ..image_io.dicom import is_dicom_dir

    for source in inputs:
        folder, _ = split_series(str(source))
        if not is_dicom_dir(folder):
            raise InputError(f"{source}: not a DICOM series: --dicom-seg needs DICOM inputs "
                             "(a DICOM-SEG references its source series)")


def predict_dicom_segs(report: PredictReport) -> list[Path]:
    """``<out>/<id>.seg.dcm`` beside each finished `predict` label of a DICOM input (its
    NIfTI label is on the series' own grid); the student's classes name the segments."""
    import nibabel as nib
    import numpy as np

    names = report.classes or {1: "foreground"}
    written = []
    for item in report.items:
        if item.status.value == "failed" or not item.label or not item.volume_id:
            continue
        folder, uid = split_series(item.source)
        label = np.asarray(nib.load(item.label).dataobj).astype(np.uint8)
        path = Path(report.out_dir) / f"{item.volume_id}.seg.dcm"
        try:
            write_dicom_seg(label, folder, path, names, description="semisam predict", uid=uid)
        except InputError as exc:
            raise InputError(f"{item.source}: {exc}") from None
        log.info("%s: DICOM-SEG %s", item.volume_id, path)
        written.append(path)
    return written
