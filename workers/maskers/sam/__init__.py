"""segment-anything masker: checkpoint loading, SAM/MedSAM preprocessing, a batched encoder
(bf16, SDPA, compile) and a slice-aligned batched mask decoder.

Names are imported lazily (PEP 562) so that importing the package does not pull in torch and
segment-anything until one of them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SamMasker": "masker",
    "load_sam": "checkpoint",
    "read_state_dict": "checkpoint",
    "check_state_dict": "checkpoint",
    "expected_shapes": "checkpoint",
    "preprocess_slices": "preprocess",
    "scale_coords": "preprocess",
    "resized_shape": "preprocess",
    "input_shape": "preprocess",
    "upsample_logits": "preprocess",
    "low_res_probabilities": "preprocess",
    "mask_prompt_to_low_res": "preprocess",
    "FastImageEncoder": "encoder",
    "SliceEncoder": "encoder",
    "sdpa_attention": "encoder",
    "rel_pos_bias": "encoder",
    "InputPrompt": "decoder",
    "decode_slices": "decoder",
    "decode_aligned": "decoder",
    "select_masks": "decoder",
}

__all__ = [
    "FastImageEncoder",
    "InputPrompt",
    "SamMasker",
    "SliceEncoder",
    "check_state_dict",
    "decode_aligned",
    "decode_slices",
    "expected_shapes",
    "input_shape",
    "load_sam",
    "low_res_probabilities",
    "mask_prompt_to_low_res",
    "preprocess_slices",
    "read_state_dict",
    "rel_pos_bias",
    "resized_shape",
    "scale_coords",
    "sdpa_attention",
    "select_masks",
    "upsample_logits",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
