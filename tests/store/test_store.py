import numpy as np
import pytest
import zarr

from semisam.schemas import SCHEMA_VERSION, StoreError, VolumeMeta, VolumeRecord, VolumeStatus
from semisam.store import (
    array_sha256,
    clear_record,
    list_metas,
    open_store,
    read_image,
    read_output,
    read_record,
    volume_status,
    write_outputs,
    write_record,
    write_volume,
)
from semisam.store.volumes import DIMENSION_NAMES, slice_chunks


def _meta(vid="v1", labeled=False, shape=(5, 6, 7)):
    return VolumeMeta(volume_id=vid, source="mem", source_format="npy", sha256="0", shape=shape,
                      spacing=(1.0, 1.0, 2.0), affine=np.eye(4).tolist(), image_dtype="float32",
                      labeled=labeled)


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no semisam store here"):
        open_store(tmp_path / "nothing.zarr")


def test_newer_schema_refused(tmp_path):
    root = open_store(tmp_path / "s.zarr", create=True)
    root.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match="newer than this semisam understands"):
        open_store(tmp_path / "s.zarr")


def test_plain_zarr_group_is_not_a_store(tmp_path):
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a semisam store"):
        open_store(tmp_path / "g.zarr")


def test_unwritable_store_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a directory is needed: unwritable even for root
    with pytest.raises(StoreError, match="not writable"):
        open_store(blocker / "s.zarr", create=True)


def test_volume_round_trip_and_chunking(tmp_path):
    root = open_store(tmp_path / "s.zarr", create=True)
    img = np.random.default_rng(0).random((5, 6, 20)).astype(np.float32)
    write_volume(root, _meta(shape=img.shape), img, None)
    np.testing.assert_array_equal(read_image(root, "v1"), img)
    assert root["volumes/v1/image"].chunks == (5, 6, 8)
    assert [m.volume_id for m in list_metas(root)] == ["v1"]


def test_label_shape_mismatch_refused(tmp_path):
    root = open_store(tmp_path / "s.zarr", create=True)
    with pytest.raises(Exception, match="label shape"):
        write_volume(root, _meta(), np.zeros((5, 6, 7), np.float32), np.zeros((5, 6, 8), np.uint8))


def test_outputs_and_records(tmp_path):
    root = open_store(tmp_path / "s.zarr", create=True)
    pl = (np.random.default_rng(1).random((5, 6, 7)) > 0.5).astype(np.uint8)
    conf = np.full((5, 6, 7), 200, np.uint8)
    sums = write_outputs(root, 1, "v1", pl, conf, slice_axis=2)
    assert sums["pseudo_label"] == array_sha256(pl)
    np.testing.assert_array_equal(read_output(root, 1, "pseudo_label", "v1"), pl)
    assert volume_status(root, 1, "v1") == VolumeStatus.pending
    write_record(root, 1, VolumeRecord(volume_id="v1", status=VolumeStatus.done, checksums=sums))
    assert read_record(root, 1, "v1").checksums == sums
    clear_record(root, 1, "v1")
    assert volume_status(root, 1, "v1") == VolumeStatus.pending


def test_torn_record_counts_as_pending(tmp_path):
    root = open_store(tmp_path / "s.zarr", create=True)
    write_record(root, 1, VolumeRecord(volume_id="v1", status=VolumeStatus.done))
    (tmp_path / "s.zarr" / "rounds/1/records/v1/zarr.json").write_text('{"zarr_format": 3, "node_ty')
    assert read_record(open_store(tmp_path / "s.zarr"), 1, "v1") is None


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_outputs_store_what_zarr_would(tmp_path, slice_axis):
    """Same chunk files, bytes and metadata as zarr's own ``create_array(data=...)``: chunks that
    are all zero (the fill value) are left out, including a partial last one."""
    shape = [12, 13, 11]
    shape[slice_axis] = 29  # chunks of 8 planes: 0-7, 8-15, 16-23, 24-28
    rng = np.random.default_rng(slice_axis)
    pl = (rng.random(shape) > 0.5).astype(np.uint8)
    planes = np.moveaxis(pl, slice_axis, 0)
    planes[:8] = planes[16:24] = 0  # empty: the first chunk and one in the middle
    conf = np.full(shape, 9, np.uint8)
    np.moveaxis(conf, slice_axis, 0)[24:] = 0  # empty: the partial last chunk
    root = open_store(tmp_path / "s.zarr", create=True)
    write_outputs(root, 1, "v1", pl, conf, slice_axis, attrs={"round": 1})
    for kind, data in (("pseudo_label", pl), ("confidence", conf)):
        extra = {"encoding": "uint8, value/255 = confidence in [0, 1]"} if kind == "confidence" else {}
        root.require_group(f"rounds/2/{kind}").create_array(
            "v1", data=data, chunks=slice_chunks(pl.shape, slice_axis), attributes={"round": 1, **extra},
            dimension_names=DIMENSION_NAMES)
        ours, theirs = (tmp_path / f"s.zarr/rounds/{r}/{kind}/v1" for r in (1, 2))
        files = sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
        assert len(files) == 1 + (3 if kind == "confidence" else 2)  # zarr.json + chunks
        for name in files:
            assert (ours / name).read_bytes() == (theirs / name).read_bytes()
        np.testing.assert_array_equal(read_output(root, 1, kind, "v1"), data)
