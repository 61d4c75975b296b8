"""Box propagation (`PromptConfig.propagate`): start, direction, boxes from the masker's own
masks, stopping where the mask vanishes; on the real random-walker masker."""

from __future__ import annotations

import numpy as np

from semisam.schemas import RandomWalkerConfig
from semisam.workers.maskers import MaskerSession, SlicePrompt
from semisam.workers.maskers.random_walker import RandomWalkerMasker
from semisam.workers.propagation import mask_box, propagate


class Recording(MaskerSession):
    """The real masker's session, remembering every call's positions and boxes."""

    def __init__(self, masker, slices):
        super().__init__(masker, slices)
        self.calls: list[tuple[list[int], np.ndarray]] = []

    def mask(self, positions, prompts):
        self.calls.append((list(positions), np.stack([p.box for p in prompts])))
        return super().mask(positions, prompts)


def _stack(n: int, radius_at) -> np.ndarray:
    yy, xx = np.mgrid[0:48, 0:48]
    rng = np.random.default_rng(0)
    out = []
    for z in range(n):
        r = radius_at(z)
        disk = (yy - 24) ** 2 + (xx - 24) ** 2 <= r**2 if r > 0 else np.zeros((48, 48), bool)
        out.append(np.clip(np.where(disk, 200, 40) + rng.normal(0, 5, (48, 48)), 0, 255))
    return np.stack(out).astype(np.uint8)


def test_mask_box():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    np.testing.assert_array_equal(mask_box(m, 1), [2, 1, 9, 5])
    np.testing.assert_array_equal(mask_box(m, 5), [0, 0, 11, 9])
    assert mask_box(np.zeros((4, 4), bool), 2) is None


def test_propagates_from_the_largest_slice_with_the_previous_masks_box():
    radii = [6, 8, 10, 12, 10, 8, 6]
    slices = _stack(len(radii), lambda z: radii[z])
    prompts = [SlicePrompt(z + 10, np.array([0, 0, 47, 47], np.float32)) for z in range(7)]
    session = Recording(RandomWalkerMasker(RandomWalkerConfig()), slices)
    positions, probs, scores = propagate(session, prompts, areas=[r * r for r in radii], margin=2)
    assert positions == list(range(7)) and probs.shape == (7, 48, 48) and scores is None
    first_positions, first_box = session.calls[0]
    assert first_positions == [3]  # the student's largest slice, with the student's box
    np.testing.assert_array_equal(first_box[0], prompts[3].box)
    order = [c[0][0] for c in session.calls]
    assert order == [3, 4, 5, 6, 2, 1, 0]  # up first, then down, each from its neighbour
    for (_, box), prev in zip(session.calls[1:], [3, 4, 5, 3, 2, 1]):
        expect = mask_box(probs[positions.index(prev)] > 0.5, 2)
        np.testing.assert_array_equal(box[0], expect)
    # the propagated boxes are tight around the disks, not the student's whole-slice box
    assert all(b[0][2] - b[0][0] < 40 for _, b in session.calls[1:])


class Vanishing(MaskerSession):
    """The random walker's answers, emptied on slices whose image holds no bright disk."""

    def mask(self, positions, prompts):
        probs, scores = super().mask(positions, prompts)
        for i, pos in enumerate(positions):
            if self.slices[pos].max() < 150:
                probs[i] = 0.0
        return probs, scores


def test_stops_where_the_mask_vanishes():
    radii = [0, 0, 8, 10, 8, 0, 9]  # the student overshoots; slice 6 is past a gap
    slices = _stack(len(radii), lambda z: radii[z])
    prompts = [SlicePrompt(z, np.array([4, 4, 44, 44], np.float32)) for z in range(7)]
    session = Vanishing(RandomWalkerMasker(RandomWalkerConfig()), slices)
    positions, probs, _ = propagate(session, prompts, areas=[1, 1, 5, 9, 5, 1, 1], margin=2)
    assert positions == [1, 2, 3, 4, 5]  # each direction stops after its first empty mask
    assert not (probs[[0, 4]] > 0.5).any()


class RecordedVanishing(Recording, Vanishing):
    """`Vanishing`, remembering every call as `Recording` does."""


def test_an_ended_chain_can_vote_background_on_the_students_remaining_slices():
    radii = [0, 0, 8, 10, 8, 0, 9]  # as above: the masker ends the structure at slices 1 and 5
    slices = _stack(len(radii), lambda z: radii[z])
    prompts = [SlicePrompt(z, np.array([4, 4, 44, 44], np.float32)) for z in range(7)]
    session = RecordedVanishing(RandomWalkerMasker(RandomWalkerConfig()), slices)
    kept, p_kept, _ = propagate(session, prompts, areas=[1, 1, 5, 9, 5, 1, 1], margin=2)
    calls = len(session.calls)
    positions, probs, _ = propagate(session, prompts, areas=[1, 1, 5, 9, 5, 1, 1], margin=2,
                                    end="background")
    assert kept == [1, 2, 3, 4, 5] and positions == list(range(7))
    assert not probs[[0, 6]].any()  # slice 6 holds a disk, but the chain had ended before it
    np.testing.assert_array_equal(probs[1:6], p_kept)
    visited = sorted(p for c in session.calls[calls:] for p in c[0])
    assert visited == [1, 2, 3, 4, 5]  # the ended slices cost no masker call


def test_start_is_where_masker_and_student_agree_not_the_largest_slice():
    from semisam.workers.propagation import choose_start

    slices = _stack(3, lambda z: 10)
    yy, xx = np.mgrid[0:48, 0:48]
    disk = (yy - 24) ** 2 + (xx - 24) ** 2 <= 100
    wrong = np.zeros((48, 48), bool)
    wrong[10:40, 2:20] = True  # the student's largest slice: mostly beside the structure
    student = np.stack([wrong, disk, disk[:, ::-1] & (xx < 24)])  # last: half the disk, too small
    prompts = [SlicePrompt(z, np.array([4, 4, 44, 44], np.float32)) for z in range(3)]
    session = MaskerSession(RandomWalkerMasker(RandomWalkerConfig()), slices)
    assert int(np.argmax(student.reshape(3, -1).sum(axis=1))) == 0
    assert choose_start(session, prompts, student) == 1


def test_starts_are_ranked_by_agreement_and_kept_apart():
    from semisam.workers.propagation import choose_starts

    slices = _stack(6, lambda z: 10)
    yy, xx = np.mgrid[0:48, 0:48]
    disk = (yy - 24) ** 2 + (xx - 24) ** 2 <= 100
    off = np.zeros((48, 48), bool)
    off[10:40, 2:20] = True  # beside the structure: the masker disagrees there
    student = np.stack([disk, disk, off, disk, off, disk])
    prompts = [SlicePrompt(z * 4, np.array([4, 4, 44, 44], np.float32)) for z in range(6)]
    session = MaskerSession(RandomWalkerMasker(RandomWalkerConfig()), slices)
    starts = choose_starts(session, prompts, student, count=3, spacing=6)
    assert len(starts) == 3 and not {2, 4} & set(starts)  # the agreeing slices only
    idx = sorted(prompts[s].index for s in starts)
    assert all(b - a >= 6 for a, b in zip(idx, idx[1:]))
    assert choose_starts(session, prompts, student, count=6, spacing=100) == starts[:1]


def test_chains_vote_each_missing_chain_counts_zero():
    from semisam.workers.propagation import propagate_chains

    radii = [0, 0, 8, 10, 8, 0, 9]
    slices = _stack(len(radii), lambda z: radii[z])
    prompts = [SlicePrompt(z, np.array([4, 4, 44, 44], np.float32)) for z in range(7)]
    session = Vanishing(RandomWalkerMasker(RandomWalkerConfig()), slices)
    areas = [1, 1, 5, 9, 5, 1, 1]
    one, p_one, _ = propagate(session, prompts, areas, margin=2, start=3)
    six, p_six, _ = propagate(session, prompts, areas, margin=2, start=6)
    positions, probs, _ = propagate_chains(session, prompts, areas, 2, [3, 6])
    assert positions == sorted(set(one) | set(six))
    for k, pos in enumerate(positions):
        a = p_one[one.index(pos)] if pos in one else 0.0
        b = p_six[six.index(pos)] if pos in six else 0.0
        np.testing.assert_allclose(probs[k], (a + b) / 2, atol=1e-6)
    single, p_single, _ = propagate_chains(session, prompts, areas, 2, [3])
    assert single == one and np.array_equal(p_single, p_one)


def test_largest_starts_rank_by_area_and_keep_apart():
    from semisam.workers.propagation import largest_starts

    prompts = [SlicePrompt(z * 3, np.array([0, 0, 9, 9], np.float32)) for z in range(8)]
    areas = [5, 40, 38, 10, 30, 20, 35, 1]  # slice indices 0, 3, ..., 21
    assert largest_starts(prompts, areas, count=1) == [1]
    # 2 (index 6) and 4 (index 12) lie within 10 of 1 (index 3) or 6 (index 18)
    assert largest_starts(prompts, areas, count=3, spacing=10) == [1, 6]
    assert largest_starts(prompts, areas, count=3, spacing=1) == [1, 2, 6]
