"""Masker registry: one `MaskerSpec` per `MaskerKind`, the only place that knows what a kind implies.

A spec says where the kind's settings live in `MaskerConfig` (its section), which checkpoint
file it loads (hashed into the round fingerprint), how that file is vetted on the driver before
any worker starts, which prompt/fusion defaults it brings (data in `schemas.masker_kinds`), which of
its fields the fingerprint leaves out, and how to build the masker. Pipeline code asks the spec
and never tests the kind. Importing this module loads no torch: checkpoint libraries and
maskers are imported inside the functions that need them.

A new kind is one folder plus one `register` call: its spec names its settings model (the
section ``masker.<kind>`` of the round config) and defaults; a kind in another package
registers from the module its ``semisam.maskers`` entry point names (docs/masker-plugins.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from semisam.schemas import (
    CheckpointError,
    ConfigError,
    MaskerConfig,
    MaskerKind,
    no_sam_checkpoint,
)
from semisam.schemas.masker_kinds import MASKER_DEFAULTS, add_kind, load_plugins

if TYPE_CHECKING:
    import torch
    from pydantic import BaseModel

    from .base import Masker

MaskerBuilder = Callable[[MaskerConfig, "torch.device"], "Masker"]


def _no_checkpoint(config: MaskerConfig) -> Path | None:
    return None


def _nothing_to_vet(config: MaskerConfig) -> None:
    return None


@dataclass(frozen=True)
class MaskerSpec:
    """What one masker kind implies.

    Attributes:
        kind: the `MaskerKind` value it serves.
        section: the `MaskerConfig` field holding its settings (e.g. ``"litemedsam"``).
        build: ``(masker config, device) -> Masker``.
        checkpoint: the checkpoint file a round with this masker loads (resolved: LiteMedSAM's
            bundled weights when none is set), or None when it loads none.
        vet: loads the checkpoint on the driver and raises `CheckpointError` if it is missing,
            unsafe or not this kind's model; called once before any worker starts.
        takes_checkpoint: whether ``--masker-checkpoint`` may set ``<section>.checkpoint``.
        settings_model: a kind added outside the built-ins (a plugin): the model of its
            settings, section ``masker.<kind>`` (built-in kinds' sections are `MaskerConfig`
            fields and leave this None).
        round_defaults: a plugin kind's prompt/fusion defaults, ``{section: {field: value}}``
            (built-in kinds keep theirs in `schemas.config`).
    """

    kind: str
    section: str
    build: MaskerBuilder
    checkpoint: Callable[[MaskerConfig], Path | None] = _no_checkpoint
    vet: Callable[[MaskerConfig], None] = _nothing_to_vet
    takes_checkpoint: bool = False
    settings_model: type[BaseModel] | None = None
    round_defaults: Mapping[str, Mapping[str, object]] | None = None

    def settings(self, config: MaskerConfig):  # noqa: ANN201 - the section's own model
        """This kind's settings model inside ``config`` (e.g. ``config.litemedsam``)."""
        return getattr(config, self.section)

    @property
    def defaults(self) -> dict[str, dict[str, object]]:
        """Prompt/fusion defaults the kind brings (`schemas.masker_kinds.MASKER_DEFAULTS`)."""
        return MASKER_DEFAULTS.get(self.kind, {})

    @property
    def fingerprint_exclusions(self) -> tuple[str, ...]:
        """Its settings fields that do not change outputs (declared on the settings model)."""
        model = self.settings_model or MaskerConfig.model_fields[self.section].annotation
        return tuple(getattr(model, "FINGERPRINT_EXCLUDE", ()))

    def set_checkpoint(self, config: MaskerConfig, path: Path) -> None:
        """Point the kind at ``path`` (``--masker-checkpoint``).

        Raises:
            ConfigError: the kind takes no checkpoint.
        """
        if not self.takes_checkpoint:
            raise ConfigError(f"--masker-checkpoint: the {self.kind} masker takes no checkpoint")
        self.settings(config).checkpoint = path

    def given_checkpoint(self, config: MaskerConfig) -> Path | None:
        """The checkpoint the config names explicitly (None: none, or the bundled default)."""
        return self.settings(config).checkpoint if self.takes_checkpoint else None


def _build_sam(config: MaskerConfig, device: torch.device) -> Masker:
    from .sam.masker import SamMasker

    return SamMasker(config.sam, device)


def _vet_sam(config: MaskerConfig) -> None:
    sam = config.sam
    if sam.checkpoint is None:
        if not sam.random_weights:
            raise CheckpointError(no_sam_checkpoint(sam.model_type.value))
        return
    from .sam.checkpoint import check_state_dict, read_state_dict

    check_state_dict(read_state_dict(sam.checkpoint), sam.model_type, sam.checkpoint)


def _build_litemedsam(config: MaskerConfig, device: torch.device) -> Masker:
    from .litemedsam.masker import LiteMedSamMasker

    return LiteMedSamMasker(config.litemedsam, device)


def _vet_litemedsam(config: MaskerConfig) -> None:
    from .litemedsam.checkpoint import check_lite_state_dict, resolve_checkpoint
    from .sam.checkpoint import read_state_dict

    path, _ = resolve_checkpoint(config.litemedsam.checkpoint)
    check_lite_state_dict(read_state_dict(path), path)


def _build_random_walker(config: MaskerConfig, device: torch.device) -> Masker:
    from .random_walker import RandomWalkerMasker

    return RandomWalkerMasker(config.random_walker)


SPECS: dict[str, MaskerSpec] = {}


def register(spec: MaskerSpec) -> MaskerSpec:
    """Add (or replace) the spec of ``spec.kind``; returns it.

    A kind with a ``settings_model`` (a plugin) also becomes a valid ``masker.kind`` of the
    round config, its section ``masker.<kind>`` validated by that model.

    Raises:
        ConfigError: a plugin's section is not named after its kind, or it takes a built-in name.
    """
    if spec.settings_model is not None:
        if spec.section != spec.kind:
            raise ConfigError(f"masker plugin {spec.kind!r}: its section must be named "
                              f"{spec.kind!r}, not {spec.section!r}")
        add_kind(spec.kind, spec.settings_model, spec.round_defaults)
    SPECS[spec.kind] = spec
    return spec


register(MaskerSpec(MaskerKind.litemedsam.value, "litemedsam", _build_litemedsam,
                    checkpoint=lambda c: c.litemedsam.resolved_checkpoint(),
                    vet=_vet_litemedsam, takes_checkpoint=True))
register(MaskerSpec(MaskerKind.sam.value, "sam", _build_sam,
                    checkpoint=lambda c: c.sam.checkpoint, vet=_vet_sam, takes_checkpoint=True))
register(MaskerSpec(MaskerKind.random_walker.value, "random_walker", _build_random_walker))


def masker_spec(kind: MaskerKind | str) -> MaskerSpec:
    """The spec of ``kind``.

    Raises:
        ConfigError: no masker of that kind is registered.
    """
    name = kind.value if isinstance(kind, MaskerKind) else str(kind)
    if name not in SPECS:
        load_plugins()  # a kind from another package registers itself when its entry point loads
    try:
        return SPECS[name]
    except KeyError:
        raise ConfigError(f"field 'masker.kind': unknown masker {name!r}") from None


MASKERS = SPECS  # the name callers of the registry knew


def build_masker(config: MaskerConfig, device: torch.device | str = "cpu") -> Masker:
    """Build the masker named by ``config.kind`` on ``device``."""
    import torch

    return masker_spec(config.kind).build(config, torch.device(device))
