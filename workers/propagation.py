"""Box propagation along the slice axis: the masker's own mask of one slice prompts the next.

The student's localization is trusted once, on the slice where its foreground is largest (the
most reliable box); from there, in both directions, each next slice is prompted with the box
of the masker's mask on the slice before it, grown by ``margin`` pixels. Propagation stays
within the slices the student prompts and stops in a direction where the masker's mask
vanishes. This is how MedSAM's 3D inference walks a volume from the middle slice, with the
student's box in place of a user's. Measured on Left Atrium with LiteMedSAM it removes the
student's two failure modes for a box-prompted SAM: slices past the structure's end (a box
there makes SAM segment whatever it holds) and boxes swollen by false-positive structures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .maskers.base import MaskerSession, SlicePrompt
from .metrics import dice

__all__ = ["choose_start", "choose_starts", "clip_box", "largest_starts", "mask_box", "propagate",
           "propagate_chains", "spaced_starts"]

logger = logging.getLogger(__name__)


def mask_box(mask: np.ndarray, margin: int) -> np.ndarray | None:
    """XYXY box (pixels, inclusive) of an ``HxW`` bool mask grown by ``margin``, clipped to the
    slice; None when the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    return np.array([max(cols[0] - margin, 0), max(rows[0] - margin, 0),
                     min(cols[-1] + margin, w - 1), min(rows[-1] + margin, h - 1)], np.float32)


def clip_box(box: np.ndarray, bound: np.ndarray) -> np.ndarray | None:
    """The part of XYXY ``box`` inside XYXY ``bound``, or None when they do not overlap."""
    x0, y0 = max(box[0], bound[0]), max(box[1], bound[1])
    x1, y1 = min(box[2], bound[2]), min(box[3], bound[3])
    if x1 < x0 or y1 < y0:
        return None
    return np.array([x0, y0, x1, y1], np.float32)


def choose_starts(session: MaskerSession, prompts: Sequence[SlicePrompt], student: np.ndarray,
                  count: int = 1, spacing: int = 10, min_area_fraction: float = 0.5,
                  threshold: float = 0.5) -> list[int]:
    """Up to ``count`` stack positions to start propagation from, best first: among the slices
    whose student area is at least ``min_area_fraction`` of the largest, ranked by how well the
    masker, prompted with the student's box, agrees (Dice) with the student's mask (where both
    see the same structure); each next one at least ``spacing`` slice indices from those
    already taken.

    Args:
        student: ``NxHxW`` bool student foreground of the prompted slices.
    """
    areas = student.reshape(len(student), -1).sum(axis=1)
    eligible = np.flatnonzero(areas >= min_area_fraction * areas.max())
    probs, _ = session.mask(eligible.tolist(), [prompts[i] for i in eligible])
    agreement = np.array([dice(p > threshold, student[i]) for p, i in zip(probs, eligible)])
    return spaced_starts(eligible[np.argsort(-agreement, kind="stable")], prompts, count, spacing)


def largest_starts(prompts: Sequence[SlicePrompt], areas: Sequence[int], count: int = 1,
                   spacing: int = 10) -> list[int]:
    """Up to ``count`` stack positions with the largest student areas (``areas``: N pixel
    counts), each at least ``spacing`` slice indices from those already taken
    (``prompts.propagate_start`` 'largest')."""
    return spaced_starts(np.argsort(-np.asarray(areas), kind="stable"), prompts, count, spacing)


def spaced_starts(ranked: Sequence[int], prompts: Sequence[SlicePrompt], count: int,
                  spacing: int) -> list[int]:
    """The first ``count`` of the stack positions ``ranked`` (best first) that lie at least
    ``spacing`` slice indices from every position taken before them."""
    picked: list[int] = []
    for pos in ranked:
        if all(abs(prompts[pos].index - prompts[q].index) >= spacing for q in picked):
            picked.append(int(pos))
        if len(picked) == count:
            break
    return picked


def choose_start(session: MaskerSession, prompts: Sequence[SlicePrompt], student: np.ndarray,
                 min_area_fraction: float = 0.5, threshold: float = 0.5) -> int:
    """The best single start of `choose_starts`."""
    return choose_starts(session, prompts, student, 1, 1, min_area_fraction, threshold)[0]


def propagate_chains(session: MaskerSession, prompts: Sequence[SlicePrompt], areas: Sequence[int],
                     margin: int, starts: Sequence[int], threshold: float = 0.5,
                     within_student: bool = True, end: str = "student"
                     ) -> tuple[list[int], np.ndarray, np.ndarray | None]:
    """`propagate` from each of ``starts`` (several chains), then per slice the mean of the
    chains' probabilities, a chain that did not reach the slice counting 0 there: a soft vote,
    so one chain that followed a neighbouring structure or stopped early is outvoted. Measured
    on LA with LiteMedSAM (3 chains, docs/benchmarks.md) it beats the single chain.

    Returns:
        ``(positions, probs, scores)`` as `propagate`; a slice's score is the mean over the
        chains that reached it.
    """
    if len(starts) <= 1:
        return propagate(session, prompts, areas, margin, threshold, within_student,
                         start=starts[0] if starts else None, end=end)
    total: dict[int, np.ndarray] = {}
    chain_scores: dict[int, list[float]] = {}
    have_scores = True
    for start in starts:
        positions, probs, scores = propagate(session, prompts, areas, margin, threshold,
                                             within_student, start=start, end=end)
        have_scores = have_scores and scores is not None
        for k, pos in enumerate(positions):
            total[pos] = total[pos] + probs[k] if pos in total else probs[k].astype(np.float32)
            if scores is not None:
                chain_scores.setdefault(pos, []).append(float(scores[k]))
    keys = sorted(total)
    stacked = np.stack([total[k] / len(starts) for k in keys])
    return keys, stacked, (np.array([np.mean(chain_scores[k]) for k in keys], np.float32)
                           if have_scores else None)


def propagate(session: MaskerSession, prompts: Sequence[SlicePrompt], areas: Sequence[int],
              margin: int, threshold: float = 0.5, within_student: bool = True,
              start: int | None = None, student: np.ndarray | None = None,
              min_agreement: float = 0.0, end: str = "student"
              ) -> tuple[list[int], np.ndarray, np.ndarray | None]:
    """Mask the prompted slices by propagation from the student's largest slice.

    Args:
        session: the masker over the stack of the N prompted slices (``session.mask``).
        prompts: the student's N prompts, in stack order (increasing slice index).
        areas: N student foreground pixel counts of those slices (the start is the largest).
        margin: pixels added around each propagated mask's box.
        threshold: masker probability above which a pixel is in the propagated mask.
        within_student: clip each propagated box to the student's own box of that slice (the
            masker's mask cannot drift onto a neighbouring structure the student does not
            see; it can only trim the student's box); no overlap stops that direction.
        start: the stack position to start from (e.g. `choose_start`); None = the largest.
        student: ``NxHxW`` bool student foreground, needed with ``min_agreement``.
        min_agreement: a propagated mask whose Dice with the student's slice is below this
            stops that direction (the slice goes back to the student): the chain has left the
            structure the student sees.
        end: where a direction stops because the masker's mask vanished (or, with
            ``within_student``, its box left the student's), the student's remaining prompted
            slices that way: 'student' = not visited (they keep the student's answer),
            'background' = visited with probability 0 and score 0 (the masker has said the
            structure ended there; `prompts.propagate_end`).

    Returns:
        ``(positions, probs, scores)``: the stack positions visited (increasing), their
        ``MxHxW`` masker probabilities and ``M`` scores (None if the masker has none).
    """
    n = len(prompts)
    if n == 0:
        return [], np.zeros((0, 0, 0), np.float32), None
    if len(areas) != n:
        raise ValueError(f"got {n} prompts but {len(areas)} slice areas")
    index_at = {p.index: i for i, p in enumerate(prompts)}
    start = int(np.argmax(areas)) if start is None else int(start)
    probs, scores = session.mask([start], [prompts[start]])
    out: dict[int, tuple[np.ndarray, float | None]] = {
        start: (probs[0], None if scores is None else float(scores[0]))}
    for step in (1, -1):
        prev, z = probs[0], prompts[start].index + step
        while z in index_at:
            box = mask_box(prev > threshold, margin)
            pos = index_at.get(z)
            if box is not None and within_student:
                box = clip_box(box, np.asarray(prompts[pos].box, np.float32))
            if box is None:
                if end == "background":
                    _end_as_background(out, index_at, z, step, prev.shape)
                break
            p, s = session.mask([pos], [SlicePrompt(z, box)])
            if min_agreement > 0 and student is not None and \
                    dice(p[0] > threshold, student[pos]) < min_agreement:
                break
            out[pos] = (p[0], None if s is None else float(s[0]))
            prev, z = p[0], z + step
    positions = sorted(out)
    logger.debug("propagated over %d of %d prompted slices from slice %d", len(positions), n,
                 prompts[start].index)
    stacked = np.stack([out[i][0] for i in positions])
    have_scores = all(out[i][1] is not None for i in positions)
    return positions, stacked, (np.array([out[i][1] for i in positions], np.float32)
                                if have_scores else None)


def _end_as_background(out: dict[int, tuple[np.ndarray, float | None]],
                       index_at: dict[int, int], z: int, step: int,
                       shape: tuple[int, ...]) -> None:
    """`propagate` with ``end`` 'background': the prompted slices from slice index ``z`` on in
    direction ``step`` (while the student prompts them; ``index_at``: slice index -> stack
    position) enter ``out`` with an all-zero ``HxW`` probability of ``shape`` and score 0,
    unless a slice is already there."""
    while z in index_at:
        out.setdefault(index_at[z], (np.zeros(shape, np.float32), 0.0))
        z += step
