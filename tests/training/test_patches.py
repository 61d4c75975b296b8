"""Patches are sliced from the Zarr arrays (chunk-aware), padded and augmented consistently."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from semisam.schemas import TrainConfig
from semisam.store import open_store
from semisam.training.dataset import PatchSampler, intensity_stats, open_training_data
from semisam.training.patches import crop_start, read_region, read_size, rot_flip
from tests.conftest import PHANTOM_SHAPE, TEST_SPEC


def test_read_region_pads_outside_the_volume():
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    inside = read_region(data, (1, 2, 3), (3, 3, 3))
    np.testing.assert_array_equal(inside, data[1:4, 2:5, 3:6])
    padded = read_region(data, (-2, 4, 5), (4, 4, 4), fill=-1)
    assert padded.shape == (4, 4, 4)
    np.testing.assert_array_equal(padded[2:, :2, :2], data[:2, 4:6, 5:7])
    assert (padded[:2] == -1).all() and (padded[2:, 2:] == -1).all()
    assert (read_region(data, (9, 0, 0), (2, 2, 2), fill=3) == 3).all()


def test_crop_start_ranges():
    rng = np.random.default_rng(0)
    for _ in range(50):
        start = crop_start((40, 20, 30), (32, 32, 30), rng)
        assert 0 <= start[0] <= 8 and -12 <= start[1] <= 0 and start[2] == 0
    assert crop_start((40, 40, 40), (16, 16, 16), rng, centre=(39, 0, 20)) == (24, 0, 12)


@pytest.mark.parametrize("k", range(4))
def test_rot_flip_keeps_channels_aligned_and_patch_shape(k):
    size = (6, 10, 4)
    region = np.random.default_rng(k).random(read_size(size, k)).astype(np.float32)
    stack = np.stack([region, region > 0.5, region * 2])
    out = rot_flip(stack, k, flip_axis=k % 2)
    assert out.shape == (3, *size)
    np.testing.assert_array_equal(out[1], out[0] > 0.5)
    np.testing.assert_allclose(out[2], out[0] * 2)


def test_sampler_reads_patches_not_volumes(phantom_store, monkeypatch):
    reads = []
    original = zarr.Array.__getitem__

    def spy(self, selection):
        out = original(self, selection)
        reads.append(np.shape(out))
        return out

    cfg = TrainConfig(student=TEST_SPEC)
    cfg.batch.labeled, cfg.batch.unlabeled, cfg.batch.foreground_prob = 2, 2, 0.5
    root = open_store(phantom_store, read_only=True)
    monkeypatch.setattr(zarr.Array, "__getitem__", spy)
    data = open_training_data(root, cfg, None)
    # statistics and foreground positions: chunk-aligned slabs (8 slices), never a whole volume
    assert reads and all(r[2] <= 8 for r in reads)
    reads.clear()
    batch = PatchSampler(data, cfg, use_unlabeled=True).sample(np.random.default_rng(0))
    patch_voxels = int(np.prod(TEST_SPEC.patch_size))
    assert reads and all(int(np.prod(r)) <= patch_voxels for r in reads)
    assert int(np.prod(PHANTOM_SHAPE)) > patch_voxels
    assert batch.image.shape == (4, 1, *TEST_SPEC.patch_size) and batch.label.shape[0] == 2
    assert batch.pseudo_label is None  # no round given
    assert abs(float(batch.image.mean())) < 1.0 and set(np.unique(batch.label)) <= {0, 1}


def test_intensity_stats_match_numpy(phantom_store):
    root = open_store(phantom_store, read_only=True)
    image = root["volumes/ph00/image"]
    mean, std = intensity_stats(image)
    full = np.asarray(image[...], dtype=np.float64)
    assert mean == pytest.approx(full.mean()) and std == pytest.approx(full.std())
