"""Round configuration: the single source of truth for what a `run-round` does.

Every field has a default, so a user's config file names only what it changes. Loaded from
JSON/YAML-free JSON files (``--config FILE``) and stored verbatim in ``rounds/<r>`` attributes.
The masker's section (`MaskerConfig`, each kind's settings) lives in `schemas.masker_config`
and is re-exported here.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from .base import StrictModel
from .errors import ConfigError
from .loading import first_validation_error, load_json_model
from .masker_config import (  # noqa: F401  (re-exported: imports from schemas.config keep working)
    LITEMEDSAM_ASSET,
    LITEMEDSAM_PACKAGE,
    LITEMEDSAM_SHA256,
    LiteMedSamConfig,
    MaskerConfig,
    MaskerKind,
    RandomWalkerConfig,
    SamConfig,
    SamFamily,
    SamType,
    bundled_litemedsam_checkpoint,
)
from .masker_kinds import MASKER_DEFAULTS, add_kind
from .prior import StructurePrior
from .storage import StorageConfig


class Modality(str, Enum):
    """Intensity windowing rule for turning a slice into SAM's 8-bit RGB input."""

    mr = "mr"  # percentile window per volume
    ct = "ct"  # fixed level/width in HU


class FusionMode(str, Enum):
    """How the pseudo-label combines masker and student."""

    masker_on_prompted = "masker_on_prompted"  # masker on prompted slices, student elsewhere
    intersection = "intersection"  # masker AND student on prompted slices, student elsewhere
    union = "union"  # masker OR student on prompted slices, student elsewhere
    average = "average"  # weighted mean of masker and student probabilities > 0.5 on prompted slices


class IntensityConfig(StrictModel):
    """Window applied to each volume before SAM sees it (mapped to [0, 255])."""

    modality: Modality = Modality.mr
    percentile_low: float = Field(0.5, ge=0, lt=100)
    percentile_high: float = Field(99.5, gt=0, le=100)
    ct_level: float = 40.0
    ct_width: float = Field(400.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> IntensityConfig:
        if self.percentile_low >= self.percentile_high:
            raise ValueError(
                f"percentile_low must be < percentile_high, got {self.percentile_low} >= "
                f"{self.percentile_high}"
            )
        return self


class PromptConfig(StrictModel):
    """How the student's probability map becomes per-slice prompts."""

    slice_axis: int = Field(2, ge=0, le=2, description="volume axis the slices are taken along")
    threshold: float = Field(0.5, gt=0, lt=1, description="student foreground probability cut")
    largest_component: bool = Field(True, description="keep only the largest 3D component")
    min_slice_pixels: int = Field(4, ge=1, description="fewer foreground pixels: slice skipped")
    box_margin: int = Field(5, ge=0, description="box expansion in pixels on each side")
    positive_points: int = Field(1, ge=0, le=16, description="points at interior maxima")
    negative_points: int = Field(0, ge=0, le=16, description="points in the box, off the mask")
    mask_prompt: bool = Field(False, description="pass the student's low-res logits to SAM")
    propagate: bool = Field(
        False, description="the student's box only on its largest slice; every other prompted "
        "slice gets the box of the masker's mask on its neighbour towards that slice (grown by "
        "propagate_margin), stopping where that mask vanishes (MedSAM-style 3D inference)",
    )
    propagate_margin: int = Field(3, ge=0, description="pixels around a propagated mask's box")
    propagate_start: str = Field(
        "agreement", pattern="^(agreement|largest)$",
        description="slice the propagation starts from: 'agreement' = among slices with at "
        "least half the student's largest area, the one where the masker (prompted with the "
        "student's box) agrees best with the student; 'largest' = the student's largest slice",
    )
    propagate_chains: int = Field(
        1, ge=1, le=8, description="propagation chains from that many starts (the best "
        "slices by propagate_start, propagate_chain_spacing apart); per slice the mean of the "
        "chains' masker probabilities, a chain that did not reach it counting 0 (a soft vote)",
    )
    propagate_chain_spacing: int = Field(
        10, ge=1, description="least distance in slices between two chains' starts")
    propagate_within_student: bool = Field(
        True, description="clip each propagated box to the student's box of that slice (the "
        "masker can trim the student's box, not drift beyond it)",
    )
    propagate_end: str = Field(
        "student", pattern="^(student|background)$",
        description="where a chain stops because the masker's mask vanished (or its box left "
        "the student's), the student's remaining slices that way: 'student' = keep the "
        "student's answer, 'background' = that chain votes 0 there (the masker ended the "
        "structure)",
    )
    extra_axes: tuple[int, ...] = Field(
        (), description="more slice axes to prompt and mask (multi-planar): where several axes "
        "cover a voxel, their masker probabilities are averaged before fusion",
    )
    component: str = Field(
        "prior", pattern="^(largest|prior)$",
        description="which 3D component of the student's foreground is the structure: "
        "'prior' = the one whose centroid and volume fit the labeled volumes' best "
        "(schemas/prior.py; the largest when the store has no labeled volume), or 'largest'; "
        "the student's other components are set to the threshold (background, confidence 0)",
    )
    component_prior: dict[int, StructurePrior] | None = Field(
        None, description="class value -> prior, filled by the round from the store's labeled "
        "volumes when component is 'prior' (kept in the round's config for the record)",
    )
    prior_box: bool | None = Field(
        None, description="check the student's structure against the masker prompted with the "
        "prior's box alone (the labeled volumes' box, normalised, on every slice it spans; "
        "needs component 'prior'); where they agree less than prior_box_min_agreement, the "
        "masker's answer replaces the student's map of that structure for the rest of the "
        "round (prompts and fusion). None = on when the round's masker checkpoint was adapted "
        "with box.loose_prob > 0 (trained on such boxes: `semisam adapt` with one labeled "
        "volume), else off (the masker's bytes are in the round's fingerprint, so the round "
        "does one or the other throughout). Measured on LA with one labeled volume "
        "(docs/benchmarks.md)",
    )
    prior_box_grow: float = Field(
        0.1, ge=0, le=1, description="the prior's box grown by this share of its size per side")
    prior_box_min_agreement: float = Field(
        0.45, ge=0, le=1, description="Dice between the student's kept component and the "
        "prior-box answer below which the student's map is replaced")

    @model_validator(mode="after")
    def _check_prior_box(self) -> PromptConfig:
        if self.prior_box and self.component != "prior":
            raise ValueError("prompts.prior_box needs prompts.component 'prior' (the box is the "
                             f"prior's), got component {self.component!r}")
        return self

    @model_validator(mode="after")
    def _check_extra_axes(self) -> PromptConfig:
        axes = self.extra_axes
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes) or self.slice_axis in axes:
            raise ValueError(f"extra_axes must be distinct axes among 0, 1, 2 other than slice_axis "
                             f"{self.slice_axis}, got {list(axes)}")
        return self


class FusionConfig(StrictModel):
    mode: FusionMode = FusionMode.masker_on_prompted
    masker_threshold: float = Field(0.5, gt=0, lt=1)
    largest_component: bool = Field(
        False, description="keep only the largest 26-connected component of the fused "
        "pseudo-label; removed voxels get confidence 0 (one-structure tasks)",
    )
    min_masker_score: float = Field(
        0.0, ge=0, le=1, description="prompted slices whose masker score (SAM-family: the "
        "decoder's predicted IoU) is below this keep the student's answer; 0 = keep every slice",
    )
    masker_weight: float = Field(
        0.5, ge=0, le=1, description="mode 'average': weight of the masker's probability (the "
        "student's is 1 - weight)",
    )
    min_student_agreement: float = Field(
        0.0, ge=0, le=1, description="a fused pseudo-label whose Dice with the student's own "
        "largest component is below this is rejected for the student's answer (the masker "
        "followed another structure); 0 = never",
    )


class StudentInferenceConfig(StrictModel):
    """Sliding-window inference of the student over one volume."""

    overlap: float = Field(0.25, ge=0, lt=1)
    sw_batch_size: int = Field(2, ge=1)
    mode: str = Field("gaussian", pattern="^(constant|gaussian)$")
    flip_axes: tuple[int, ...] = Field(
        (), description="test-time augmentation: average the probability of the plain volume "
        "and of its flip along each listed axis (0-2); 3 axes = 4 passes",
    )

    @field_validator("flip_axes")
    @classmethod
    def _flip_axes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(a not in (0, 1, 2) for a in v) or len(set(v)) != len(v):
            raise ValueError(f"flip_axes must be distinct axes among 0, 1, 2, got {list(v)}")
        return v


class RuntimeConfig(StrictModel):
    """Where and how the round runs; excluded from the round fingerprint."""

    startup_grace_s: float = Field(
        10.0, ge=0, description="wait up to this long for every worker before the first dispatch"
    )
    workers: int = Field(1, ge=1, description="Ray actors")
    gpus_per_worker: float = Field(0.0, ge=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    tasks_in_flight: int = Field(2, ge=1, description="volumes queued per worker")
    max_attempts: int = Field(
        3, ge=1, description="tries per volume when its worker dies or fails unexpectedly"
    )
    max_attempts_bad_input: int = Field(
        1, ge=1,
        description="tries per volume whose failure is deterministic (bad data, a one-line "
        "SemisamError in the worker); capped by max_attempts; 1 = no retry",
    )
    lock_timeout_s: float = Field(
        120.0, gt=0, description="a round lock whose heartbeat is older than this is stale"
    )
    worker_start_timeout_s: float = Field(
        600.0, gt=0, description="abort the round when no worker is up for this long"
    )
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")
    torch_threads: int = Field(1, ge=1, description="intra-op threads per worker on CPU")
    spread: bool = Field(
        True, description="place workers on as many Ray nodes as possible (Ray's SPREAD)"
    )
    storage: StorageConfig = Field(
        default_factory=StorageConfig,
        description="object-store settings for URL stores (no secrets)",
    )


# LiteMedSAM was trained with box prompts only: points make its masks worse; boxes
# propagated from the student's best-agreeing slices (3 chains, a soft vote) and the
# average with the student beat the student's own mask on LA; a fused label that lost the
# student's structure (Dice < 0.4 with it) falls back to the student (docs/benchmarks.md);
# a config that sets a field keeps its value
add_kind(MaskerKind.litemedsam.value, None, {
    "prompts": {"positive_points": 0, "propagate": True, "propagate_chains": 3},
    "fusion": {"mode": FusionMode.average, "largest_component": True,
               "min_student_agreement": 0.4}})


class RoundConfig(StrictModel):
    """Everything a round needs besides the store and the student checkpoint path.

    Fields a config leaves unset take the masker's own defaults where `MASKER_DEFAULTS` has
    them (for example ``prompts.positive_points`` 0 with LiteMedSAM), else the field defaults.
    """

    prompts: PromptConfig = Field(default_factory=PromptConfig)
    intensity: IntensityConfig = Field(default_factory=IntensityConfig)
    masker: MaskerConfig = Field(default_factory=MaskerConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    student: StudentInferenceConfig = Field(default_factory=StudentInferenceConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    seed: int = 0

    def fingerprint_payload(self) -> dict:
        """The parts that change outputs (runtime placement does not)."""
        data = self.model_dump(mode="json", exclude={"runtime"})
        for section in data["masker"]:  # each masker's own exclusions
            model = type(getattr(self.masker, section))
            for name in getattr(model, "FINGERPRINT_EXCLUDE", ()):
                data["masker"][section].pop(name, None)
        if self.prompts.component == "largest":  # as rounds from before the choice existed
            data["prompts"].pop("component", None)
            data["prompts"].pop("component_prior", None)
        if self.prompts.prior_box is not True:
            # the prior's box came later: a round begun before recorded priors without it. Off,
            # it changes nothing; auto (None), it acts only with a masker adapted on loose
            # boxes, whose bytes are in the fingerprint, and it is fitted from the same labeled
            # volumes as the prior's centroid and volume, which stay in the payload
            for prior in (data["prompts"].get("component_prior") or {}).values():
                prior.pop("box", None)
        return data

    def with_overrides(self, overrides: dict[str, object]) -> RoundConfig:
        """A new config: this one with ``overrides`` (dotted field path -> value; None values
        are left alone) applied and validated again.

        Fields this config left unset that some masker defaults (`MASKER_DEFAULTS`) are dropped
        first, so that they take the default of the masker the overrides choose: a
        ``masker.kind random_walker`` on a default config must not keep LiteMedSAM's
        ``positive_points 0``. Every other field keeps its value.

        Raises:
            ConfigError: ``option: <first bad field>``.
        """
        data = self.model_dump(mode="json")
        for defaults in MASKER_DEFAULTS.values():
            for section, values in defaults.items():
                model = getattr(self, section)
                for name in values:
                    if name not in model.model_fields_set:
                        data.get(section, {}).pop(name, None)
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value.value if isinstance(value, Enum) else value
        try:
            return RoundConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"option: {first_validation_error(exc)}") from None

    @model_validator(mode="after")
    def _masker_defaults(self) -> RoundConfig:
        for section, values in MASKER_DEFAULTS.get(self.masker.kind, {}).items():
            model = getattr(self, section)
            for name, value in values.items():
                if name not in model.model_fields_set:
                    model.__dict__[name] = value  # stays "unset": a dump without unset fields
                    # and a re-validation with another masker gives that masker's default
        return self

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"seed must be >= 0, got {v}")
        return v


def load_round_config(path: Path | None) -> RoundConfig:
    """Read a JSON config file into a validated `RoundConfig` (defaults when ``path`` is None).

    Raises:
        ConfigError: one line naming the file and the first bad field.
    """
    return load_json_model(path, RoundConfig)
