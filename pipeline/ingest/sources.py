"""What ``semisam ingest`` will do with its sources (`image_io.collect_sources` lists them),
before anything is read: the ids that count as labeled (`load_labeled_ids`), per source its id, sha256, label file and labeled flag (`SourcePlan`), and how the store names
it (`source_fields`: file name and sha256, the absolute path only when asked)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import h5py
import zarr

from semisam.schemas import InputError, validate_volume_id, volume_path
from semisam.store import read_meta

from ..image_io import collect_sources, is_dicom_dir, source_sha256, volume_id_for
from ..image_io.validate import check_file, display_path, input_error, split_suffix

log = logging.getLogger(__name__)


def load_labeled_ids(labeled: set[str] | Iterable[str] | Path | str | None) -> set[str] | None:
    """The labeled ids: a collection of ids, or a text file with one id per line ('#' comments).

    Raises:
        InputError: unreadable list file, or an id that is not a safe path segment.
    """
    if labeled is None:
        return None
    if isinstance(labeled, (str, Path)):
        path = Path(labeled)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise input_error(path, f"cannot read the labeled-ids list ({exc})") from None
        ids = [ln.split("#", 1)[0].strip() for ln in lines]
        where = display_path(path)
    else:
        ids, where = [str(i) for i in labeled], "labeled ids"
    result = set()
    for vid in filter(None, ids):
        try:
            result.add(validate_volume_id(vid))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    return result


def _label_path(path: Path, labels_dir: Path | None) -> Path | None:
    """The separate label file of ``path`` (``labels_dir/<same name>``), if there is one."""
    if labels_dir is None:
        return None
    candidate = labels_dir / path.name
    return candidate if candidate.is_file() else None


def _h5_has_label(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as fh:
            return isinstance(fh.get("label"), h5py.Dataset)
    except (OSError, ValueError, RuntimeError):
        return False  # the full read reports the problem


class SourcePlan:
    """What one source will become: id, hashes, label source and labeled flag."""

    def __init__(self, path: Path, labels_dir: Path | None, labeled_ids: set[str] | None) -> None:
        self.path = path
        self.volume_id = volume_id_for(path)
        series = is_dicom_dir(path)  # a folder of DICOM slices; any other folder fails below
        if not series:
            check_file(path)
        self.sha256 = source_sha256(path)
        self.label_file = _label_path(path, labels_dir)
        embedded = not series and split_suffix(path)[1] == "h5" and _h5_has_label(path)  # type: ignore[index]
        if self.label_file is not None:
            if embedded:
                log.warning(
                    "%s: label from %s used instead of the file's own 'label'",
                    display_path(path),
                    display_path(self.label_file),
                )
            self.label_sha256: str | None = source_sha256(self.label_file)
        else:
            self.label_sha256 = self.sha256 if embedded else None
        has_label = self.label_sha256 is not None
        self.labeled = has_label if labeled_ids is None else self.volume_id in labeled_ids
        if self.labeled and not has_label:
            where = (
                f"no {display_path(labels_dir / path.name)}" if labels_dir else "no --labels dir"
            )
            raise input_error(
                path,
                f"volume '{self.volume_id}' is in the labeled list but has no label "
                f"(no 'label' dataset in the file, {where})",
            )


def source_ids(paths: list[Path]) -> set[str]:
    """The ids ``paths`` would be ingested as (file name without its suffix, and the id a
    DICOM series folder gets); a path whose id cannot be made is left to fail when ingested."""
    ids: set[str] = set()
    for path in paths:
        split = split_suffix(path)
        ids.add(split[0] if split else path.name)
        try:
            ids.add(volume_id_for(path))
        except InputError:
            pass
    return ids


def source_fields(path: Path, record_paths: bool) -> dict[str, str | None]:
    """`VolumeMeta`'s ``source`` (the file or DICOM folder name) and ``source_path`` (its
    absolute path, only with ``record_paths``) for ``path``."""
    resolved = path.resolve()
    return {"source": resolved.name, "source_path": str(resolved) if record_paths else None}


def update_source_fields(root: zarr.Group, plan: SourcePlan, record_paths: bool) -> None:
    """An unchanged volume whose stored source path differs from what this ingest records (a
    path asked for and absent, or a path stored and not asked for, as in stores ingested before
    names only were recorded): rewrite its metadata's source fields, nothing else."""
    old = read_meta(root, plan.volume_id)
    fields = source_fields(plan.path, record_paths)
    if old.source == fields["source"] and old.source_path == fields["source_path"]:
        return
    new = old.model_copy(update=fields)
    root[volume_path(plan.volume_id)].attrs["meta"] = new.model_dump(mode="json")
    what = "recorded" if record_paths else "removed"
    log.info("%s: source path %s in its metadata", plan.volume_id, what)


def check_unchanged(path: Path, before: str | None, after: str) -> None:
    """Refuse a file whose bytes changed between planning (hash) and reading."""
    if before is not None and before != after:
        raise input_error(
            path,
            f"file changed while being ingested (sha256 {before[:12]} before reading, "
            f"{after[:12]} after): is it still being written? rerun when it is complete",
        )


def plan_sources(sources: list[Path], labeled: set[str] | Path | None, allow_missing_labeled: bool,
                 labels_dir: Path | None = None) -> tuple[set[str] | None, list[Path], list[str]]:
    """``(labeled ids or None, the files to ingest, labeled ids that no source names)``.

    Raises:
        InputError: ``labels_dir`` is not a directory; the labeled list is unreadable/invalid, or
            names ids no source has (unless ``allow_missing_labeled``), before anything is read:
            a mistyped id would leave its volume unlabeled.
    """
    if labels_dir is not None and not Path(labels_dir).is_dir():
        raise input_error(labels_dir, "labels directory does not exist")
    labeled_ids = load_labeled_ids(labeled)
    paths = collect_sources(sources)
    named = source_ids(paths)  # every id the sources name, ingested or not
    missing = sorted(labeled_ids - named) if labeled_ids is not None else []
    if missing and not allow_missing_labeled:
        where = display_path(labeled) if isinstance(labeled, (str, Path)) else "labeled ids"
        raise InputError(
            f"{where}: {len(missing)} labeled id(s) match no source file: "
            f"{', '.join(repr(v) for v in missing[:10])}{' ...' if len(missing) > 10 else ''} "
            "(a typo? --allow-missing-labeled ingests anyway)"
        )
    return labeled_ids, paths, missing
