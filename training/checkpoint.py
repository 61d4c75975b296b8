"""Resume checkpoints of the training stage (``CKPT.state.pt`` next to the student ``CKPT``).

The student checkpoint ``CKPT`` is a plain `semisam.workers.student` checkpoint (what rounds
load); its ``meta`` carries the config, the iteration, the store fingerprint and, for a store
with a class map other than ``{1: "foreground"}``, that map (``meta["classes"]``, `ClassMap`
attribute form ``{"1": "name", ...}``: channel ``c`` is the ``c``-th value). The state file
holds everything needed to continue a run bit for bit, as tensors, lists and plain values
only, so both load with ``torch.load(weights_only=True)``::

    {"format": "semisam-train-state", "version": 1, "iteration": int, "config": TrainConfig
     (JSON dict), "store_fingerprint": str, "round": int | None, "elapsed_s": float,
     "model": state_dict, "ema": state_dict, "optimizer": state_dict,
     "rng": {"numpy": PCG64 state dict, "python": list, "torch": ByteTensor,
             "cuda": [ByteTensor], "noise": ByteTensor}}
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import CheckpointError, TrainConfig
from semisam.schemas.settings import env_name, load_settings
from semisam.workers.student import read_checkpoint
from semisam.workers.student_model import (  # noqa: F401 - re-exported for training
    CLASSES_META_KEY,
    checkpoint_classes,
)

log = logging.getLogger(__name__)

STATE_FORMAT = "semisam-train-state"
STATE_VERSION = 1
def state_path(checkpoint: Path) -> Path:
    """``student.pt`` -> ``student.pt.state.pt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".state.pt")


def capture_rng(rng: np.random.Generator, noise: torch.Generator) -> dict:
    """Every random state a training step draws from."""
    version, internal, gauss = random.getstate()
    return {
        "numpy": rng.bit_generator.state,
        "python": [version, list(internal), gauss],
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "noise": noise.get_state(),
    }


def restore_rng(state: dict, rng: np.random.Generator, noise: torch.Generator) -> None:
    """Inverse of `capture_rng`."""
    rng.bit_generator.state = state["numpy"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    noise.set_state(state["noise"])


def _cpu(state_dict: dict) -> dict:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state_dict.items()}


def _optimizer_cpu(state: dict) -> dict:
    return {"state": {k: _cpu(v) for k, v in state["state"].items()},
            "param_groups": state["param_groups"]}


def save_state(path: Path, *, model: torch.nn.Module, ema: torch.nn.Module,
               optimizer: torch.optim.Optimizer, iteration: int, config: TrainConfig,
               fingerprint: str, round_index: int | None, rng: dict, elapsed_s: float) -> None:
    """Write a resume checkpoint atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": STATE_FORMAT, "version": STATE_VERSION, "iteration": int(iteration),
        "config": config.model_dump(mode="json"), "store_fingerprint": fingerprint,
        "round": round_index, "elapsed_s": float(elapsed_s),
        "model": _cpu(model.state_dict()), "ema": _cpu(ema.state_dict()),
        "optimizer": _optimizer_cpu(optimizer.state_dict()), "rng": rng,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


HOLD_ENV = env_name("hold_after_checkpoint")
"""Environment variable naming a file: while that file exists, a training run waits after each
resume checkpoint it writes (a pause point for tests; `Settings.hold_after_checkpoint`)."""


def hold_after_checkpoint(state: Path) -> None:
    """Wait, after ``state`` was written, while the file named by ``$SEMISAM_HOLD_AFTER_CHECKPOINT``
    exists (polled every 20 ms); returns at once when the variable is unset.

    A signal (Ctrl-C, SIGTERM) interrupts the wait like it interrupts training, so a test can stop
    a run at a known checkpoint whatever the machine's speed; deleting the file lets it go on.
    """
    hold = load_settings().hold_after_checkpoint
    if hold is None or not hold.exists():
        return
    log.info("%s written; holding while %s exists", state, hold)
    while hold.exists():
        time.sleep(0.02)


def load_state(path: Path) -> dict:
    """Read a resume checkpoint (``weights_only=True``).

    Raises:
        CheckpointError: missing, unreadable, unsafe, or not a training state.
    """
    payload = read_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a semisam training state (no 'format: {STATE_FORMAT}')")
    if payload.get("version", 0) > STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {payload['version']} is newer than supported")
    return payload


def check_resumable(payload: dict, path: Path, config: TrainConfig, fingerprint: str,
                    round_index: int | None) -> None:
    """Refuse to continue a run with another config, store content or round.

    Raises:
        CheckpointError: one line naming what differs.
    """
    now = config.model_dump(mode="json")
    try:  # through the model, so fields added later with their defaults still compare equal
        saved = TrainConfig.model_validate(payload["config"]).model_dump(mode="json")
    except ValueError:
        saved = payload["config"]
    if saved != now:
        changed = sorted(k for k in now if saved.get(k) != now[k])
        raise CheckpointError(f"{path}: was trained with another config (differs in "
                              f"{', '.join(changed) or 'nested fields'}); drop --resume to restart")
    if payload.get("round") != round_index:
        raise CheckpointError(f"{path}: was trained with round {payload.get('round')}, not "
                              f"{round_index}; drop --resume to restart")
    if payload["store_fingerprint"] != fingerprint:
        raise CheckpointError(f"{path}: the store changed since this checkpoint (fingerprint "
                              f"{payload['store_fingerprint'][:12]} != {fingerprint[:12]}); "
                              "drop --resume to restart")
