"""Training-stage configuration: Mean Teacher + confidence-weighted SAM consistency.

Defaults are SemiSAM's published values for Left Atrium with 2 labeled volumes
(``code/train_LA_semisam_mt.py`` of github.com/YichiZhang98/SemiSAM, itself UA-MT's
``train_LA_meanteacher_certainty_unlabel.py`` plus the SAM branch): 6000 iterations, batch 4 of
which 1 labeled, 128x128x128 patches, SGD lr 0.01 momentum 0.9 weight decay 1e-4 with the lr
divided by 10 every 2500 iterations, EMA decay 0.99, consistency weight 0.1 with a sigmoid
ramp-up of length 40 in units of 150 iterations, input noise clamp(N(0, 0.1), -0.2, 0.2), and a
SAM weight 0.1 * sigmoid_rampup((max_iter - iter) // 150, 40) (a ramp-DOWN). Both consistency
terms are half the mean squared error of softmax outputs, as in that code. docs/benchmarks.md
lists where UA-MT and SemiSAM+ differ (2 + 2 batch, 112x112x80 patch, poly lr).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field, model_validator

from .adaptation import AdaptConfig
from .base import StrictModel
from .config import RoundConfig
from .loading import load_json_model
from .pseudo_labels import RoundVolumeSelection
from .student import StudentSpec


class OptimizerKind(str, Enum):
    sgd = "sgd"
    adam = "adam"


class LrSchedule(str, Enum):
    """Learning-rate schedule over iterations ``t`` of ``T``."""

    step = "step"  # lr * gamma ** (t // step_every)   (SemiSAM / UA-MT on LA)
    poly = "poly"  # lr * (1 - t / T) ** power          (SemiSAM+ / SSL4MIS)
    constant = "constant"


class RampSchedule(str, Enum):
    """Shape of a loss weight over training (``sigmoid_rampup`` of Laine & Aila 2017)."""

    rampup = "rampup"  # weight * sigmoid_rampup(t // unit, length)
    rampdown = "rampdown"  # weight * sigmoid_rampup((T - t) // unit, length)
    constant = "constant"  # weight


class SamLoss(str, Enum):
    """Per-voxel distance between the student's softmax and the one-hot pseudo-label."""

    mse = "mse"  # 0.5 * (p - y)^2 averaged over classes (SemiSAM)
    ce = "ce"  # -log p_y
    ce_dice = "ce_dice"  # -log p_y, plus a confidence-weighted soft Dice of the foreground


class SamNormalization(str, Enum):
    """Denominator of the confidence-weighted SAM loss."""

    voxels = "voxels"  # sum(c * d) / N: plain mean when c == 1 (SemiSAM's loss)
    confidence = "confidence"  # sum(c * d) / sum(c): a weighted mean


class ExportModel(str, Enum):
    """Which network becomes the student checkpoint."""

    student = "student"  # the trained network (SemiSAM saves this one)
    teacher = "teacher"  # its exponential moving average


class OptimizerConfig(StrictModel):
    kind: OptimizerKind = OptimizerKind.sgd
    lr: float = Field(0.01, gt=0, description="base learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0)
    schedule: LrSchedule = LrSchedule.step
    step_every: int = Field(2500, ge=1, description="iterations between lr steps (step schedule)")
    step_gamma: float = Field(0.1, gt=0, le=1, description="lr factor per step (step schedule)")
    poly_power: float = Field(0.9, gt=0, description="exponent of the poly schedule")


class BatchConfig(StrictModel):
    """Composition of one batch; the patch size is ``TrainConfig.student.patch_size``."""

    labeled: int = Field(1, ge=1, description="labeled patches per batch")
    unlabeled: int = Field(3, ge=0, description="unlabeled patches per batch")
    foreground_prob: float = Field(
        0.0, ge=0, le=1, description="chance that a labeled patch is centred on foreground "
        "(0 = uniform random crops, as SemiSAM)")


class AugmentConfig(StrictModel):
    """SemiSAM's RandomRotFlip: rot90 by k in {0..3} in the (0, 1) plane, then a flip of axis 0 or 1."""

    rot90: bool = True
    flip: bool = True
    class_aware: bool = Field(
        True, description="on a store of several structures, drop the flips (and the rot90) "
        "that would move one structure to where another lies: flips along an axis on which the "
        "labeled volumes' structures are separated (class_separation), rot90 when axis 0 or 1 "
        "is (training/augmentation.py). No effect on one-structure stores",
    )
    class_separation: float = Field(
        1.0, gt=0, description="an axis separates two structures when their centroids lie "
        "further apart along it than this many standard deviations of their voxel coordinates "
        "(mean over the labeled volumes, sign kept; hippocampus: 1.7 and 1.4 on axes 1 and 2, "
        "0.5 on axis 0)",
    )


class SupervisedConfig(StrictModel):
    """Labeled patches: ``ce_weight * CE + dice_weight * soft Dice`` (SemiSAM: 1 and 1)."""

    ce_weight: float = Field(1.0, ge=0)
    dice_weight: float = Field(1.0, ge=0)


class MeanTeacherConfig(StrictModel):
    """EMA teacher on noisy inputs; MSE consistency between student and teacher softmax."""

    enabled: bool = True
    ema_decay: float = Field(0.99, ge=0, lt=1)
    weight: float = Field(0.1, ge=0, description="consistency weight after the ramp")
    schedule: RampSchedule = RampSchedule.rampup
    ramp_length: float = Field(40.0, ge=0, description="ramp length in units of ramp_unit iterations")
    ramp_unit: int = Field(150, ge=1, description="iterations per ramp unit")
    noise_std: float = Field(0.1, ge=0, description="teacher input noise N(0, std) (z-score units)")
    noise_clip: float = Field(0.2, ge=0, description="noise clamped to [-clip, clip]")
    include_labeled: bool = Field(True, description="consistency on the whole batch (SemiSAM LA) "
                                  "or on the unlabeled part only (UA-MT)")


class SamConsistencyConfig(StrictModel):
    """Confidence-weighted loss between the student's softmax and a round's pseudo-labels."""

    enabled: bool = True
    weight: float = Field(0.1, ge=0)
    schedule: RampSchedule = RampSchedule.rampdown
    ramp_length: float = Field(40.0, ge=0)
    ramp_unit: int = Field(150, ge=1)
    loss: SamLoss = SamLoss.mse
    confidence_weighted: bool = Field(True, description="weight each voxel by its stored confidence")
    min_confidence: float = Field(0.0, ge=0, lt=1, description="voxels below count with weight 0")
    normalization: SamNormalization = SamNormalization.voxels
    volumes: RoundVolumeSelection = Field(
        default_factory=RoundVolumeSelection, description="which of the round's pseudo-labeled "
        "volumes the SAM term learns from (the best top_fraction by rank_by); the others stay "
        "unlabeled volumes of the Mean Teacher term")


class TrainConfig(StrictModel):
    """Everything `semisam train` does besides the store, the round and the output path."""

    student: StudentSpec = Field(default_factory=lambda: StudentSpec(
        channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2,
        patch_size=(128, 128, 128)))
    iterations: int = Field(6000, ge=1)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    supervised: SupervisedConfig = Field(default_factory=SupervisedConfig)
    mean_teacher: MeanTeacherConfig = Field(default_factory=MeanTeacherConfig)
    sam: SamConsistencyConfig = Field(default_factory=SamConsistencyConfig)
    export: ExportModel = ExportModel.student
    seed: int = Field(1337, ge=0)
    checkpoint_every: int = Field(500, ge=1, description="iterations between resume checkpoints")
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")
    amp: bool = Field(False, description="bfloat16 autocast of the forward passes (CUDA only)")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU")
    exclude: list[str] = Field(default_factory=list, description="volume ids never trained on "
                               "(held-out evaluation volumes)")

    @model_validator(mode="after")
    def _patch_fits_strides(self) -> TrainConfig:
        """Every patch axis divisible by the network's downsampling: the product of the strides
        (UNet, DynUNet) or 16 (VNet, which ignores ``strides``)."""
        factor = self.student.size_divisor
        bad = [p for p in self.student.patch_size if p % factor]
        if bad:
            what = ("16 (monai.VNet)" if self.student.architecture == "monai.VNet"
                    else f"the product of the strides ({factor})")
            raise ValueError(f"student.patch_size {self.student.patch_size} must be divisible by "
                             f"{what}")
        return self


class LoopConfig(StrictModel):
    """`semisam loop`: the training config of every student and the config of every round."""

    train: TrainConfig = Field(default_factory=TrainConfig)
    round: RoundConfig = Field(default_factory=RoundConfig)
    warm_start: bool = Field(False, description="student r+1 starts from student r's weights")
    adapt: AdaptConfig | None = Field(None, description="before each round r, adapt the round's "
                                      "masker to the labeled volumes (`semisam adapt`) and run "
                                      "the round with it (WORKDIR/masker_<r>.pth); None = the "
                                      "masker as configured")
    adapt_on_pseudo_labels: bool = Field(False, description="rounds r >= 2 adapt on round r-1's "
                                         "most confident pseudo-labels too (adapt.pseudo_labels "
                                         "settings, its round set to r-1)")


def load_train_config(path: Path | None) -> TrainConfig:
    """`TrainConfig` from a JSON file (``--config``), or the defaults."""
    return load_json_model(path, TrainConfig)


def load_loop_config(path: Path | None) -> LoopConfig:
    """`LoopConfig` from a JSON file (``{"train": {...}, "round": {...}}``), or the defaults."""
    return load_json_model(path, LoopConfig)
