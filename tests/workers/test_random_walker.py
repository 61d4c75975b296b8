"""The random-walker masker: the masker contract plus segmentation quality on phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.schemas import MaskerConfig, MaskerKind, RandomWalkerConfig
from semisam.workers.maskers import SlicePrompt, build_masker
from semisam.workers.maskers.random_walker import RandomWalkerMasker
from tests.workers.masker_contract import MaskerContract, disk_prompt, disk_slice


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


class TestRandomWalker(MaskerContract):
    @pytest.fixture
    def masker(self) -> RandomWalkerMasker:
        return RandomWalkerMasker(RandomWalkerConfig())


def test_registry_builds_it():
    masker = build_masker(MaskerConfig(kind=MaskerKind.random_walker))
    assert isinstance(masker, RandomWalkerMasker) and masker.name == "random_walker"
    assert masker.describe()["beta"] == RandomWalkerConfig().beta


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_disk_quality(seed):
    h, w, cy, cx, r = 64, 80, 30.0, 46.0, 14.0
    image = disk_slice(h, w, cy, cx, r, seed=seed)
    masker = RandomWalkerMasker(RandomWalkerConfig())
    prob = masker.mask_slices(image[None], [disk_prompt(0, cy, cx, r)])[0]
    assert _dice(prob > 0.5, _disk(h, w, cy, cx, r)) >= 0.9


def test_box_only_and_negative_points():
    h, w, cy, cx, r = 56, 72, 25.0, 40.0, 12.0
    image = disk_slice(h, w, cy, cx, r, seed=3)
    box = disk_prompt(0, cy, cx, r).box
    masker = RandomWalkerMasker(RandomWalkerConfig())
    box_only = SlicePrompt(index=0, box=box)  # centre disk seeds the foreground
    prob = masker.mask_slices(image[None], [box_only])[0]
    assert _dice(prob > 0.5, _disk(h, w, cy, cx, r)) >= 0.9
    x0, y0 = box[:2]
    with_negative = SlicePrompt(
        index=0,
        box=box,
        points=np.array([[cx, cy], [x0 + 1, y0 + 1]], np.float32),
        point_labels=np.array([1, 0], np.int64),
    )
    prob = masker.mask_slices(image[None], [with_negative])[0]
    assert prob[int(y0) + 1, int(x0) + 1] == 0.0
    assert prob[int(cy), int(cx)] == 1.0


def test_zero_outside_the_crop():
    h, w, cy, cx, r = 60, 60, 20.0, 20.0, 8.0
    config = RandomWalkerConfig(background_band=3)
    prompt = disk_prompt(0, cy, cx, r, margin=2)
    prob = RandomWalkerMasker(config).mask_slices(disk_slice(h, w, cy, cx, r)[None], [prompt])[0]
    x1, y1 = int(prompt.box[2]), int(prompt.box[3])
    assert not prob[y1 + 4 :, :].any() and not prob[:, x1 + 4 :].any()


def test_core_fraction_seeds_from_the_mask_prompt():
    h, w, cy, cx, r = 48, 48, 24.0, 24.0, 10.0
    image = disk_slice(h, w, cy, cx, r, seed=4)
    logits = np.where(_disk(h, w, cy, cx, r), 4.0, -4.0).astype(np.float32)
    prompt = SlicePrompt(index=0, box=disk_prompt(0, cy, cx, r).box, mask_logits=logits)
    masker = RandomWalkerMasker(RandomWalkerConfig(core_fraction=0.2))
    prob = masker.mask_slices(image[None], [prompt])[0]
    assert _dice(prob > 0.5, _disk(h, w, cy, cx, r)) >= 0.9
    bad = SlicePrompt(index=0, box=prompt.box, mask_logits=logits[:10])
    with pytest.raises(ValueError, match="mask_logits"):
        masker.mask_slices(image[None], [bad])


@pytest.mark.parametrize(
    "box",
    [
        [10, 5, 10, 30],  # one pixel wide
        [3, 7, 3, 7],  # one pixel
        [0, 0, 39, 31],  # the whole slice: no band outside the box
        [-20, -5, 100, 80],  # beyond the slice
        [30, 20, 5, 2],  # corners swapped
    ],
)
def test_degenerate_boxes(box):
    image = disk_slice(32, 40, 16, 20, 6)
    prompt = SlicePrompt(index=0, box=np.array(box, np.float32))
    prob = RandomWalkerMasker(RandomWalkerConfig()).mask_slices(image[None], [prompt])[0]
    assert prob.shape == (32, 40) and np.isfinite(prob).all()
    assert prob.min() >= 0 and prob.max() <= 1 and prob.max() > 0


def test_constant_and_tiny_slices():
    masker = RandomWalkerMasker(RandomWalkerConfig(background_band=1))
    flat = np.full((1, 20, 20), 80, np.uint8)
    box = np.array([5, 5, 14, 14], np.float32)
    prob = masker.mask_slices(flat, [SlicePrompt(index=0, box=box)])
    assert np.isfinite(prob).all() and prob[0, 10, 10] == 1.0
    tiny = np.zeros((1, 1, 1), np.uint8)
    prob = masker.mask_slices(tiny, [SlicePrompt(index=0, box=np.zeros(4, np.float32))])
    assert prob.shape == (1, 1, 1)


def test_rejects_bad_inputs():
    masker = RandomWalkerMasker(RandomWalkerConfig())
    prompt = disk_prompt(0, 10, 10, 4)
    with pytest.raises(ValueError, match="uint8"):
        masker.mask_slices(np.zeros((1, 20, 20), np.float32), [prompt])
    with pytest.raises(ValueError, match="box"):
        bad = SlicePrompt(index=0, box=np.array([0, 0, np.nan, 3], np.float32))
        masker.mask_slices(np.zeros((1, 20, 20), np.uint8), [bad])


def test_positive_point_outside_the_crop_falls_back_to_the_centre():
    h, w, cy, cx, r = 48, 48, 20.0, 22.0, 9.0
    image = disk_slice(h, w, cy, cx, r, seed=5)
    prompt = SlicePrompt(
        index=0,
        box=disk_prompt(0, cy, cx, r).box,
        points=np.array([[47, 47]], np.float32),
        point_labels=np.array([1], np.int64),
    )
    prob = RandomWalkerMasker(RandomWalkerConfig()).mask_slices(image[None], [prompt])[0]
    assert _dice(prob > 0.5, _disk(h, w, cy, cx, r)) >= 0.9
