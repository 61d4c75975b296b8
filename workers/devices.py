"""Which torch device a stage runs on: one resolver for the round's workers, training,
evaluate and predict."""

from __future__ import annotations

import torch

from semisam.schemas import ConfigError

__all__ = ["check_device", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an explicit device is checked (`check_device`)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(name)


def check_device(name: str) -> torch.device:
    """``torch.device(name)`` when this machine has it.

    Raises:
        ConfigError: one line: not a device name, or a CUDA device on a machine without one
            (no GPU or driver) or past its last GPU.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {name!r}: not a device (cpu, cuda, cuda:1, auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: this machine has no usable CUDA GPU (no NVIDIA "
                              "GPU or driver); use --device cpu or leave it out") from None
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA GPU(s)") from None
    return device
