"""Adds the ``box`` kind to semisam's masker registry (imported by the entry point)."""

from __future__ import annotations

from semisam.workers.maskers import MaskerSpec, register

from .settings import BoxSettings


def _build(config, device):  # noqa: ANN001, ANN202 - the registry's builder signature
    from .masker import BoxMasker

    return BoxMasker(config.box)


register(MaskerSpec("box", "box", _build, settings_model=BoxSettings,
                    round_defaults={"prompts": {"positive_points": 0}}))
