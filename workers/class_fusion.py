"""Several structures: per-class fused labels combined into one label map and one confidence.

A K-class round runs the one-structure pipeline once per class ``c`` (the student's softmax
channel ``c`` as its foreground probability: prompts, masker, `fusion.fuse`), which gives per
class a binary label ``L_c`` and a confidence ``C_c`` (how sure the fused vote is that the voxel
is, or is not, class ``c``). They are combined voxel by voxel:

- a voxel no ``L_c`` claims is background, with confidence ``min_c C_c`` (every class must be
  sure it is not there);
- a voxel one ``L_c`` claims is class ``c``, with confidence ``C_c``;
- a voxel several ``L_c`` claim (touching structures, where two classes' masks overlap) goes to
  the claiming class whose vote is most certain (highest ``C_c``); equal confidences go to the
  class with the higher student probability, then to the lower class value. Its confidence is
  that class's ``C_c`` minus the runner-up's (an overlap is a disagreement).

Labels never change class: the map is written in the store's class values (``values[c - 1]``
for channel ``c``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["combine_classes"]


def combine_classes(labels: Sequence[np.ndarray], confidences: Sequence[np.ndarray],
                    student: np.ndarray, values: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One label map and confidence from K per-class fused results.

    Args:
        labels: K ``XxYxZ`` bool/{0,1} fused labels, class ``k`` = channel ``k + 1``.
        confidences: K ``XxYxZ`` float32 confidences in [0, 1] of those labels.
        student: ``(K+1)xXxYxZ`` student softmax (tie-break between claiming classes).
        values: K store class values, ``values[k]`` for channel ``k + 1``.

    Returns:
        ``(label, confidence)``: ``XxYxZ`` uint8 class values (0 background) and ``XxYxZ``
        float32 in [0, 1] (rules in the module docstring).
    """
    if not (len(labels) == len(confidences) == len(values) == student.shape[0] - 1):
        raise ValueError(f"{len(labels)} labels, {len(confidences)} confidences, {len(values)} "
                         f"values for a {student.shape[0]}-channel student")
    claim = np.stack([np.asarray(lab, bool) for lab in labels])  # KxXxYxZ
    conf = np.stack([np.asarray(c, np.float32) for c in confidences])
    # rank claiming classes: confidence first, then the student's probability (lexicographic
    # through a tiny weight: both lie in [0, 1]), non-claiming classes below every claimant
    rank = np.where(claim, conf + 1e-4 * student[1:], -1.0)
    winner = np.argmax(rank, axis=0)  # first maximum: the lower class value on exact ties
    claimed = claim.any(axis=0)
    lut = np.asarray([0, *values], np.uint8)
    label = np.where(claimed, lut[winner + 1], 0).astype(np.uint8)
    best = np.take_along_axis(conf, winner[None], axis=0)[0]
    confidence = np.where(claimed, best, conf.min(axis=0))
    overlap = claim.sum(axis=0) > 1
    if overlap.any():
        ranked = np.sort(np.where(claim, conf, -np.inf), axis=0)
        runner_up = ranked[-2]
        confidence = np.where(overlap, np.clip(best - runner_up, 0.0, 1.0), confidence)
    return label, confidence.astype(np.float32)
