"""Masker registry: a plain dict of builder functions keyed by `MaskerKind`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from semisam.schemas import ConfigError, MaskerConfig, MaskerKind

from .base import Masker

MaskerBuilder = Callable[[MaskerConfig, torch.device], Masker]


def _build_sam(config: MaskerConfig, device: torch.device) -> Masker:
    from .sam.masker import SamMasker

    return SamMasker(config.sam, device)


def _build_litemedsam(config: MaskerConfig, device: torch.device) -> Masker:
    from .litemedsam.masker import LiteMedSamMasker

    return LiteMedSamMasker(config.litemedsam, device)


def _build_random_walker(config: MaskerConfig, device: torch.device) -> Masker:
    from .random_walker import RandomWalkerMasker

    return RandomWalkerMasker(config.random_walker)


MASKERS: dict[MaskerKind, MaskerBuilder] = {
    MaskerKind.litemedsam: _build_litemedsam,
    MaskerKind.sam: _build_sam,
    MaskerKind.random_walker: _build_random_walker,
}


def build_masker(config: MaskerConfig, device: torch.device | str = "cpu") -> Masker:
    """Build the masker named by ``config.kind`` on ``device``."""
    try:
        builder = MASKERS[MaskerKind(config.kind)]
    except (KeyError, ValueError):
        raise ConfigError(f"field 'masker.kind': unknown masker {config.kind!r}") from None
    return builder(config, torch.device(device))
