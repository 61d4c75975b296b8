"""Supervised student fit on the store's labeled volumes (CE + Dice).

The full SemiSAM training stage (Mean Teacher + SAM consistency) builds on this; on its own it
gives the round-0 student that localizes for the first pseudo-label round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from semisam.schemas import InputError, StudentSpec
from semisam.store import list_metas, open_store, read_image, read_label
from semisam.workers.student import build_student, save_student, zscore

from .patches import sample_patch

log = logging.getLogger(__name__)


def load_labeled(store: str | Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(id, z-scored XxYxZ float32 image, XxYxZ uint8 label)]`` of every labeled volume."""
    root = open_store(store, read_only=True)
    out = []
    for meta in list_metas(root):
        if meta.labeled:
            label = read_label(root, meta.volume_id)
            if label is not None:
                out.append((meta.volume_id, zscore(read_image(root, meta.volume_id)), label))
    if not out:
        raise InputError(f"{store}: no labeled volumes to train the student on")
    return out


def fit_supervised(
    store: str | Path,
    out: Path,
    spec: StudentSpec | None = None,
    iterations: int = 200,
    batch_size: int = 2,
    lr: float = 1e-3,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train a student on labeled patches and save it to ``out``.

    Args:
        iterations: optimizer steps.
        batch_size: patches per step.
        on_step: called with (step, loss) after every step (progress bars).

    Returns:
        The checkpoint path.
    """
    spec = spec or StudentSpec()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    volumes = load_labeled(store)
    model = build_student(spec)
    model.train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_value = float("nan")
    for step in range(iterations):
        imgs, labs = [], []
        for _ in range(batch_size):
            _, image, label = volumes[int(rng.integers(len(volumes)))]
            pi, pl = sample_patch(image, label, spec.patch_size, rng)
            imgs.append(pi)
            labs.append(pl)
        x = torch.from_numpy(np.stack(imgs)[:, None]).float()
        y = torch.from_numpy(np.stack(labs)[:, None].astype(np.int64))
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
        if on_step is not None:
            on_step(step, loss_value)
    log.info("supervised fit: %d iterations, final loss %.4f", iterations, loss_value)
    save_student(out, model.eval(), spec, {"iterations": iterations, "final_loss": loss_value,
                                          "labeled": [v[0] for v in volumes], "stage": "supervised"})
    return Path(out)
