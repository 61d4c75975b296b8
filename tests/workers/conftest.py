"""Fixtures shared by the worker tests."""

from __future__ import annotations

import pytest
from torch import nn


@pytest.fixture(scope="session")
def litemedsam_model() -> nn.Module:
    """LiteMedSAM with its bundled trained weights on the CPU (skips when the package or its
    weights are missing). Tests must not modify it."""
    from semisam.workers.maskers.litemedsam import load_litemedsam

    try:
        net, _, _ = load_litemedsam(None, "cpu")
    except Exception as exc:  # noqa: BLE001 - the package or its weights missing
        pytest.skip(f"bundled LiteMedSAM weights unavailable: {exc}")
    return net
