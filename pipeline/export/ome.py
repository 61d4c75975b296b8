"""`export --format ome-zarr`: a round as OME-Zarr (NGFF 0.5 on Zarr v3) for viewers.

Per finished volume, under ``DIR`` (a local folder or an fsspec URL such as ``s3://b/p``)::

    DIR/<id>.ome.zarr/                 the stored image, ZxYxX (see `semisam.pipeline.export.ngff`),
                                       its pyramid "0", "1", ... (block mean), attrs
                                       {"ome": {version 0.5, multiscales}, "semisam": {...}}
    DIR/<id>.ome.zarr/labels/round<r>  the round's pseudo-label, uint8 class values, pyramid of
                                       every-second voxels, "image-label" metadata: one colour
                                       and one name per value (0 = background, transparent),
                                       source image "../../"
    DIR/confidence/round<r>/<id>.ome.zarr/  the round's confidence as its own image: uint8 as
                                       stored, value/255 in [0, 1] (``confidence_encoding``)
    DIR/export.json                    what was written and skipped

Exporting another round into the same ``DIR`` adds its ``labels/round<r>`` beside the earlier
rounds' when the image there is the same (volume, source sha256, affine, pyramid levels);
otherwise the image group is rewritten. The ``semisam`` attributes (`OmeVolumeAttrs`) sit beside the ``ome`` key: the volume id, the
round and its fingerprint, the stored 4x4 affine (voxel (i, j, k) -> RAS mm) and the geometry
mode, the source's file name, format and sha256 (its path only with ``record_paths``: hospital
paths identify people and sites).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from semisam.schemas import CONFIDENCE_SCALE, StrictModel, VolumeMeta, volume_path

from .ngff import (
    NGFF_VERSION,
    OBLIQUE_SCALE_ONLY,
    ngff_geometry,
    pyramid_factors,
    to_ngff,
    write_multiscale,
)

if TYPE_CHECKING:
    import zarr

    from .records import ExportedVolume

log = logging.getLogger(__name__)

# label value -> RGBA (0 is transparent background); values past the list cycle through it
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


class OmeExportOptions(StrictModel):
    """Settings of an OME-Zarr export."""

    oblique: Literal["scale-only", "refuse"] = Field(
        OBLIQUE_SCALE_ONLY, description="affines NGFF 0.5 cannot express: voxel frame or refuse")
    levels: int | None = Field(None, ge=1, le=8, description="pyramid levels (None: automatic)")
    record_paths: bool = Field(False, description="record the source's absolute path (the one "
                               "the store records: ingest --record-paths)")


class OmeVolumeAttrs(StrictModel):
    """The ``semisam`` attributes of an exported OME-Zarr image (beside ``ome``)."""

    volume_id: str
    kind: Literal["image", "confidence"]
    round: int = Field(description="the round exported last")
    fingerprint: str = Field(description="that round's fingerprint")
    stored_axes: str = Field("xyz", description="the store's axis order; NGFF arrays are zyx")
    affine: list[list[float]] = Field(description="4x4 stored voxel (i, j, k) -> RAS mm")
    geometry: Literal["world", "voxel-frame"] = Field(
        description="world: NGFF coordinates are RAS mm; voxel-frame: spacing only (the "
                    "affine rotates or flips, see `affine`)")
    spacing: tuple[float, float, float] = Field(description="mm along stored i, j, k")
    source_file: str = Field(description="the source's file (or DICOM folder) name")
    source_format: str
    source_sha256: str
    source_path: str | None = Field(None, description="absolute source path, only when asked")
    labels: dict[str, dict[int, str]] = Field(
        default_factory=dict, description="label image -> value -> structure name")
    confidence_encoding: str | None = None


def class_names(root: zarr.Group) -> dict[int, str]:
    """Label value -> name, background included."""
    from semisam.store import read_class_map

    classes = read_class_map(root)
    return {0: "background", **{v: classes.name(v) for v in classes.values}}


def image_label_attrs(names: dict[int, str]) -> dict[str, Any]:
    """NGFF ``image-label`` metadata: a colour and a name per value, the key image two up."""
    colors, props = [], []
    for value, name in sorted(names.items()):
        rgb = PALETTE[(value - 1) % len(PALETTE)] if value else (0, 0, 0)
        colors.append({"label-value": value, "rgba": [*rgb, 255 if value else 0]})
        props.append({"label-value": value, "name": name})
    return {"version": NGFF_VERSION, "colors": colors, "properties": props,
            "source": {"image": "../../"}}


def open_output(location: str, mode: str = "w") -> zarr.Group:
    """The Zarr v3 group at a local path or fsspec URL: new (``"w"``, overwriting) or
    existing (``"r+"``)."""
    import zarr

    from semisam.store import fsspec_options, is_url

    options = {"storage_options": fsspec_options(location)} if is_url(location) else {}
    return zarr.open_group(store=location, mode=mode, zarr_format=3, **options)


def _existing_image(location: str, attrs: OmeVolumeAttrs, levels: int) -> zarr.Group | None:
    """The image group at ``location`` when it holds this very image (same volume, source
    sha256, affine and pyramid levels), open for adding a round's labels; else None."""
    import zarr

    try:
        group = open_output(location, mode="r+")
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        return None
    old = dict(group.attrs).get("semisam")
    multiscales = dict(group.attrs).get("ome", {}).get("multiscales", [{}])
    if not isinstance(old, dict) or len(multiscales[0].get("datasets", [])) != levels:
        return None
    keys = ("volume_id", "kind", "source_sha256", "affine")
    new = attrs.model_dump(mode="json")
    return group if all(old.get(k) == new[k] for k in keys) else None


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URL."""
    return "/".join([base.rstrip("/"), *parts])


def _write_image(location: str, data: Any, attrs: OmeVolumeAttrs, *, scale: list[float],
                 translation: list[float], average: bool, levels: int | None,
                 keep_labels: bool = False) -> zarr.Group:
    """The image's group with its pyramid; with ``keep_labels``, an existing group of the
    same image is kept (its labels of other rounds too) and only its attributes updated."""
    factors = pyramid_factors(data.shape, scale, levels)
    group = _existing_image(location, attrs, len(factors)) if keep_labels else None
    if group is not None:
        old = OmeVolumeAttrs.model_validate(dict(group.attrs)["semisam"])
        merged = attrs.model_copy(update={"labels": {**old.labels, **attrs.labels}})
        group.attrs["semisam"] = merged.model_dump(mode="json")
        return group
    group = open_output(location)
    ms = write_multiscale(group, data, name=attrs.volume_id, scale=scale,
                          translation=translation, factors=factors, average=average)
    group.attrs.update({"ome": {"version": NGFF_VERSION, "multiscales": [ms]},
                        "semisam": attrs.model_dump(mode="json")})
    return group


def recorded_path(meta: VolumeMeta, wanted: bool) -> str | None:
    """The source's absolute path for the export's attributes: only when ``wanted``, and only
    the one the store records (a warning when it records none: ingest --record-paths)."""
    if not wanted:
        return None
    if meta.recorded_path is None:
        log.warning("volume '%s': the store records no source path (ingest --record-paths "
                    "records one); source_path left empty", meta.volume_id)
    return meta.recorded_path


def export_volume_ome(root: zarr.Group, round_index: int, volume_id: str, out: str, *,
                      fingerprint: str, options: OmeExportOptions) -> ExportedVolume:
    """Write one finished volume's image, pseudo-label and confidence (module docstring).

    Raises:
        InputError: ``options.oblique == "refuse"`` and the affine is not axis-aligned.
    """
    import numpy as np

    from semisam.store import read_meta, read_output

    from .records import ExportedVolume, skip_reason, volume_affine

    reason = skip_reason(root, round_index, volume_id)
    label = None if reason else read_output(root, round_index, "pseudo_label", volume_id)
    conf = None if reason else read_output(root, round_index, "confidence", volume_id)
    if reason is None and (label is None or conf is None):
        reason = f"{'pseudo_label' if label is None else 'confidence'} array missing"
    if reason:
        return ExportedVolume(volume_id=volume_id, written=False, reason=reason)
    meta = read_meta(root, volume_id)
    affine = volume_affine(root, round_index, volume_id)
    scale, translation, geometry = ngff_geometry(affine, oblique=options.oblique,
                                                 where=f"volume '{volume_id}'")
    names = class_names(root)
    attrs = OmeVolumeAttrs(
        volume_id=volume_id, kind="image", round=round_index, fingerprint=fingerprint,
        affine=affine.tolist(), geometry=geometry,
        spacing=tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)),
        source_file=meta.source_name, source_format=meta.source_format,
        source_sha256=meta.sha256, source_path=recorded_path(meta, options.record_paths),
        labels={f"round{round_index}": names})
    image = np.asarray(root[f"{volume_path(volume_id)}/image"][...])
    where = join(out, f"{volume_id}.ome.zarr")
    group = _write_image(where, to_ngff(image), attrs, scale=scale, translation=translation,
                         average=True, levels=options.levels, keep_labels=True)
    _write_labels(group, to_ngff(label), f"round{round_index}", names, scale=scale,
                  translation=translation, levels=options.levels)
    conf_attrs = attrs.model_copy(update={
        "kind": "confidence", "labels": {},
        "confidence_encoding": f"uint8 value/{CONFIDENCE_SCALE} in [0, 1]"})
    conf_where = join(out, "confidence", f"round{round_index}", f"{volume_id}.ome.zarr")
    _write_image(conf_where, to_ngff(conf), conf_attrs, scale=scale, translation=translation,
                 average=False, levels=options.levels)
    return ExportedVolume(volume_id=volume_id, written=True, geometry=geometry,
                          files={"image": where, f"labels/round{round_index}":
                                 join(where, "labels", f"round{round_index}"),
                                 "confidence": conf_where})


def _write_labels(image: zarr.Group, label: Any, name: str, names: dict[int, str], *,
                  scale: list[float], translation: list[float], levels: int | None) -> None:
    """``labels/<name>`` of an image group (replacing one of that name, keeping the others):
    the label pyramid and its NGFF metadata."""
    labels = image.require_group("labels")
    listed = dict(labels.attrs).get("ome", {}).get("labels", [])
    labels.attrs["ome"] = {"version": NGFF_VERSION,
                           "labels": [*(n for n in listed if n != name), name]}
    group = labels.create_group(name, overwrite=True)
    factors = pyramid_factors(label.shape, scale, levels)
    ms = write_multiscale(group, label, name=name, scale=scale, translation=translation,
                          factors=factors, average=False)
    group.attrs["ome"] = {"version": NGFF_VERSION, "multiscales": [ms],
                          "image-label": image_label_attrs(names)}


def write_text(out: str, name: str, text: str) -> None:
    """``out/name`` (local folder or URL) with ``text``."""
    from semisam.store import fsspec_options, is_url

    if is_url(out):
        import fsspec

        with fsspec.open(join(out, name), "w", **fsspec_options(out)) as fh:
            fh.write(text)
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / name).write_text(text)
