"""Read an exported OME-Zarr volume with three independent readers and check it against the
store: ome-zarr-models (metadata validation), ngff-zarr (arrays, scale, translation, JSON
schema) and ome-zarr-py (what napari-ome-zarr uses: nodes, labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from semisam.store import read_meta, read_output


def _models(path: Path, label_name: str) -> None:
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    group = zarr.open_group(str(path), mode="r")
    image = Image.from_zarr(group)
    assert image.attributes.ome.multiscales[0].axes[0].name == "z"
    assert image.labels is not None and label_name in image.labels.attributes.ome.labels
    label = ImageLabel.from_zarr(group["labels"][label_name])
    assert label.attributes.ome.image_label.source.image == "../../"


def _ngff_zarr(path: Path, image: np.ndarray, spacing, origin, label: np.ndarray,
               label_name: str) -> None:
    import ngff_zarr

    ms = ngff_zarr.from_ngff_zarr(str(path), validate=True)
    level0 = ms.images[0]
    assert tuple(level0.dims) == ("z", "y", "x")
    np.testing.assert_array_equal(np.asarray(level0.data), image.transpose(2, 1, 0))
    np.testing.assert_allclose([level0.scale[a] for a in "xyz"], spacing, rtol=1e-6)
    np.testing.assert_allclose([level0.translation[a] for a in "xyz"], origin, atol=1e-6)
    assert level0.axes_units == {"z": "millimeter", "y": "millimeter", "x": "millimeter"}
    assert len(ms.images) >= 2
    labels = ngff_zarr.from_ngff_zarr(str(path / "labels" / label_name), validate=True)
    np.testing.assert_array_equal(np.asarray(labels.images[0].data), label.transpose(2, 1, 0))


def _ome_zarr_py(path: Path, image: np.ndarray, spacing, label: np.ndarray) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path)))())
    assert nodes, f"ome-zarr-py found nothing in {path}"
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), image.transpose(2, 1, 0))
    scale = nodes[0].metadata["coordinateTransformations"][0][0]["scale"]
    np.testing.assert_allclose(scale[::-1], spacing, rtol=1e-6)
    label_nodes = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert label_nodes, f"ome-zarr-py found no label image in {path}"
    np.testing.assert_array_equal(np.asarray(label_nodes[0].data[0]), label.transpose(2, 1, 0))
    assert label_nodes[0].metadata.get("color"), "label colours not read"


def check_volume(root: zarr.Group, out: Path, round_index: int, vid: str, *,
                 world: bool = True) -> dict:
    """Every reader accepts ``out/<vid>.ome.zarr`` and its confidence image; image, label,
    confidence and spacing equal the store's. Returns the image's ``semisam`` attributes."""
    meta = read_meta(root, vid)
    image = np.asarray(root[f"volumes/{vid}/image"][...])
    label = read_output(root, round_index, "pseudo_label", vid)
    conf = read_output(root, round_index, "confidence", vid)
    affine = np.asarray(meta.affine)
    origin = affine[:3, 3] if world else np.zeros(3)
    path = out / f"{vid}.ome.zarr"
    name = f"round{round_index}"
    _models(path, name)
    _ngff_zarr(path, image, meta.spacing, origin, label, name)
    _ome_zarr_py(path, image, meta.spacing, label)
    import ngff_zarr
    from ome_zarr_models.v05.image import Image

    conf_path = out / "confidence" / f"round{round_index}" / f"{vid}.ome.zarr"
    Image.from_zarr(zarr.open_group(str(conf_path), mode="r"))
    conf_ms = ngff_zarr.from_ngff_zarr(str(conf_path), validate=True)
    np.testing.assert_array_equal(np.asarray(conf_ms.images[0].data), conf.transpose(2, 1, 0))
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)["semisam"]
    assert attrs["source_sha256"] == meta.sha256
    assert attrs["source_file"] == Path(meta.source).name
    np.testing.assert_allclose(attrs["affine"], affine)
    return attrs
