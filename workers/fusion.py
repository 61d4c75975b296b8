"""Fusion: masker and student probabilities become a pseudo-label and a per-voxel confidence.

Notation: ``p_s`` is the student's foreground probability, ``p_m`` the masker's (prompted slices
only), ``t`` the masker threshold (`FusionConfig.masker_threshold`), ``T = 0.5`` the student
threshold (`STUDENT_THRESHOLD`). Probabilities are clipped to [0, 1] first.

Pseudo-label (uint8 {0, 1}), by `FusionMode`, on prompted slices:

- ``masker_on_prompted``: ``p_m > t``;
- ``intersection``: ``p_m > t and p_s > T``;
- ``union``: ``p_m > t or p_s > T``;
- ``average``: ``p_f > 0.5`` with ``p_f = w * p_m + (1 - w) * p_s``, ``w`` =
  `FusionConfig.masker_weight` (a soft vote of two views of the slice);

and ``p_s > T`` on every other slice. With `FusionConfig.largest_component` (the default of
LiteMedSAM rounds) only the largest 26-connected component of that label is kept, and the
voxels it removes get confidence 0. With `FusionConfig.min_student_agreement` (LiteMedSAM rounds:
0.4) a fused label whose Dice with the student's largest component is below it is replaced by
the student's answer, ``p_s > T`` with its confidence, everywhere: the masker's propagation has
followed another structure (measured on LA, docs/benchmarks.md); the record says so
(`VolumeStats.masker_rejected`).

Multi-planar rounds (`PromptConfig.extra_axes`) give the masker's answer along several slice axes
(`MaskerView`); ``p_m`` of a voxel is then the mean over the views whose prompted slices contain
it, and "prompted" means covered by at least one view (`masker_volume`). With one axis this is
the per-slice rule above.

Confidence (float in [0, 1], stored as uint8 ``round(c * CONFIDENCE_SCALE)``):

- prompted slices, modes ``masker_on_prompted``, ``intersection``, ``union``:
  ``c = margin_t(p_m) * (1 - |p_m - p_s|)``, the masker's certainty times the student-masker
  agreement;
- prompted slices, mode ``average``: ``c = margin_0.5(p_f)``, the certainty of the vote (high
  only where both are confident and agree; for ``w = 0.5`` it is ``|p_m + p_s - 1|``);
- other slices: ``c = margin_T(p_s)``, the student's own certainty;

where ``margin_t(p) = (p - t) / (1 - t)`` for ``p >= t`` and ``(t - p) / t`` below: 0 at the
threshold, 1 at p = 0 or 1 (``|2p - 1|`` for t = 0.5). So a masker at its threshold, or a masker
and student that disagree completely, give confidence 0. The training stage weights its SAM
consistency loss voxel by voxel with this value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from semisam.schemas import CONFIDENCE_SCALE, FusionConfig, FusionMode, VolumeStats

from .metrics import dice, largest_component

__all__ = ["STUDENT_THRESHOLD", "FusionResult", "MaskerView", "masker_volume", "confidence_from_uint8",
           "confidence_to_uint8", "fuse", "fuse_views", "gate_view", "margin", "volume_stats"]

logger = logging.getLogger(__name__)

STUDENT_THRESHOLD = 0.5


@dataclass(frozen=True)
class FusionResult:
    """One volume's fused outputs.

    Attributes:
        pseudo_label: ``XxYxZ`` uint8 {0, 1} (a volume of several structures: class values).
        confidence: ``XxYxZ`` uint8, ``v / CONFIDENCE_SCALE`` is the confidence in [0, 1].
        stats: per-volume statistics (see `volume_stats`).
    """

    pseudo_label: np.ndarray
    confidence: np.ndarray
    stats: VolumeStats


@dataclass(frozen=True)
class MaskerView:
    """The masker's answer along one slice axis.

    Attributes:
        axis: the slice axis of the volume.
        indices: N unique slice indices along ``axis``.
        prob: ``NxHxW`` float masker probabilities in [0, 1], in the frame of
            `semisam.workers.localization.stack_slices` (None: no slices).
        scores: ``N`` float masker quality scores of the slices (SAM-family: the decoder's
            predicted IoU), or None when the masker has none.
    """

    axis: int
    indices: list[int]
    prob: np.ndarray | None
    scores: np.ndarray | None = None


def masker_volume(shape: tuple[int, int, int], views: Sequence[MaskerView]) -> tuple[np.ndarray, np.ndarray]:
    """Combine masker views into one volume.

    Returns:
        ``(p_m, covered)``: ``XxYxZ`` float32 mean probability over the views whose slices contain
        each voxel (0 where none does) and ``XxYxZ`` bool coverage.
    """
    total = np.zeros(shape, np.float32)
    count = np.zeros(shape, np.uint8)
    for view in views:
        if not len(view.indices):
            continue
        idx = np.asarray(view.indices, np.int64)
        np.moveaxis(total, view.axis, 0)[idx] += np.asarray(view.prob, np.float32)
        np.moveaxis(count, view.axis, 0)[idx] += 1
    np.divide(total, np.maximum(count, 1), out=total)  # uncovered: 0 / 1 == 0
    return total, count > 0


def gate_view(view: MaskerView, scores: np.ndarray | None, min_score: float) -> MaskerView:
    """``view`` without the slices whose masker score is below ``min_score`` (the student's
    answer stands there); unchanged without scores or with ``min_score`` 0.

    Raises:
        ValueError: ``scores`` does not hold one finite value per slice of the view.
    """
    if scores is None or min_score <= 0:
        return view
    scores = np.asarray(scores, np.float32).reshape(-1)
    if scores.shape[0] != len(view.indices) or not np.isfinite(scores).all():
        raise ValueError(f"scores must hold {len(view.indices)} finite values (one per prompted "
                         f"slice), got shape {scores.shape}")
    keep = scores >= min_score
    if keep.all():
        return view
    logger.debug("axis %d: %d of %d masker slices below score %.2f left to the student",
                 view.axis, int((~keep).sum()), keep.size, min_score)
    return MaskerView(view.axis, [i for i, k in zip(view.indices, keep) if k],
                      np.asarray(view.prob)[keep])


def margin(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Certainty of a thresholded probability: 0 at ``threshold``, 1 at 0 or 1 (same shape)."""
    prob = np.asarray(prob, np.float32)
    above, below = np.empty_like(prob), np.empty_like(prob)
    np.divide(np.subtract(prob, threshold, out=above), 1.0 - threshold, out=above)
    np.divide(np.subtract(threshold, prob, out=below), threshold, out=below)
    np.maximum(above, below, out=above)  # of the two formulas, the one for prob's side is >= 0
    return np.clip(above, 0.0, 1.0, out=above)


def confidence_to_uint8(confidence: np.ndarray) -> np.ndarray:
    """Encode a confidence in [0, 1] as uint8 ``round(c * CONFIDENCE_SCALE)`` (same shape).

    Raises:
        ValueError: the confidence holds NaN or inf.
    """
    c = np.asarray(confidence, np.float32)
    if not np.isfinite(c).all():
        raise ValueError(f"confidence holds {int((~np.isfinite(c)).sum())} non-finite values")
    return _encode(c)


def _encode(confidence: np.ndarray) -> np.ndarray:
    """`confidence_to_uint8` of a float32 confidence known to be finite."""
    out = np.clip(confidence, 0.0, 1.0)
    np.multiply(out, CONFIDENCE_SCALE, out=out)
    return np.rint(out, out=out).astype(np.uint8)


def confidence_from_uint8(encoded: np.ndarray) -> np.ndarray:
    """Decode a stored uint8 confidence to float32 in [0, 1] (same shape)."""
    return np.asarray(encoded, np.float32) / np.float32(CONFIDENCE_SCALE)


def _check_inputs(
    student_prob: np.ndarray, masker_prob: np.ndarray | None, prompted: Sequence[int], axis: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Validated float32 ``(student XxYxZ, masker NxHxW, prompted indices)``."""
    student = np.asarray(student_prob, np.float32)
    if student.ndim != 3:
        raise ValueError(f"student_prob must be XxYxZ (3D), got shape {student.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis}")
    indices = [int(i) for i in prompted]
    if len(set(indices)) != len(indices):
        raise ValueError(f"prompted slice indices must be unique, got {indices}")
    plane = tuple(s for a, s in enumerate(student.shape) if a != axis)
    if masker_prob is None:
        if indices:
            raise ValueError(f"masker_prob is None but {len(indices)} slices were prompted")
        masker = np.zeros((0,) + plane, np.float32)
    else:
        masker = np.asarray(masker_prob, np.float32)
    if masker.shape != (len(indices),) + plane:
        raise ValueError(
            f"masker_prob must have shape {(len(indices),) + plane} (prompted slices x plane), "
            f"got {masker.shape}"
        )
    for name, arr in (("student_prob", student), ("masker_prob", masker)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} non-finite values")
    return np.clip(student, 0.0, 1.0), np.clip(masker, 0.0, 1.0), indices


def _fuse_prompted(
    student: np.ndarray, masker: np.ndarray, config: FusionConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(bool label, float32 confidence) of prompted voxels, elementwise (any equal shapes)."""
    if config.mode == FusionMode.average:
        fused = config.masker_weight * masker
        fused += (1.0 - config.masker_weight) * student
        return fused > 0.5, margin(fused, 0.5)
    masker_fg = masker > config.masker_threshold
    student_fg = student > STUDENT_THRESHOLD
    if config.mode == FusionMode.masker_on_prompted:
        label = masker_fg
    elif config.mode == FusionMode.intersection:
        label = masker_fg & student_fg
    elif config.mode == FusionMode.union:
        label = masker_fg | student_fg
    else:  # pragma: no cover - the enum is closed
        raise ValueError(f"unknown fusion mode {config.mode!r}")
    agreement = np.subtract(masker, student)
    np.abs(agreement, out=agreement)
    np.subtract(1.0, agreement, out=agreement)
    confidence = margin(masker, config.masker_threshold)
    return label, np.multiply(confidence, agreement, out=confidence)


def fuse(student_prob: np.ndarray, masker_prob: np.ndarray | None, prompted: Sequence[int],
         config: FusionConfig, slice_axis: int, extra_views: Sequence[MaskerView] = (),
         scores: np.ndarray | None = None, extra_scores: Sequence[np.ndarray | None] = ()
         ) -> FusionResult:
    """`fuse_views` with the main axis's answer given as arrays.

    Args:
        student_prob: ``XxYxZ`` float student foreground probability in [0, 1].
        masker_prob: ``NxHxW`` float masker probability for the N ``prompted`` slices, in the
            frame of `semisam.workers.localization.stack_slices`; None (or N = 0) if none.
        prompted: N unique slice indices along ``slice_axis``.
        config: fusion mode and masker threshold.
        slice_axis: the axis the slices were taken along.
        extra_views: the masker's answers along further axes (multi-planar rounds).
        scores: ``N`` masker quality scores of the prompted slices, or None.
        extra_scores: the same for each of ``extra_views`` (None entries, or none given: the
            view's own ``scores``).

    Raises:
        ValueError: shapes disagree, indices repeat or values are not finite.
    """
    extra = [replace(v, scores=extra_scores[i]) if i < len(extra_scores) else v
             for i, v in enumerate(extra_views)]
    return fuse_views(student_prob, MaskerView(slice_axis, list(prompted), masker_prob, scores),
                      extra, config)


def fuse_views(student_prob: np.ndarray, main: MaskerView, extra: Sequence[MaskerView],
               config: FusionConfig) -> FusionResult:
    """Fuse the student's and the masker's probabilities into a pseudo-label and confidence.

    Args:
        student_prob: ``XxYxZ`` float student foreground probability in [0, 1].
        main: the masker's answer along the round's slice axis (``main.axis``; no indices and
            ``prob`` None when it prompted nothing there).
        extra: its answers along further axes (multi-planar rounds).
        config: fusion mode, masker threshold, score gate, component and student guards.

    Views' ``scores`` (SAM-family: the decoder's predicted IoU): slices scoring below
    ``config.min_masker_score`` are left to the student (`gate_view`); the mean score of every
    masked slice goes into the statistics.

    Returns:
        The pseudo-label, the uint8 confidence and the volume's statistics (formulas in the
        module docstring; ``slices_total`` counts ``main``'s axis and each of ``extra``'s).

    Raises:
        ValueError: shapes disagree, indices repeat or values are not finite.
    """
    student, main, extra = _checked_views(student_prob, main, extra)
    all_scores = [v.scores for v in (main, *extra) if v.scores is not None and len(v.scores)]
    main = gate_view(main, main.scores, config.min_masker_score)
    extra = [gate_view(v, v.scores, config.min_masker_score) for v in extra]
    m, covered = masker_volume(student.shape, [main, *extra])
    label, confidence = _vote(student, m, covered, config)
    agreement, rejected = None, False
    if covered.any():
        label, confidence, agreement, rejected = _student_guard(student, label, confidence, config)
    pseudo_label = label.view(np.uint8)  # bool is one byte, 0 or 1
    stats = volume_stats(pseudo_label, confidence, student, main.prob, main.indices, config,
                         main.axis, extra, combined=(m, covered))
    stats.fused_student_dice, stats.masker_rejected = agreement, rejected
    if all_scores:
        stats.masker_score = float(np.mean(np.concatenate(all_scores), dtype=np.float64))
    logger.debug("fused %d prompted slices: %s", len(main.indices), stats)
    return FusionResult(pseudo_label, _encode(confidence), stats)  # finite: inputs are checked


def _checked_views(student_prob: np.ndarray, main: MaskerView, extra: Sequence[MaskerView]
                   ) -> tuple[np.ndarray, MaskerView, list[MaskerView]]:
    """The clipped float32 student and the validated, clipped views (`_check_inputs`)."""
    student, prob, indices = _check_inputs(student_prob, main.prob, main.indices, main.axis)
    checked = []
    for view in extra:
        _, view_prob, view_indices = _check_inputs(student, view.prob, view.indices, view.axis)
        checked.append(MaskerView(view.axis, view_indices, view_prob, view.scores))
    return student, MaskerView(main.axis, indices, prob, main.scores), checked


def _vote(student: np.ndarray, masker: np.ndarray, covered: np.ndarray, config: FusionConfig
          ) -> tuple[np.ndarray, np.ndarray]:
    """(``XxYxZ`` bool label, float32 confidence): `_fuse_prompted` where ``covered`` (the
    view-averaged masker ``masker``), the student's own answer elsewhere; with
    ``config.largest_component`` only the largest component, removed voxels at confidence 0."""
    label = student > STUDENT_THRESHOLD
    confidence = margin(student, STUDENT_THRESHOLD)
    if covered.any():
        # whole-volume elementwise passes, then a masked copy: cheaper than gathering the
        # covered voxels and scattering them back, and the same values voxel by voxel
        prompted_label, prompted_confidence = _fuse_prompted(student, masker, config)
        np.copyto(label, prompted_label, where=covered)
        np.copyto(confidence, prompted_confidence, where=covered)
    if config.largest_component:
        keep = largest_component(label)
        np.copyto(confidence, 0.0, where=label & ~keep)
        label = keep
    return label, confidence


def _student_guard(student: np.ndarray, label: np.ndarray, confidence: np.ndarray,
                   config: FusionConfig) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """``(label, confidence, Dice with the student's largest component, rejected)``: the
    student's answer (its largest component with ``config.largest_component``) in place of a
    fused label whose Dice with the student's largest component is below
    ``config.min_student_agreement`` (the masker left the student's structure)."""
    student_fg = student > STUDENT_THRESHOLD
    structure = largest_component(student_fg)
    agreement = dice(label, structure)
    if not agreement < config.min_student_agreement:
        return label, confidence, agreement, False
    confidence = margin(student, STUDENT_THRESHOLD)
    label = student_fg
    if config.largest_component:
        np.copyto(confidence, 0.0, where=student_fg & ~structure)
        label = structure
    logger.info("fused label agrees with the student's structure at Dice %.3f < %.3f: "
                "the student's answer is kept", agreement, config.min_student_agreement)
    return label, confidence, agreement, True


def volume_stats(pseudo_label: np.ndarray, confidence: np.ndarray, student_prob: np.ndarray,
                 masker_prob: np.ndarray | None, prompted: Sequence[int], config: FusionConfig,
                 slice_axis: int, extra_views: Sequence[MaskerView] = (),
                 combined: tuple[np.ndarray, np.ndarray] | None = None) -> VolumeStats:
    """Per-volume statistics of a fused result.

    Args:
        pseudo_label: ``XxYxZ`` {0, 1} pseudo-label.
        confidence: ``XxYxZ`` float confidence in [0, 1] (before uint8 encoding).
        student_prob: ``XxYxZ`` student probability.
        masker_prob: ``NxHxW`` masker probability of the ``prompted`` slices (or None).
        prompted: N slice indices along ``slice_axis``.
        config: gives the masker threshold.
        slice_axis: the slice axis.
        extra_views: the masker's answers along further axes.
        combined: `masker_volume` of these views when the caller already has it.

    Returns:
        Slice counts (summed over the axes), foreground voxels and fraction of the
        pseudo-label, mean confidence, and the Dice of ``student > 0.5`` vs ``masker >
        threshold`` over all prompted voxels together (the view-averaged masker where views
        overlap; 1.0 when both are empty there; None without prompted slices).
    """
    indices = [int(i) for i in prompted]
    foreground = int(np.count_nonzero(pseudo_label))
    mean_confidence = float(np.mean(confidence, dtype=np.float64)) if np.size(confidence) else 0.0
    views = [MaskerView(slice_axis, indices, masker_prob)] if indices and masker_prob is not None else []
    views += [v for v in extra_views if len(v.indices)]
    agreement = None
    if views:
        m, covered = combined if combined is not None else masker_volume(np.shape(pseudo_label), views)
        student_fg = np.asarray(student_prob) > STUDENT_THRESHOLD
        student_fg &= covered
        masker_fg = m > config.masker_threshold
        masker_fg &= covered
        agreement = dice(student_fg, masker_fg)
    axes = [slice_axis, *(v.axis for v in extra_views)]
    return VolumeStats(
        slices_total=sum(int(np.shape(pseudo_label)[a]) for a in axes),
        slices_prompted=len(indices) + sum(len(v.indices) for v in extra_views),
        foreground_voxels=foreground,
        foreground_fraction=foreground / max(int(np.size(pseudo_label)), 1),
        mean_confidence=mean_confidence,
        student_masker_dice=agreement,
    )
