"""Build a segment-anything model and load an (untrusted) state-dict checkpoint into it.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: a file that would need
arbitrary unpickling (code execution) is refused, never loaded. Every failure is a
`CheckpointError` with one line that names the file.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam

from semisam.schemas import CheckpointError, SamType

logger = logging.getLogger(__name__)

__all__ = ["check_state_dict", "expected_shapes", "load_sam", "read_state_dict"]

RANDOM_WEIGHTS_SEED = 0
_WRAPPER_KEYS = ("model", "state_dict")


def expected_shapes(model_type: SamType) -> dict[str, tuple[int, ...]]:
    """State-dict key -> tensor shape of the registry model ``model_type``.

    Built on the ``meta`` device: no memory and no initialisation, so even vit_h costs ~0.1 s.
    """
    with torch.device("meta"):
        model = sam_model_registry[SamType(model_type).value](checkpoint=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]"


def _load_file(path: Path) -> object:
    """``torch.load`` with weights_only, errors mapped to one-line `CheckpointError`."""
    if not path.exists():
        raise CheckpointError(f"{path}: SAM checkpoint not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: SAM checkpoint is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: corrupt or truncated SAM checkpoint (empty file)")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(
                f"{path}: refused: holds objects other than tensors (loaded with "
                f"weights_only=True){_unpickler_detail(exc)}"
            ) from None
        raise CheckpointError(f"{path}: corrupt SAM checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged archives
        raise CheckpointError(
            f"{path}: corrupt or truncated SAM checkpoint ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    """First sentence of an exception's text, for one-line messages."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return "no details"
    return lines[0].split(". ")[0].rstrip(".")[:160]


_BOILERPLATE = ("weights only load failed", "please file an issue", "check the documentation")


def _unpickler_detail(exc: BaseException) -> str:
    """The line of torch's weights_only error that says what was refused (e.g. a GLOBAL)."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not line.lower().startswith(_BOILERPLATE):
            return f": {line.rstrip('.')[:120]}"
    return ""


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` state dict on the CPU.

    Accepts a bare state dict (the official format) or one wrapped as ``{"model": sd}`` or
    ``{"state_dict": sd}``.

    Raises:
        CheckpointError: missing, corrupt, unsafe, or not a state dict.
    """
    path = Path(path)
    obj = _load_file(path)
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path}: not a state dict (holds {type(obj).__name__}"
            f"{', empty' if isinstance(obj, Mapping) else ''}; expected {{name: tensor}})"
        )
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: not a state dict (entry {key!r} is {type(value).__name__}, "
                "expected a tensor)"
            )
    return dict(obj)


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], model_type: SamType, path: Path | str
) -> None:
    """Check keys and shapes against the registry model before loading.

    Raises:
        CheckpointError: naming the first key whose shape does not fit, else the first missing
            or unexpected key, and the chosen type.
    """
    model_type = SamType(model_type)
    expected = expected_shapes(model_type)
    prefix = f"{path}: does not fit SAM {model_type.value}"
    for key, tensor in state_dict.items():
        want = expected.get(key)
        if want is not None and tuple(tensor.shape) != want:
            raise CheckpointError(
                f"{prefix}: {key!r} is {_shape_text(tuple(tensor.shape))}, "
                f"{model_type.value} expects {_shape_text(want)}"
            )
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    for what, keys in (("missing key", missing), ("unexpected key", unexpected)):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise CheckpointError(f"{prefix}: {what} {keys[0]!r}{more}")


def _random_sam(model_type: SamType) -> Sam:
    """Registry model with seeded random weights; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return sam_model_registry[model_type.value](checkpoint=None)


def load_sam(
    model_type: SamType | str, checkpoint: Path | str | None, device: torch.device | str
) -> Sam:
    """Build SAM ``model_type`` and load ``checkpoint`` into it.

    Args:
        model_type: registry key (vit_b, vit_l, vit_h). MedSAM checkpoints are vit_b.
        checkpoint: state-dict file (``.pth``); None = random weights (seeded), for tests and
            throughput runs only (a warning is logged).
        device: where the model goes.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        CheckpointError: one line naming the file (missing, corrupt, unsafe, not a state dict,
            wrong SAM type).
    """
    try:
        model_type = SamType(model_type)
    except ValueError:
        raise CheckpointError(
            f"unknown SAM type {model_type!r}; expected one of {[t.value for t in SamType]}"
        ) from None
    if checkpoint is None:
        logger.warning(
            "SAM %s has RANDOM weights (no checkpoint given): masks are meaningless",
            model_type.value,
        )
        model = _random_sam(model_type)
    else:
        path = Path(checkpoint)
        state_dict = read_state_dict(path)
        check_state_dict(state_dict, model_type, path)
        model = sam_model_registry[model_type.value](checkpoint=None)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:  # pragma: no cover - check_state_dict catches these first
            raise CheckpointError(
                f"{path}: does not fit SAM {model_type.value}: {_first_line(exc)}"
            ) from None
        logger.info("loaded SAM %s from %s", model_type.value, path)
    return model.to(torch.device(device)).eval()
