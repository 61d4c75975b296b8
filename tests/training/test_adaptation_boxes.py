"""Adaptation boxes: loose boxes (`AdaptBoxConfig.loose_prob`) are the structure's box over all
its slices, grown within the configured share, on structure and past-the-end slices alike."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.schemas import AdaptBoxConfig
from semisam.training.adaptation.boxes import sample_box
from semisam.training.adaptation.examples import Example, Track


def _track() -> Track:
    """A structure on slices 3..5 of a 40x50 slice, drifting right and growing."""
    masks = {}
    for k, i in enumerate((3, 4, 5)):
        m = np.zeros((40, 50), bool)
        m[10 + k:20 + 2 * k, 12 + 3 * k:18 + 3 * k] = True
        masks[i] = m
    return Track("v", 1, 2, masks, [3, 4, 5], [1, 2, 6, 7], (40, 50))


def test_loose_boxes_cover_the_structure_on_every_slice_within_the_growth() -> None:
    track = _track()
    union = np.array([12, 10, 23, 23], np.float64)  # XYXY of every slice's mask together
    size = np.array([12, 14, 12, 14], np.float64)
    config = AdaptBoxConfig(loose_prob=1.0, loose_grow=0.3)
    rng = np.random.default_rng(0)
    boxes = [sample_box(track, Example(0, i, 0), config, rng) for i in (1, 3, 4, 5, 7) * 20]
    grown = []
    for box in boxes:
        assert box is not None
        # at least the union, at most the union grown by 0.3 of its size per side
        assert (box[:2] <= union[:2] + 1e-4).all() and (box[2:] >= union[2:] - 1e-4).all()
        assert (box[:2] >= union[:2] - 0.3 * size[:2] - 1e-4).all()
        assert (box[2:] <= union[2:] + 0.3 * size[2:] + 1e-4).all()
        grown.append(np.abs(box - union))
    assert np.mean(grown) > 0.5  # grown, not the tight union every time


def test_without_loose_boxes_a_slice_gets_its_own_box() -> None:
    track = _track()
    config = AdaptBoxConfig(margin_max=0.0, relative_jitter=0.0, scale_prob=0.0,
                            neighbour_prob=0.0)
    box = sample_box(track, Example(0, 3, 0), config, np.random.default_rng(0))
    assert box is not None and box.tolist() == [12, 10, 17, 19]


def test_a_bad_loose_setting_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="loose_prob"):
        AdaptBoxConfig(loose_prob=1.5)
    with pytest.raises(ValueError, match="loose_grow"):
        AdaptBoxConfig(loose_grow=-0.1)
