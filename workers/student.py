"""The student network: build, save/load checkpoints, sliding-window probability maps.

Checkpoint format (a plain dict, loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "semisam-student", "version": 1, "spec": StudentSpec (JSON dict),
     "state_dict": {...}, "meta": {...free JSON: iterations, store fingerprint, ...}}
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet, UNet, VNet
from pydantic import ValidationError

from semisam.schemas import (
    CheckpointError,
    ClassMap,
    InputError,
    StudentInferenceConfig,
    StudentSpec,
    first_validation_error,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "semisam-student"
CHECKPOINT_VERSION = 1


def build_student(spec: StudentSpec) -> torch.nn.Module:
    """The network ``spec.architecture`` names, freshly initialised (from torch's global RNG).

    Every architecture maps a ``Bx1xXxYxZ`` z-scored input to ``Bx{out_channels}xXxYxZ``
    logits of the same spatial size, for sizes divisible by ``spec.size_divisor``.
    """
    return _BUILDERS[spec.architecture](spec)


def _build_unet(spec: StudentSpec) -> torch.nn.Module:
    """``monai.networks.nets.UNet`` with the spec's channels, strides, residual units, dropout."""
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=spec.out_channels,
        channels=spec.channels,
        strides=spec.strides,
        num_res_units=spec.num_res_units,
        dropout=spec.dropout,
    )


def _build_vnet(spec: StudentSpec) -> torch.nn.Module:
    """``monai.networks.nets.VNet`` (fixed widths 16-256, 4 halvings: sizes divisible by 16).

    ``spec.dropout`` becomes the probability of every dropout layer: MONAI's down/up dropouts
    and the skip-connection dropouts it fixes at 0.5 in its two finest up blocks, so that
    ``dropout=0`` means a deterministic network, as for the other architectures. Dropout holds
    no weights: the state dict does not depend on it.
    """
    p = spec.dropout
    model = VNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=spec.out_channels,
        dropout_prob_down=p if p > 0 else None,
        dropout_prob_up=(p if p > 0 else None, p),
    )
    for module in model.modules():
        if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.Dropout3d)):
            module.p = p
    return model


def _build_dynunet(spec: StudentSpec) -> torch.nn.Module:
    """``monai.networks.nets.DynUNet``: 3x3x3 kernels, a full-resolution input block then one
    level per stride (``channels`` as filters), affine instance norm, residual blocks when
    ``num_res_units > 0``, no deep supervision (the forward returns the logits only)."""
    levels = len(spec.strides) + 1
    return DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=spec.out_channels,
        kernel_size=[3] * levels,
        strides=[1, *spec.strides],
        upsample_kernel_size=list(spec.strides),
        filters=list(spec.channels),
        dropout=spec.dropout if spec.dropout > 0 else None,
        norm_name=("INSTANCE", {"affine": True}),
        deep_supervision=False,
        res_block=spec.num_res_units > 0,
    )


_BUILDERS: dict[str, Callable[[StudentSpec], torch.nn.Module]] = {
    "monai.UNet": _build_unet,
    "monai.VNet": _build_vnet,
    "monai.DynUNet": _build_dynunet,
}


def save_student(path: Path, model: torch.nn.Module, spec: StudentSpec, meta: dict | None = None) -> None:
    """Write a student checkpoint atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "spec": spec.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path) -> dict:
    """``torch.load`` an untrusted file with ``weights_only=True``; one-line errors naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else "unpickling failed"
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            msg = "refused: holds objects other than tensors (loaded with weights_only=True)"
        raise CheckpointError(f"{path}: {msg}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    except Exception as exc:  # noqa: BLE001 - the unpickler of a text or garbled file raises
        # IndexError, KeyError, TypeError, UnicodeDecodeError, struct.error, ... on bad bytes
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (a text file or "
                              f"garbled bytes: {type(exc).__name__})") from None


def load_student(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, StudentSpec, dict]:
    """Load a student checkpoint written by `save_student`.

    Returns:
        ``(model in eval mode on device, spec, meta)``.

    Raises:
        CheckpointError: missing, unreadable, unsafe, or not a semisam student checkpoint.
    """
    payload = read_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a semisam student checkpoint (no 'format: {CHECKPOINT_FORMAT}')")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: student checkpoint version {payload['version']} is newer than supported")
    try:
        spec = StudentSpec.model_validate(payload["spec"])
    except (KeyError, ValidationError) as exc:
        detail = first_validation_error(exc) if isinstance(exc, ValidationError) else "missing 'spec'"
        raise CheckpointError(f"{path}: invalid student spec ({detail})") from None
    model = build_student(spec)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "missing 'state_dict'"
        raise CheckpointError(f"{path}: weights do not fit the spec ({first})") from None
    return model.to(device).eval(), spec, dict(payload.get("meta", {}))


ORDERED_AXES_META_KEY = "ordered_axes"
"""Student checkpoint ``meta`` key: the axes (0-2) along which the training store's structures
lie one after the other (`semisam.training.augmentation.AugmentPlan.ordered_axes`), a list of
ints; written by ``semisam train`` for stores of several structures."""


def safe_flip_axes(requested: tuple[int, ...], meta: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Split requested test-time flip axes into those to use and those to drop.

    A flip along an axis on which the structures lie one after the other (anterior before
    posterior) shows the student each structure where the other belongs; averaging that view in
    mixes the classes up. The checkpoint's ``meta["ordered_axes"]`` names those axes; a
    checkpoint without it (one structure, or trained before it was recorded) drops nothing.

    Returns:
        ``(kept, dropped)``, each in the requested order.
    """
    ordered = {int(a) for a in meta.get(ORDERED_AXES_META_KEY, ()) or ()}
    kept = tuple(a for a in requested if a not in ordered)
    return kept, tuple(a for a in requested if a in ordered)


def zscore(image: np.ndarray) -> np.ndarray:
    """Per-volume z-score of an ``XxYxZ`` image (constant volumes become zeros), float32.

    Mean and standard deviation are summed in float64 and the voxels divided before the mean
    is taken off, so intensities near the float32 limit (a scaled export) give finite values
    instead of an overflow to Inf/NaN."""
    image = image.astype(np.float32, copy=False)
    mean, std = float(image.mean(dtype=np.float64)), float(image.std(dtype=np.float64))
    std = std if std > 0 and np.isfinite(std) else 1.0
    return image / np.float32(std) - np.float32(mean / std)


@torch.inference_mode()
def predict_probability(
    model: torch.nn.Module,
    image: np.ndarray,
    spec: StudentSpec,
    config: StudentInferenceConfig,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Foreground probability of one volume by sliding-window inference.

    With ``config.flip_axes`` (test-time augmentation) the result is the mean of the softmax
    of the plain volume and of the volume flipped along each listed axis (flipped back).

    Windows are ``spec.patch_size`` (a volume smaller than it on an axis is padded to it by
    MONAI's ``sliding_window_inference`` and cropped back), so the network only ever sees
    patch-sized inputs and any volume size works for every architecture.

    Args:
        image: ``XxYxZ`` float32 raw intensities (normalised here as the spec says).

    Returns:
        ``XxYxZ`` float32 in [0, 1]: softmax probability of class 1.
    """
    return _sliding_softmax(model, image, spec, config, device, channels=1)


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    spec: StudentSpec,
    config: StudentInferenceConfig,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """`predict_probability` for every output channel (multi-class students).

    Returns:
        ``CxXxYxZ`` float32 softmax probabilities, ``C = spec.out_channels`` (channel 0 the
        background, channel c the store's c-th class); they sum to 1 over ``C``.
    """
    return _sliding_softmax(model, image, spec, config, device, channels=slice(None))


@torch.inference_mode()
def _sliding_softmax(model: torch.nn.Module, image: np.ndarray, spec: StudentSpec,
                     config: StudentInferenceConfig, device: torch.device | str,
                     channels: int | slice) -> np.ndarray:
    """Sliding-window softmax of ``image``, channel(s) ``channels`` (an int: ``XxYxZ``; a
    slice: ``CxXxYxZ``), averaged over the flip views of ``config.flip_axes``."""
    x = torch.from_numpy(zscore(image))[None, None].to(device)
    views: list[tuple[int, ...]] = [()] + [(2 + a,) for a in config.flip_axes]
    prob = None
    for dims in views:
        view = torch.flip(x, dims) if dims else x
        logits = sliding_window_inference(
            view,
            roi_size=spec.patch_size,
            sw_batch_size=config.sw_batch_size,
            predictor=model,
            overlap=config.overlap,
            mode=config.mode,
        )
        p = torch.softmax(logits.float(), dim=1)[0, channels]
        spatial = p.ndim - 3  # index of the X axis in p: 0 (one channel) or 1 (CxXxYxZ)
        p = torch.flip(p, [d - 2 + spatial for d in dims]) if dims else p
        prob = p if prob is None else prob + p
    prob = prob / len(views)
    return prob.cpu().numpy().astype(np.float32)


def check_student_classes(spec: StudentSpec, classes: ClassMap, checkpoint: Path | str) -> None:
    """A K-class store needs a student with K + 1 output channels (channel c = class c).

    Raises:
        InputError: one line naming the checkpoint, its channels and the store's classes.
    """
    if spec.out_channels != classes.count + 1:
        raise InputError(f"student {checkpoint}: {spec.out_channels} output channels, but the "
                         f"store has {classes.count} class(es) ({show_classes(classes)}): it "
                         f"needs {classes.count + 1} (train it on this store)")


def show_classes(classes: ClassMap) -> str:
    """``1=anterior, 2=posterior``."""
    return ", ".join(f"{v}={n}" for v, n in classes.names.items())
