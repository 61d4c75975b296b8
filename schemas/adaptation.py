"""Masker adaptation: fine-tuning a SAM-family masker on the store's labeled volumes.

A frozen generic masker is no better than a 2-label student on a task it was not trained for
(docs/benchmarks.md, LA). `semisam adapt` tunes its prompt encoder and mask decoder on the
labeled volumes' slices, prompted with boxes like the ones a round really gives (the reference
box jittered, grown, shrunk, taken from a neighbouring slice, or placed on a slice past the
structure where the right answer is empty), on cached image embeddings. The result is a
checkpoint of the same kind as the base one, which a round loads with ``--masker-checkpoint``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field, field_validator

from .base import StrictModel
from .loading import load_json_model
from .pseudo_labels import PseudoLabelRank

LR_ONE_LABELED = 2.5e-6
"""`AdaptConfig.lr_for` with one labeled volume (LA: the best reference-box diagnostic)."""
LR_SEVERAL_LABELED = 1e-5
"""`AdaptConfig.lr_for` with two or more (LA, batches of 4: the best rounds on three seeds)."""
LOOSE_ONE_LABELED = 0.3
"""`AdaptBoxConfig.loose_prob` with one labeled volume (0 with more): LA, one labeled volume,
with rounds that check the student by the prior's box (`PromptConfig.prior_box`)."""
LOOSE_BEYOND_REACH = 10
"""`AdaptBoxConfig.beyond_reach` at least, where loose boxes are drawn by that default: the
prior's box spans more slices past the structure than a student's boxes do."""
HOLDOUT_SEVERAL_LABELED = 0.2
"""`AdaptConfig.holdout_for` with two or more labeled volumes; with one it is 0 (no early
stopping: LA, one labeled volume, the held-out block of that volume stopped one seed at once
and never stopped another; without it the reference-box diagnostic was 0.855 against 0.832)."""


class AdaptTarget(str, Enum):
    """Which parameters the adaptation trains. The decoder targets keep the image encoder frozen
    (its embeddings come from the round's embedding cache, and an adapted checkpoint shares
    them); 'neck' and 'encoder_tail' also tune the encoder's end (features before it are
    computed once; a round with such a checkpoint encodes its slices anew)."""

    decoder = "decoder"  # prompt encoder + mask decoder (~4 M parameters for LiteMedSAM)
    head = "head"  # the decoder's output upscaling, hypernetwork MLPs and IoU head only
    neck = "neck"  # decoder + the image encoder's neck (LiteMedSAM: +0.7 M)
    encoder_tail = "encoder_tail"  # decoder + the encoder's last stage and neck (LiteMedSAM: +3.1 M)


class AdaptBoxConfig(StrictModel):
    """How training boxes are drawn from a labeled slice's reference (pixels of the slice)."""

    margin_max: float = Field(10.0, ge=0, description="box grown by U(0, margin_max) px per side "
                              "(the round's box_margin and propagate_margin are 5)")
    relative_jitter: float = Field(0.1, ge=0, le=1, description="each side moved by N(0, s) "
                                   "times the box's width or height")
    scale_prob: float = Field(0.3, ge=0, le=1, description="share of boxes grown or shrunk by "
                              "-15%..+25% of their size per side instead of a pixel margin")
    neighbour_prob: float = Field(0.25, ge=0, le=1, description="share of boxes taken from a "
                                  "neighbouring slice's reference (what propagation gives)")
    neighbour_reach: int = Field(4, ge=1, description="a neighbouring slice is at most this far")
    beyond_prob: float = Field(0.15, ge=0, le=1, description="share of examples on a slice just "
                               "past the structure's extent along the slice axis, prompted with "
                               "the nearest structure slice's box; the target is empty (the "
                               "student's boxes run past the structure)")
    beyond_reach: int = Field(6, ge=1, description="such slices are at most this far outside")
    loose_prob: float | None = Field(
        None, ge=0, le=1, description="share of boxes that are the structure's box over all its "
        "slices (the same on every slice, past-the-end slices too), grown by U(0, loose_grow) "
        "of its size per side: what a round with prompts.prior_box asks of the masker. None = "
        "by the number of labeled volumes (`AdaptConfig.resolved`): 0.3 with one (beyond_reach "
        "then at least 10), 0 with more")
    loose_grow: float = Field(0.3, ge=0, le=2, description="see loose_prob")


class AdaptAugmentConfig(StrictModel):
    """Transformed copies of every labeled slice, made before encoding (image and reference
    alike), so that the decoder side sees more than the few labeled slices' exact embeddings.
    Each copy is one more example per slice (its embedding is encoded once and cached like any
    other slice); held-out slices' copies are never trained on."""

    flips: tuple[int, ...] = Field((), description="in-plane axes of the slice (0 = rows, "
                                   "1 = columns), each giving a mirrored copy")
    gammas: tuple[float, ...] = Field((), description="intensity copies: the windowed slice s "
                                      "(0-255) becomes 255 (s / 255) ** g, per value g")

    @field_validator("flips")
    @classmethod
    def _flips(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(a not in (0, 1) for a in value) or len(set(value)) != len(value):
            raise ValueError(f"flips must be distinct values of 0, 1, got {list(value)}")
        return value

    @field_validator("gammas")
    @classmethod
    def _gammas(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.2 <= g <= 5.0 or g == 1.0 for g in value):
            raise ValueError(f"gammas must lie in [0.2, 5] and differ from 1, got {list(value)}")
        return value


class AdaptMaskPromptConfig(StrictModel):
    """Dense mask prompts in training: a share of the examples also carry, as SAM's mask input,
    the logits of a perturbed copy of their reference (what the student's probability looks
    like: too large or small, shifted, with a blob gained or lost, soft at the edge), so the
    decoder learns to refine a rough mask rather than copy it. For rounds run with
    ``prompts.mask_prompt`` (the student's slice logits go with its boxes); the propagation
    chain's boxes carry none, hence a share below 1. Sizes are fractions of the reference's
    equivalent diameter on that slice (``2 sqrt(area / pi)``)."""

    share: float = Field(0.5, ge=0, le=1, description="share of examples with a mask prompt "
                         "(held-out checks too, seeded)")
    grow: float = Field(0.1, ge=0, le=1, description="mask eroded or dilated by up to this "
                        "times the diameter (uniform, sign at random). With the defaults, the "
                        "perturbed LA labeled slices' Dice to their references is 0.83 mean, "
                        "0.72-0.93 (10th-90th percentile); a 2-label student's slices on "
                        "unlabeled volumes: 0.80, 0.56-0.95")
    shift: float = Field(0.05, ge=0, le=1, description="mask moved by N(0, shift x diameter) "
                         "px along each in-plane axis")
    blob_prob: float = Field(0.4, ge=0, le=1, description="share of masks that gain or lose "
                             "a disk of 0.15-0.4 x diameter radius centred on their edge")
    blur_sigma: float = Field(1.0, ge=0, description="Gaussian blur (px) of the perturbed mask "
                              "before it becomes a probability and logits")


class PseudoLabelSelection(StrictModel):
    """Round r-1's most confident pseudo-labels as extra adaptation examples (SFR+-style)."""

    round: int = Field(..., ge=1, description="the round whose pseudo-labels are used")
    top_fraction: float = Field(0.5, gt=0, le=1, description="share of the round's done volumes "
                                "kept, best first by rank_by")
    rank_by: PseudoLabelRank = Field(PseudoLabelRank.confidence, description="what ranks the "
                                     "volumes (`PseudoLabelRank`); confidence: the mean "
                                     "confidence over the pseudo-label's foreground")
    weight: float = Field(0.5, gt=0, le=1, description="share of each batch drawn from them")


class AdaptConfig(StrictModel):
    """`semisam adapt`: what is tuned, on which slices, for how long."""

    seed: int = 0
    iterations: int = Field(400, ge=1, description="optimizer steps (upper bound: early "
                            "stopping keeps the best held-out state)")
    batch_size: int = Field(4, ge=1, le=256, description="slices per step. 4 measured on LA "
                            "with 2 labeled volumes (docs/benchmarks.md, three seeds): the "
                            "reference-box diagnostic as with 8, in half the time per step")
    lr: float | None = Field(None, gt=0, description="AdamW learning rate; None = by the "
                             "number of labeled volumes (`AdaptConfig.lr_for`): 1e-5 with 2 or "
                             "more, 2.5e-6 with one. Measured on LA (docs/benchmarks.md): with 1 "
                             "volume the reference-box diagnostic is 0.829 at 2.5e-6 vs 0.822 at "
                             "1e-5 (frozen 0.803; larger rates fit the one volume and generalise "
                             "worse); with 2 volumes and batches of 4, 1e-5 gives better rounds "
                             "(pseudo-label Dice 0.801 vs 0.788, three seeds)")
    weight_decay: float = Field(0.01, ge=0)
    target: AdaptTarget = AdaptTarget.decoder
    axes: tuple[int, ...] | None = Field(None, description="slice axes of the examples; None = "
                                         "the round config's slice_axis and extra_axes")
    min_slice_pixels: int = Field(4, ge=1, description="a slice with fewer reference pixels "
                                  "counts as outside the structure")
    holdout_fraction: float | None = Field(
        None, ge=0, lt=1, description="share of the labeled structure slices kept out of "
        "training for early stopping (contiguous blocks along the slice axis, seeded); 0 = no "
        "early stopping, the last state is kept; None = by the number of labeled volumes "
        "(`AdaptConfig.holdout_for`): 0.2 with 2 or more, 0 with one")
    eval_every: int = Field(25, ge=1, description="held-out Dice every this many steps")
    patience: int = Field(4, ge=1, description="stop after this many evaluations without a "
                          "better held-out Dice")
    checkpoint_every: int = Field(100, ge=1, description="resume state written every this many "
                                  "steps (OUT.state.pt)")
    iou_loss_weight: float = Field(1.0, ge=0, description="weight of the MSE between the "
                                   "decoder's predicted IoU and the real one (keeps the round's "
                                   "masker_score meaningful)")
    box: AdaptBoxConfig = Field(default_factory=AdaptBoxConfig)
    augment: AdaptAugmentConfig = Field(default_factory=AdaptAugmentConfig)
    mask_prompt: AdaptMaskPromptConfig | None = Field(None, description="train with dense "
                                                      "mask prompts as well (`AdaptMaskPromptConfig`"
                                                      "); None = boxes only")
    pseudo_labels: PseudoLabelSelection | None = None
    encoder_batch_size: int = Field(4, ge=1, le=512, description="slices per encoder batch")
    embedding_cache: Path | None = Field(None, description="directory of the masker's image "
                                         "embeddings (shared with rounds: the encoder is frozen)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch's own")

    def lr_for(self, labeled: int) -> float:
        """The learning rate for ``labeled`` labeled volumes: ``lr`` when set, else
        `LR_SEVERAL_LABELED` with 2 or more and `LR_ONE_LABELED` with one."""
        if self.lr is not None:
            return self.lr
        return LR_SEVERAL_LABELED if labeled >= 2 else LR_ONE_LABELED

    def holdout_for(self, labeled: int) -> float:
        """The held-out share for ``labeled`` labeled volumes: ``holdout_fraction`` when set,
        else `HOLDOUT_SEVERAL_LABELED` with 2 or more and 0 with one."""
        if self.holdout_fraction is not None:
            return self.holdout_fraction
        return HOLDOUT_SEVERAL_LABELED if labeled >= 2 else 0.0

    def box_for(self, labeled: int) -> AdaptBoxConfig:
        """The box settings for ``labeled`` labeled volumes: ``box`` itself when its
        ``loose_prob`` is set; else with `LOOSE_ONE_LABELED` and ``beyond_reach`` at least
        `LOOSE_BEYOND_REACH` with one, and ``loose_prob`` 0 with more."""
        if self.box.loose_prob is not None:
            return self.box
        if labeled >= 2:
            return self.box.model_copy(update={"loose_prob": 0.0})
        return self.box.model_copy(update={
            "loose_prob": LOOSE_ONE_LABELED,
            "beyond_reach": max(self.box.beyond_reach, LOOSE_BEYOND_REACH)})

    def resolved(self, labeled: int) -> AdaptConfig:
        """This config with ``lr``, ``holdout_fraction`` and ``box.loose_prob`` set for
        ``labeled`` labeled volumes (`lr_for`, `holdout_for`, `box_for`): what a run records in
        its resume state and checkpoint."""
        return self.model_copy(update={"lr": self.lr_for(labeled),
                                       "holdout_fraction": self.holdout_for(labeled),
                                       "box": self.box_for(labeled)})

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return value
        if not value or any(a not in (0, 1, 2) for a in value) or len(set(value)) != len(value):
            raise ValueError(f"axes must be distinct values of 0, 1, 2, got {list(value)}")
        return value

    @field_validator("embedding_cache")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().absolute()


class AdaptationMeta(StrictModel):
    """What an adapted checkpoint says about itself (stored in the file beside the weights)."""

    kind: str = Field(..., description="masker kind, e.g. litemedsam")
    base_checkpoint: str = Field(..., description="file name of the base weights")
    base_sha256: str
    store: str = Field(..., description="the store it was adapted on")
    store_fingerprint: str | None = None
    labeled: list[str] = Field(default_factory=list, description="labeled volume ids used")
    pseudo_labeled: list[str] = Field(default_factory=list, description="pseudo-labeled "
                                      "volume ids used (round in config.pseudo_labels)")
    examples: int = 0
    held_out: int = 0
    iterations: int = Field(0, description="steps taken")
    best_iteration: int = Field(0, description="step of the kept state (0 = the base weights)")
    held_out_dice_base: float | None = None
    held_out_dice: float | None = None
    seconds: float = 0.0
    config: AdaptConfig
    created_at: str


def load_adapt_config(path: Path | None) -> AdaptConfig:
    """`AdaptConfig` from a JSON file (``--config``), or the defaults."""
    return load_json_model(path, AdaptConfig)
