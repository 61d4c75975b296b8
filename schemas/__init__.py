"""Pydantic models: the single source of truth for configs, records and the store layout."""

from .base import StrictModel
from .classes import MAX_CLASS_VALUE, ClassMap, binary_classes, default_name, parse_classes
from .config import (
    LITEMEDSAM_SHA256,
    FusionConfig,
    FusionMode,
    IntensityConfig,
    LiteMedSamConfig,
    MaskerConfig,
    MaskerKind,
    Modality,
    PromptConfig,
    RandomWalkerConfig,
    RoundConfig,
    RuntimeConfig,
    SamConfig,
    SamFamily,
    SamType,
    StudentInferenceConfig,
    bundled_litemedsam_checkpoint,
    load_round_config,
)
from .errors import (
    CheckpointError,
    ConfigError,
    InputError,
    RoundError,
    SemisamError,
    StoreError,
    no_sam_checkpoint,
)
from .layout import (
    CONFIDENCE_SCALE,
    MULTICLASS_SCHEMA_VERSION,
    NEW_STORE_SCHEMA_VERSION,
    SCHEMA_VERSION,
    output_path,
    round_path,
    validate_volume_id,
    volume_path,
)
from .loading import first_validation_error, load_json_model
from .records import (
    ClassStats,
    RoundMeta,
    RoundStatus,
    VolumeMeta,
    VolumeRecord,
    VolumeStats,
    VolumeStatus,
    utcnow,
)
from .storage import STORAGE_ENV, StorageConfig
from .student import StudentSpec
from .training import (
    AugmentConfig,
    BatchConfig,
    ExportModel,
    LoopConfig,
    LrSchedule,
    MeanTeacherConfig,
    OptimizerConfig,
    OptimizerKind,
    RampSchedule,
    SamConsistencyConfig,
    SamLoss,
    SamNormalization,
    SupervisedConfig,
    TrainConfig,
    load_loop_config,
    load_train_config,
)

__all__ = [
    "StrictModel", "ClassMap", "MAX_CLASS_VALUE", "binary_classes", "default_name", "parse_classes", "FusionConfig", "FusionMode", "IntensityConfig", "MaskerConfig", "MaskerKind",
    "LiteMedSamConfig", "bundled_litemedsam_checkpoint", "LITEMEDSAM_SHA256",
    "Modality", "PromptConfig", "RandomWalkerConfig", "RoundConfig", "RuntimeConfig", "SamConfig",
    "SamFamily", "SamType", "StudentInferenceConfig", "first_validation_error",
    "load_round_config", "CheckpointError", "ConfigError", "InputError", "RoundError",
    "SemisamError", "StoreError", "no_sam_checkpoint", "CONFIDENCE_SCALE", "SCHEMA_VERSION", "MULTICLASS_SCHEMA_VERSION", "NEW_STORE_SCHEMA_VERSION", "output_path",
    "round_path", "validate_volume_id", "volume_path", "ClassStats", "RoundMeta", "RoundStatus", "VolumeMeta",
    "VolumeRecord", "VolumeStats", "VolumeStatus", "utcnow", "StudentSpec", "STORAGE_ENV",
    "StorageConfig", "load_json_model", "AugmentConfig", "BatchConfig", "ExportModel",
    "LoopConfig", "LrSchedule", "MeanTeacherConfig", "OptimizerConfig", "OptimizerKind",
    "RampSchedule", "SamConsistencyConfig", "SamLoss", "SamNormalization", "SupervisedConfig",
    "TrainConfig", "load_loop_config", "load_train_config",
]
from .adaptation import (  # noqa: E402  (kept apart: masker adaptation)
    AdaptationMeta,
    AdaptAugmentConfig,
    AdaptBoxConfig,
    AdaptConfig,
    AdaptMaskPromptConfig,
    AdaptTarget,
    PseudoLabelSelection,
    load_adapt_config,
)

__all__ += ["AdaptationMeta", "AdaptAugmentConfig", "AdaptBoxConfig", "AdaptConfig",
            "AdaptMaskPromptConfig", "AdaptTarget", "PseudoLabelSelection", "load_adapt_config"]
from .pseudo_labels import PseudoLabelRank, RoundVolumeSelection  # noqa: E402

__all__ += ["PseudoLabelRank", "RoundVolumeSelection"]
from .round_work import VolumeWork, left_to_do, volume_work  # noqa: E402  (what a round has left)

__all__ += ["VolumeWork", "left_to_do", "volume_work"]
