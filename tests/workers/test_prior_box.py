"""The prior-box check (`prompts.prior_box`): the masker prompted by the labeled volumes' box
alone stands in for a student that found another structure, and leaves a right student alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semisam.schemas import PromptConfig, RandomWalkerConfig, RoundConfig
from semisam.store import open_store
from semisam.workers.components import fit_prior, normalised_box
from semisam.workers.maskers.random_walker import RandomWalkerMasker
from semisam.workers.prior_box import check_with_prior_box, prior_box_prompts
from semisam.workers.volume import VolumeProcessor
from tests.workers.test_components import _ball, _store_with_a_bigger_lookalike

SHAPE = (40, 48, 16)
TARGET, LOOKALIKE = ((12, 16, 8), 5), ((28, 34, 8), 5)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def test_the_prior_box_is_the_union_of_the_labeled_boxes_in_fractions_of_the_extent() -> None:
    a = np.zeros(SHAPE, bool)
    a[4:10, 6:12, 2:5] = True
    b = np.zeros(SHAPE, bool)
    b[8:20, 10:14, 3:9] = True
    assert [v.tolist() for v in normalised_box(a)] == [[4 / 40, 6 / 48, 2 / 16],
                                                      [10 / 40, 12 / 48, 5 / 16]]
    prior = fit_prior([(a, (1, 1, 1)), (b, (1, 1, 1))])
    assert prior is not None and prior.box is not None
    assert prior.box[0] == pytest.approx((4 / 40, 6 / 48, 2 / 16))
    assert prior.box[1] == pytest.approx((20 / 40, 14 / 48, 9 / 16))
    # on a volume of the same shape the prompts cover the union exactly: slices 2..8 along
    # axis 2, rows (axis 0) 4..19, columns (axis 1) 6..13, as XYXY
    prompts = prior_box_prompts(SHAPE, prior, 2, 0.0)
    assert [p.index for p in prompts] == list(range(2, 9))
    assert prompts[0].box.tolist() == [6, 4, 13, 19]
    # along axis 0 the slice's rows are axis 1 and its columns axis 2
    along0 = prior_box_prompts(SHAPE, prior, 0, 0.0)
    assert [p.index for p in along0] == list(range(4, 20)) and along0[0].box.tolist() == [2, 6, 8, 13]
    # grown by 0.3 of its size per side (rows -0.8..24.8 -> 0..24, columns 3.6..16.4,
    # slices -0.1..11.1 -> 0..11) and clipped to the volume
    grown = prior_box_prompts(SHAPE, prior, 2, 0.3)
    assert [p.index for p in grown] == list(range(0, 12))
    assert grown[0].box.tolist() == [3, 0, 16, 24]


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dark volume with two bright balls: the target (where the labeled volume has its
    structure) and a lookalike of the same size elsewhere."""
    target, lookalike = _ball(SHAPE, *TARGET), _ball(SHAPE, *LOOKALIKE)
    image = np.where(target | lookalike, 220, 30).astype(np.uint8)
    return image, target, lookalike


def test_a_student_on_the_lookalike_is_replaced_by_the_masker_in_the_prior_box() -> None:
    image, target, lookalike = _scene()
    prior = fit_prior([(_ball(SHAPE, (13, 15, 8), 5), (1, 1, 1))])
    assert prior is not None
    cfg = PromptConfig(prior_box=True, prior_box_grow=0.3)
    masker = RandomWalkerMasker(RandomWalkerConfig())
    wrong = np.where(lookalike, 0.9, 0.05).astype(np.float32)
    check = check_with_prior_box(wrong, image, prior, (1, 1, 1), masker, cfg)
    assert check is not None and check.replaced
    assert check.agreement < 0.1
    found = check.prob > 0.5
    # the masker found the target in the box (the weight-free walker also labels a little
    # around the ball's ends, where the box's centre seed falls outside it)
    assert np.count_nonzero(found & target) > 0.9 * np.count_nonzero(target)
    assert _dice(found, target) > 0.6
    assert not found[lookalike].any()

    right = np.where(target, 0.9, 0.05).astype(np.float32)
    kept = check_with_prior_box(right, image, prior, (1, 1, 1), masker, cfg)
    assert kept is not None and not kept.replaced and kept.agreement > 0.6
    assert kept.prob is right


def test_a_prior_without_a_box_checks_nothing_and_prior_box_needs_the_prior_component() -> None:
    image, target, _ = _scene()
    prior = fit_prior([(target, (1, 1, 1))])
    assert prior is not None
    old = prior.model_copy(update={"box": None})  # a prior recorded before boxes existed
    masker = RandomWalkerMasker(RandomWalkerConfig())
    assert check_with_prior_box(target.astype(np.float32), image, old, (1, 1, 1), masker,
                                PromptConfig(prior_box=True)) is None
    with pytest.raises(ValueError, match="prior_box needs prompts.component 'prior'"):
        PromptConfig(prior_box=True, component="largest")


def test_the_round_replaces_a_student_on_the_lookalike_and_records_the_check(
        tmp_path: Path, trained_student: Path) -> None:
    from semisam.workers.components import with_store_priors

    store, _ = _store_with_a_bigger_lookalike(tmp_path / "s.zarr")
    root = open_store(store)
    outcomes = {}
    for r, minimum in ((1, 0.0), (2, 1.0)):
        cfg = RoundConfig(masker={"kind": "random_walker"},
                          prompts={"prior_box": True, "prior_box_min_agreement": minimum})
        cfg = with_store_priors(cfg, root)
        record = VolumeProcessor(str(store), r, cfg, trained_student).process("v2")
        assert record.status.value == "done", record.error
        assert record.stats is not None and record.stats.prior_box_agreement is not None
        agreement = record.stats.prior_box_agreement[1]
        assert 0.0 <= agreement <= 1.0
        outcomes[minimum] = (agreement, record.stats.prior_box_replaced)
    # the same student and masker agree the same either way; only the minimum decides
    assert outcomes[0.0][0] == pytest.approx(outcomes[1.0][0])
    assert outcomes[0.0][1] == [] and outcomes[1.0][1] == [1]
    default = RoundConfig(masker={"kind": "random_walker"})
    record = VolumeProcessor(str(store), 3, with_store_priors(default, root),
                             trained_student).process("v2")
    assert record.stats is not None and record.stats.prior_box_agreement is None
