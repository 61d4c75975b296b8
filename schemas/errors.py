"""Errors users see. Each carries one line that names the file, volume or field at fault."""


class SemisamError(Exception):
    """Base: the CLI prints `str(exc)` on one line and exits non-zero (traceback with --debug)."""


class ConfigError(SemisamError):
    """A config file or option is invalid."""


class InputError(SemisamError):
    """An input volume, label or id is unusable."""


class CheckpointError(SemisamError):
    """A student or SAM checkpoint is missing, corrupt, unsafe or of the wrong type."""


class StoreError(SemisamError):
    """The store is missing, unwritable, of a newer schema, or inconsistent."""


class RoundError(SemisamError):
    """A round cannot run as asked (fingerprint mismatch, locked, ...)."""


def no_sam_checkpoint(model_type: str) -> str:
    """The one line for a SAM masker without weights (no vit weights ship with semisam)."""
    return (f"masker.sam.checkpoint: SAM {model_type} needs a checkpoint (--masker-checkpoint, a "
            "SAM or MedSAM .pth); for trained weights that ship with semisam use --masker "
            "litemedsam (random weights only with masker.sam.random_weights = true)")
