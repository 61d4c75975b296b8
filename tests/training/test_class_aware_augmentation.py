"""Class-aware augmentation: flips and rot90 that would swap structures lying one after the other
are dropped on multi-class stores, measured from the labeled volumes; one-structure stores keep
SemiSAM's draw exactly."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.schemas import AugmentConfig, ClassMap, binary_classes
from semisam.store import open_store
from semisam.training.augmentation import augmentation_plan, class_separation
from semisam.training.dataset import PatchSampler, open_training_data
from semisam.training.patches import rot_flip_choice
from tests.training.test_multiclass_train import _config, build_multiclass_store

TWO = ClassMap(names={1: "a", 2: "b"})


def _blocks(offset_axis: int, shape=(20, 20, 20)) -> np.ndarray:
    """Two touching 6-voxel cubes one after the other along ``offset_axis`` (values 1 then 2)."""
    label = np.zeros(shape, np.uint8)
    first = [slice(7, 13)] * 3
    second = list(first)
    first[offset_axis], second[offset_axis] = slice(4, 10), slice(10, 16)
    label[tuple(first)], label[tuple(second)] = 1, 2
    return label


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_separation_names_the_axis_structures_follow_each_other_on(axis):
    ratio = class_separation([_blocks(axis), _blocks(axis)], [1, 2])
    assert ratio[axis] > 1.5 and np.delete(ratio, axis).max() < 1e-9


def test_offsets_whose_sign_varies_between_volumes_are_no_cue():
    flipped = _blocks(0)[::-1].copy()  # b before a in this one
    assert class_separation([_blocks(0), flipped], [1, 2])[0] < 1e-9


@pytest.mark.parametrize("axis, rot90, flips", [(0, False, (1,)), (1, False, (0,)),
                                                (2, True, (0, 1))])
def test_plan_drops_what_would_swap(axis, rot90, flips):
    plan = augmentation_plan(AugmentConfig(), TWO, [_blocks(axis)])
    assert (plan.rot90, plan.flip, plan.flip_axes) == (rot90, True, flips)
    assert f"axis {axis}" in plan.reason


def test_one_structure_or_class_aware_off_keeps_semisams_augmentation():
    def unread():
        raise AssertionError("labels read for a plan that needs none")
        yield  # pragma: no cover

    plan = augmentation_plan(AugmentConfig(), binary_classes(), unread())
    assert (plan.rot90, plan.flip, plan.flip_axes, plan.reason) == (True, True, (0, 1), "")
    assert plan.ordered_axes == ()
    # class_aware off: SemiSAM's draw, but the ordering axes are still measured (the
    # checkpoint records them for test-time flips)
    plan = augmentation_plan(AugmentConfig(class_aware=False), TWO, [_blocks(1)])
    assert (plan.rot90, plan.flip, plan.flip_axes, plan.reason) == (True, True, (0, 1), "")
    assert plan.ordered_axes == (1,)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_plan_names_the_axis_that_orders_the_structures(axis):
    assert augmentation_plan(AugmentConfig(), TWO, [_blocks(axis)]).ordered_axes == (axis,)
    off = AugmentConfig(rot90=False, flip=False)
    assert augmentation_plan(off, TWO, [_blocks(axis)]).ordered_axes == (axis,)


def test_full_plan_draws_exactly_semisams_sequence():
    ours, theirs = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(50):
        assert rot_flip_choice(ours, True, True, (0, 1)) == (int(theirs.integers(0, 4)),
                                                           int(theirs.integers(0, 2)))


def test_one_axis_left_flips_half_the_patches():
    rng = np.random.default_rng(0)
    draws = [rot_flip_choice(rng, False, True, (1,)) for _ in range(400)]
    assert {d[0] for d in draws} == {0}
    flips = sum(d[1] == 1 for d in draws)
    assert {d[1] for d in draws} == {None, 1} and 150 < flips < 250


def _order_kept(store, class_aware: bool) -> tuple[int, int]:
    """Patches holding both structures: how many keep structure 1 before structure 2 along
    axis 0 (the axis the phantoms are split on), and how many in all."""
    cfg = _config()
    cfg.student.patch_size = (32, 32, 32)
    cfg.augment.class_aware = class_aware
    data = open_training_data(open_store(store, read_only=True), cfg, None)
    sampler = PatchSampler(data, cfg, use_unlabeled=False)
    rng = np.random.default_rng(1)
    kept = total = 0
    for _ in range(40):
        label = sampler.sample(rng).label[0]
        if (label == 1).any() and (label == 2).any():
            total += 1
            kept += np.argwhere(label == 1)[:, 0].mean() < np.argwhere(label == 2)[:, 0].mean()
    return kept, total


def test_sampled_patches_never_swap_structures(tmp_path):
    """The phantoms' structures lie one after the other along axis 0: class-aware sampling keeps
    that order in every patch; SemiSAM's draw reverses it in about half of them."""
    store = build_multiclass_store(tmp_path / "s.zarr", count=2, labeled=2)
    kept, total = _order_kept(store, class_aware=True)
    assert total >= 10 and kept == total
    kept, total = _order_kept(store, class_aware=False)
    assert total >= 10 and kept < 0.8 * total
