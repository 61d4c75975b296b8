"""The resume state of an adaptation run: ``OUT.state.pt`` beside the adapted checkpoint.

Tensors, lists and plain values only (``torch.load(weights_only=True)``)::

    {"format": "semisam-adapt-state", "version": 1, "config": AdaptConfig (JSON dict),
     "store_fingerprint": str, "iteration": int, "stale": int, "best_iteration": int,
     "best_dice": float, "elapsed_s": float, "model": `tuned_state`,
     "best_state": tuned state dicts (`tuned_state`), "optimizer": state dict,
     "rng": {"numpy": PCG64 state dict, "torch": ByteTensor}}
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import AdaptConfig, CheckpointError
from semisam.workers.maskers.adaptable import Adaptable
from semisam.workers.maskers.sam.checkpoint import _load_file

__all__ = ["config_changes", "load_resume_state", "resume_path", "save_resume_state",
           "tuned_state"]

STATE_FORMAT = "semisam-adapt-state"
STATE_VERSION = 1
RUNTIME_FIELDS = frozenset({"threads", "embedding_cache"})
"""`AdaptConfig` fields that say where and how fast a run computes, not what it trains: a
state may be resumed with other values (another machine's cores, another cache directory)."""


def config_changes(saved: dict, config: AdaptConfig) -> list[str]:
    """``field: saved -> now`` for every field of ``config`` that differs from the ``saved``
    config (JSON dict), runtime fields aside; a field missing from ``saved`` (written before
    the field existed) counts as its default."""
    now = config.model_dump(mode="json")
    default = AdaptConfig().model_dump(mode="json")
    return [f"{k}: {saved.get(k, default.get(k))!r} -> {now[k]!r}" for k in sorted(now)
            if k not in RUNTIME_FIELDS and saved.get(k, default.get(k)) != now[k]]


def resume_path(out: Path) -> Path:
    """``adapted.pth`` -> ``adapted.pth.state.pt``."""
    out = Path(out)
    return out.with_name(out.name + ".state.pt")


def tuned_state(masker: Adaptable, target: str) -> dict[str, torch.Tensor]:
    """A CPU copy of the state ``target`` may change: the decoder side (every key outside the
    image encoder) and the encoder parts it tunes (`Adaptable.tuned_encoder_keys`)."""
    tuned = masker.tuned_encoder_keys(target)
    return {k: v.detach().cpu().clone() for k, v in masker.model.state_dict().items()
            if not k.startswith("image_encoder.") or k.startswith(tuned)}


def save_resume_state(path: Path, masker: Adaptable, optimizer: torch.optim.Optimizer,
                      state: dict) -> None:
    """Write the run's state atomically (temporary file, then rename)."""
    config: AdaptConfig = state["config"]
    payload = {
        "format": STATE_FORMAT, "version": STATE_VERSION,
        "config": config.model_dump(mode="json"), "store_fingerprint": state["fingerprint"],
        "iteration": state["iteration"], "stale": state["stale"],
        "best_iteration": state["best_iteration"], "best_dice": float(state["best_dice"]),
        "elapsed_s": state["elapsed"] + time.perf_counter() - state["start"],
        "model": tuned_state(masker, config.target.value),
        "best_state": {k: v.cpu() for k, v in state["best_state"].items()},
        "optimizer": optimizer.state_dict(),
        "rng": {"numpy": state["rng"].bit_generator.state, "torch": torch.get_rng_state()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_resume_state(path: Path, masker: Adaptable, optimizer: torch.optim.Optimizer,
                      state: dict) -> None:
    """Restore a run from ``path`` into ``masker``, ``optimizer`` and ``state``.

    Raises:
        CheckpointError: unreadable, not an adaptation state, or of another config or store.
    """
    payload = _load_file(Path(path))
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a semisam adaptation resume state")
    config: AdaptConfig = state["config"]
    saved = payload.get("config")
    changes = config_changes(saved, config) if isinstance(saved, dict) else ["config: missing"]
    if changes:
        raise CheckpointError(f"{path}: written with another adaptation config "
                              f"({'; '.join(changes)}); delete it or rerun with the same config")
    if payload.get("store_fingerprint") != state["fingerprint"]:
        raise CheckpointError(f"{path}: the store changed since this state was written; delete "
                              "it to start again")
    device = next(masker.model.parameters()).device
    masker.model.load_state_dict({k: v.to(device) for k, v in payload["model"].items()},
                                 strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    rng = np.random.default_rng()
    rng.bit_generator.state = payload["rng"]["numpy"]
    torch.set_rng_state(payload["rng"]["torch"])
    state.update(iteration=int(payload["iteration"]), stale=int(payload["stale"]),
                 best_iteration=int(payload["best_iteration"]),
                 best_dice=float(payload["best_dice"]), elapsed=float(payload["elapsed_s"]),
                 best_state={k: v.to(device) for k, v in payload["best_state"].items()}, rng=rng)
