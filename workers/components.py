"""Which 3D component of the student's foreground is the structure.

By default the largest (26-connected) component is. With a `StructurePrior` from the labeled
volumes, each component is scored by how well its centroid (normalised array coordinates) and its
physical volume (ln mm^3) fit the prior's Gaussians (`prior_score`); the largest component stays
the structure unless it is implausible (score below `PLAUSIBLE_SCORE`, i.e. more than three
spreads from the prior), and then the best-scoring component replaces it. A guard, not a new
rule: on LA the largest component scored -2.3 or better on all 51 volumes where it was the
atrium and -12.7 or worse on the 3 where it was not (docs/benchmarks.md); on phantoms whose
structures move across the field of view, a pure best-score rule picked a wrong component that
fitted the prior's location better. `keep_component` then lowers the student's probability on
the other components to the threshold, so that the prompts, the fusion and the confidence
(0 there) all follow the chosen structure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from semisam.schemas import RoundConfig
from semisam.schemas.prior import CENTROID_STD_FLOOR, LOG_VOLUME_STD_FLOOR, StructurePrior

from .metrics import largest_component

__all__ = ["COMPONENT_PRIOR_META_KEY", "PLAUSIBLE_SCORE", "choose_component", "fit_prior", "keep_component", "normalised_box", "normalised_centroid", "prior_score",
           "checkpoint_priors", "keep_prior_components", "store_priors", "with_store_priors"]

logger = logging.getLogger(__name__)

_CONNECTIVITY = np.ones((3, 3, 3), bool)

# the largest component is kept unless its `prior_score` is below this: a squared Mahalanobis
# distance of 9 over centroid and volume (three spreads)
PLAUSIBLE_SCORE = -4.5

# student checkpoint meta: class value (str) -> StructurePrior fields, fitted by `train` on the
# training store's labeled volumes
COMPONENT_PRIOR_META_KEY = "component_prior"


def normalised_centroid(mask: np.ndarray) -> tuple[float, float, float]:
    """Centroid of an ``XxYxZ`` bool mask in normalised array coordinates (0..1 per axis)."""
    coords = np.nonzero(mask)
    return tuple(float(np.mean(c)) / max(n - 1, 1) for c, n in zip(coords, mask.shape))  # type: ignore[return-value]


def normalised_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners of a non-empty ``XxYxZ`` bool mask's box as fractions of the array's
    extent per axis: voxel ``i`` of ``n`` spans ``[i/n, (i+1)/n)``."""
    coords = np.nonzero(mask)
    shape = np.asarray(mask.shape, np.float64)
    low = np.array([c.min() for c in coords], np.float64) / shape
    high = np.array([c.max() + 1 for c in coords], np.float64) / shape
    return low, high


def fit_prior(masks: Iterable[tuple[np.ndarray, Sequence[float]]]) -> StructurePrior | None:
    """The prior of one structure from labeled volumes.

    Args:
        masks: per labeled volume its ``XxYxZ`` bool mask of the structure and the voxel
            spacing in mm. Empty masks are left out.

    Returns:
        The prior, or None when no mask holds the structure.
    """
    centroids, log_volumes, lows, highs = [], [], [], []
    for mask, spacing in masks:
        count = int(np.count_nonzero(mask))
        if count == 0:
            continue
        centroids.append(normalised_centroid(mask))
        log_volumes.append(float(np.log(count * float(np.prod(spacing)))))
        low, high = normalised_box(mask)
        lows.append(low)
        highs.append(high)
    if not centroids:
        return None
    c = np.asarray(centroids, dtype=np.float64)
    return StructurePrior(
        volumes=len(centroids),
        centroid=tuple(float(v) for v in c.mean(axis=0)),
        centroid_std=tuple(float(max(v, CENTROID_STD_FLOOR)) for v in c.std(axis=0)),
        log_volume=float(np.mean(log_volumes)),
        log_volume_std=float(max(np.std(log_volumes), LOG_VOLUME_STD_FLOOR)),
        box=(tuple(float(v) for v in np.min(lows, axis=0)),
             tuple(float(v) for v in np.max(highs, axis=0))),
    )


def prior_score(centroid: Sequence[float], voxels: int, spacing: Sequence[float],
                prior: StructurePrior) -> float:
    """Gaussian log-likelihood (up to a constant) of a component's normalised centroid and
    ln volume (``voxels`` x voxel volume in mm^3) under ``prior``: higher fits better."""
    z = (np.asarray(centroid) - np.asarray(prior.centroid)) / np.asarray(prior.centroid_std)
    zv = (np.log(voxels * float(np.prod(spacing))) - prior.log_volume) / prior.log_volume_std
    return float(-0.5 * (np.sum(z * z) + zv * zv))


def choose_component(mask: np.ndarray, spacing: Sequence[float],
                     prior: StructurePrior | None) -> np.ndarray:
    """The component of ``mask`` (``XxYxZ`` bool) that is the structure, as a bool mask.

    Without a prior (or with one component) the largest, ties to the lowest label (scan order);
    with a prior also the largest unless its `prior_score` is below `PLAUSIBLE_SCORE`, then the
    best-scoring component (ties likewise).
    """
    if prior is None:
        return largest_component(mask)
    labels, count = ndimage.label(mask, structure=_CONNECTIVITY)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    shape = np.asarray(mask.shape, dtype=np.float64)
    sums = [ndimage.sum_labels(_axis_coords(mask.shape, a), labels, index=np.arange(1, count + 1))
            for a in range(3)]
    centroids = np.stack(sums, axis=1) / sizes[:, None] / np.maximum(shape - 1, 1)
    scores = [prior_score(centroids[i], int(sizes[i]), spacing, prior) for i in range(count)]
    best = int(np.argmax(scores))
    largest = int(np.argmax(sizes))
    if scores[largest] >= PLAUSIBLE_SCORE:
        return labels == largest + 1
    if best != largest:
        logger.info("component by prior: kept %d voxels at %s (score %.1f) over the largest, "
                    "%d voxels at %s (score %.1f)", sizes[best],
                    np.round(centroids[best], 2).tolist(), scores[best], sizes[largest],
                    np.round(centroids[largest], 2).tolist(), scores[largest])
    return labels == best + 1


def _axis_coords(shape: tuple[int, ...], axis: int) -> np.ndarray:
    """An array of ``shape`` holding each voxel's index along ``axis`` (a broadcast view)."""
    view = [1, 1, 1]
    view[axis] = shape[axis]
    return np.broadcast_to(np.arange(shape[axis], dtype=np.float64).reshape(view), shape)


def keep_component(prob: np.ndarray, threshold: float, spacing: Sequence[float],
                   prior: StructurePrior | None) -> np.ndarray:
    """The student's probabilities with every foreground component but the chosen one lowered
    to ``threshold`` (background, zero margin).

    Args:
        prob: ``XxYxZ`` float foreground probabilities in [0, 1].
        threshold: the foreground cut (``prob > threshold``).
        spacing: voxel size in mm.
        prior: the structure's prior; None keeps the largest component.

    Returns:
        ``prob`` itself when nothing changes, else a copy.
    """
    mask = prob > threshold
    if not mask.any():
        return prob
    keep = choose_component(mask, spacing, prior)
    drop = mask & ~keep
    if not drop.any():
        return prob
    out = np.array(prob, copy=True)
    out[drop] = np.asarray(threshold, dtype=out.dtype)
    return out


def keep_prior_components(label: np.ndarray, spacing: Sequence[float],
                          priors: dict[int, StructurePrior]) -> np.ndarray:
    """``label`` (``XxYxZ`` uint8 class values) with, for each class that has a prior, only the
    component the prior picks (the class's other voxels set to 0); a copy."""
    out = np.array(label, copy=True)
    for value, prior in priors.items():
        mask = label == value
        if mask.any():
            out[mask & ~choose_component(mask, spacing, prior)] = 0
    return out


def checkpoint_priors(meta: dict) -> dict[int, StructurePrior]:
    """The priors a student checkpoint's meta records (empty when it has none)."""
    raw = meta.get(COMPONENT_PRIOR_META_KEY) or {}
    return {int(v): StructurePrior.model_validate(p) for v, p in raw.items()}


def store_priors(root) -> dict[int, StructurePrior]:
    """Per class value the prior of the store's labeled volumes (classes no labeled volume
    holds are left out). ``root``: the open store group."""
    from semisam.store import list_metas, read_class_map, read_label

    labeled = [(read_label(root, m.volume_id), m.spacing) for m in list_metas(root) if m.labeled]
    priors = {}
    for value in read_class_map(root).values:
        prior = fit_prior((label == value, spacing) for label, spacing in labeled
                          if label is not None)
        if prior is not None:
            priors[value] = prior
    return priors


def with_store_priors(config: RoundConfig, root) -> RoundConfig:
    """``config`` with ``prompts.component_prior`` fitted on the store's labeled volumes, when
    ``prompts.component`` is 'prior' and no prior is given; otherwise ``config`` itself."""
    prompts = config.prompts
    if prompts.component != "prior" or prompts.component_prior is not None:
        return config
    priors = store_priors(root)
    if not priors:
        logger.debug("prompts.component is 'prior' but no labeled volume holds a structure: "
                     "the largest component is kept")
    for value, prior in priors.items():
        logger.debug("class %d prior from %d labeled volumes: centroid %s +- %s, volume %.0f ml",
                    value, prior.volumes, [round(c, 2) for c in prior.centroid],
                    [round(c, 2) for c in prior.centroid_std], np.exp(prior.log_volume) / 1000)
    return config.model_copy(update={"prompts": prompts.model_copy(
        update={"component_prior": priors})})
