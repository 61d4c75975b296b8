"""`AdaptationData`: the examples of one adaptation run, their embeddings, targets and the
held-out set, read from the store once."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import AdaptConfig, ConfigError, RoundConfig
from semisam.store import list_metas, open_store, read_class_map
from semisam.workers.maskers.adaptable import Adaptable
from semisam.workers.maskers.base import SlicePrompt

from ..dataset import store_fingerprint
from ..selection import kept_count, rank_round_volumes
from .boxes import sample_box, validation_boxes
from .examples import Example, Track, build_tracks, hold_out, slice_variants
from .mask_prompts import perturbed_mask_logits
from .objective import hard_overlap

logger = logging.getLogger(__name__)

__all__ = ["AdaptationData", "load_adaptation_data"]


@dataclass
class AdaptationData:
    """Everything a run trains and validates on.

    Attributes:
        examples: every example; ``embeddings[examples[k].row]`` is its slice's embedding
            (slices shared by several structures share a row).
        embeddings: one row per encoded slice: ``RxCxhxw`` float32 image embeddings, or what
            `Adaptable.frozen_features` gives for ``target`` (`Adaptable.embed` finishes it).
        targets / valid: ``NxSxS`` float32 / bool in the masker's low-res frame, one per example.
        train / pseudo / beyond: positions in ``examples`` to draw from (labels, pseudo-labels,
            slices past the structure's ends).
        checks: held-out ``(example position, box, mask logits or None)`` prompts scored by
            `validate` (mask prompts only with ``AdaptConfig.mask_prompt``, drawn once, seeded).
    """

    tracks: list[Track]
    examples: list[Example]
    embeddings: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor
    train: list[int]
    pseudo: list[int]
    beyond: list[int]
    checks: list[tuple[int, np.ndarray, np.ndarray | None]]
    fingerprint: str
    labeled: list[str]
    pseudo_labeled: list[str] = field(default_factory=list)
    target: str = "decoder"

    @property
    def has_validation(self) -> bool:
        return bool(self.checks)

    @property
    def train_count(self) -> int:
        return len(self.train) + len(self.pseudo) + len(self.beyond)

    @property
    def held_out_count(self) -> int:
        return sum(len(t.held_out) for t in self.tracks if t.origin is None)

    def _pool(self, config: AdaptConfig, rng: np.random.Generator) -> list[int]:
        draw = rng.random()
        if self.beyond and draw < config.box.beyond_prob:
            return self.beyond
        if self.pseudo and config.pseudo_labels is not None and (
                not self.train or rng.random() < config.pseudo_labels.weight):
            return self.pseudo
        return self.train or self.pseudo

    def sample(self, config: AdaptConfig, rng: np.random.Generator
               ) -> tuple[torch.Tensor, list[SlicePrompt], list[tuple[int, int]], torch.Tensor,
                          torch.Tensor]:
        """``config.batch_size`` examples with round-like boxes (and, with
        ``config.mask_prompt``, a share with perturbed-reference mask prompts): (rows, prompts,
        slice shapes, targets ``BxSxS``, valid ``BxSxS``)."""
        rows, picked, prompts, hws = [], [], [], []
        while len(rows) < config.batch_size:
            pool = self._pool(config, rng)
            k = pool[int(rng.integers(len(pool)))]
            example = self.examples[k]
            track = self.tracks[example.track]
            box = sample_box(track, example, config.box, rng)
            if box is None:
                continue
            rows.append(example.row)
            picked.append(k)
            prompts.append(SlicePrompt(index=example.index, box=box,
                                       mask_logits=_mask_prompt(track, example.index, config, rng)))
            hws.append(track.hw)
        at = torch.as_tensor(picked, dtype=torch.long)
        return torch.as_tensor(rows, dtype=torch.long), prompts, hws, self.targets[at], self.valid[at]

    @torch.no_grad()
    def validate(self, masker: Adaptable) -> float:
        """Dice of the held-out slices (pooled over them, in the low-res frame) with their fixed
        prompts (`validation_boxes`, and mask prompts where `checks` has them)."""
        masker.set_training(False)
        inter = total = 0.0
        for start in range(0, len(self.checks), 32):
            chunk = self.checks[start:start + 32]
            examples = [self.examples[k] for k, _, _ in chunk]
            rows = torch.as_tensor([e.row for e in examples], dtype=torch.long)
            at = torch.as_tensor([k for k, _, _ in chunk], dtype=torch.long)
            prompts = [SlicePrompt(index=e.index, box=box, mask_logits=mask)
                       for e, (_, box, mask) in zip(examples, chunk)]
            logits, _ = masker.decode_lowres(masker.embed(self.embeddings[rows], self.target),
                                             prompts,
                                             [self.tracks[e.track].hw for e in examples])
            i, p, r = hard_overlap(logits, self.targets[at], self.valid[at])
            inter += float(i.sum())
            total += float((p + r).sum())
        return 2.0 * inter / total if total else 1.0


def _mask_prompt(track: Track, index: int, config: AdaptConfig, rng: np.random.Generator
                 ) -> np.ndarray | None:
    """Perturbed-reference logits for slice ``index`` of ``track`` (past the structure: of the
    nearest structure slice, as a student's mask running past the end), for a share
    ``config.mask_prompt.share`` of the calls; else None. Draws from ``rng`` only with a mask
    prompt config, so box-only runs keep their random sequence."""
    settings = config.mask_prompt
    if settings is None or rng.random() >= settings.share:
        return None
    source = index if index in track.masks else track.nearest_structure(index)
    return perturbed_mask_logits(track.masks[source], settings, rng)


def _pseudo_volumes(root, config: AdaptConfig, metas) -> list[str]:
    """The round's done unlabeled volumes with a non-empty pseudo-label (and the ranked
    figure), best first by ``pseudo_labels.rank_by`` (`rank_round_volumes`), ``top_fraction`` of
    them (at least one)."""
    selection = config.pseudo_labels
    assert selection is not None
    ranked = rank_round_volumes(root, selection.round, [m.volume_id for m in metas
                                                         if not m.labeled], selection.rank_by)
    scored = [(score, vid) for score, vid in ranked if score >= 0]
    if not scored:
        raise ConfigError(f"field 'pseudo_labels.round': round {selection.round} has no done "
                          "pseudo-label with foreground")
    keep = kept_count(len(scored), selection.top_fraction)
    return [vid for _, vid in scored[:keep]]


def _encoder(masker: Adaptable, batch: int, target: str):
    """Slices -> the rows of `AdaptationData.embeddings`: through the masker's embedding cache
    when the image encoder stays frozen, else `Adaptable.frozen_features` (not cached)."""
    if masker.tuned_encoder_keys(target):
        def features(slices: np.ndarray) -> torch.Tensor:
            return torch.cat([masker.frozen_features(slices[i:i + batch], target)
                              for i in range(0, len(slices), batch)])
        return features
    cache = getattr(masker, "cache", None)

    def encode(slices: np.ndarray) -> torch.Tensor:
        if cache is not None:
            return cache.encode(slices, masker.encode, batch, masker.device)
        return torch.cat([masker.encode(slices[i:i + batch]) for i in range(0, len(slices), batch)])
    return encode


def load_adaptation_data(store: str | Path, masker: Adaptable, config: AdaptConfig,
                         round_config: RoundConfig) -> AdaptationData:
    """Read, encode and split the examples of ``store`` for ``masker``.

    Raises:
        ConfigError: no labeled volume in the store.
    """
    root = open_store(store, read_only=True)
    metas = list_metas(root)
    labeled = [m.volume_id for m in metas if m.labeled]
    if not labeled:
        raise ConfigError(f"{store}: no labeled volume to adapt the masker on")
    config = config.resolved(len(labeled))  # rate, held-out share, boxes by the labeled count
    classes = read_class_map(root)
    volumes = [(vid, "label") for vid in labeled]
    pseudo_ids: list[str] = []
    if config.pseudo_labels is not None:
        pseudo_ids = _pseudo_volumes(root, config, metas)
        volumes += [(vid, f"round {config.pseudo_labels.round}") for vid in pseudo_ids]
    axes = config.axes or (round_config.prompts.slice_axis, *round_config.prompts.extra_axes)
    tracks, examples, embeddings = build_tracks(
        root, volumes, classes.values, axes, round_config.intensity, config.min_slice_pixels,
        config.box.beyond_reach, _encoder(masker, config.encoder_batch_size, config.target.value),
        slice_variants(config.augment))
    hold_out(tracks, config.holdout_fraction or 0.0, np.random.default_rng(config.seed))
    frames = [masker.target_frame(tracks[e.track].masks.get(
        e.index, np.zeros(tracks[e.track].hw, bool))) for e in examples]
    targets = torch.from_numpy(np.stack([f[0] for f in frames]))
    valid = torch.from_numpy(np.stack([f[1] for f in frames]))

    def where(test) -> list[int]:
        return [k for k, e in enumerate(examples) if test(tracks[e.track], e.index)]

    train = where(lambda t, i: i in t.masks and i not in t.held_out and t.source == "label")
    pseudo = where(lambda t, i: i in t.masks and t.source != "label")
    beyond = where(lambda t, i: i not in t.masks)
    check_rng = np.random.default_rng([config.seed, 1])
    checks = [(k, box, _mask_prompt(tracks[examples[k].track], examples[k].index, config,
                                    check_rng))
              for k in where(lambda t, i: i in t.held_out and t.origin is None)
              for box in validation_boxes(tracks[examples[k].track], examples[k].index)]
    logger.info("adaptation: %d training, %d pseudo-label, %d past-the-end examples; %d "
                "held-out checks", len(train), len(pseudo), len(beyond), len(checks))
    return AdaptationData(
        tracks=tracks, examples=examples, embeddings=embeddings, targets=targets, valid=valid,
        train=train, pseudo=pseudo, beyond=beyond, checks=checks,
        fingerprint=store_fingerprint(root, metas, None, classes), labeled=labeled,
        pseudo_labeled=pseudo_ids, target=config.target.value)
