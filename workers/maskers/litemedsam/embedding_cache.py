"""`EmbeddingCache`: LiteMedSAM image embeddings on disk, addressed by slice content.

The image encoder is ~90% of a LiteMedSAM round on CPU (80-100 slices x ~2 s per LA volume) and
its output depends on the slice's pixels and the weights only, not on the student or the
prompts. Every later round of a loop, and every seed of a benchmark, encodes the same unlabeled
slices again; with a cache they only decode.

Layout under ``root``::

    <weights key>-<dtype>/<first 2 hex>/<sha256 of the slice>.npy    256x64x64 float32

The slice key hashes the ``HxW`` uint8 slice and its shape (so the same pixels in another
volume, store or axis share an entry); the weights key is the checkpoint's sha256 (or a hash of
the state dict for a model given in memory). Entries are written to a temporary file and renamed,
so concurrent workers on one node never see half an entry; an unreadable entry is encoded again
and overwritten. Embeddings are stored exactly (float32): a cached round equals the round that
filled the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingCache", "slice_key", "state_dict_key"]

PREPROCESS_VERSION = "v1"  # bump when preprocess_slices changes what the encoder sees


def slice_key(image: np.ndarray) -> str:
    """sha256 hex of one ``HxW`` uint8 slice (shape and bytes)."""
    digest = hashlib.sha256(f"{PREPROCESS_VERSION}:{image.shape[0]}x{image.shape[1]}:".encode())
    digest.update(np.ascontiguousarray(image, np.uint8).tobytes())
    return digest.hexdigest()


def state_dict_key(model: nn.Module) -> str:
    """sha256 hex of a model's parameters and buffers (names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}:".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


class EmbeddingCache:
    """Content-addressed ``256x64x64`` float32 embeddings of one model and encoder dtype.

    Args:
        root: the cache directory (created on first write).
        weights: the weights' sha256 (checkpoint file) or `state_dict_key`.
        dtype: the encoder precision ('float32' or 'bfloat16'): part of the key.
    """

    def __init__(self, root: Path, weights: str, dtype: str) -> None:
        self.dir = Path(root).expanduser() / f"{weights[:16]}-{dtype}"
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def load(self, key: str) -> np.ndarray | None:
        """The embedding stored under ``key``, or None (absent or unreadable)."""
        path = self.path(key)
        try:
            value = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("embedding cache: %s unreadable (%s); encoding the slice again", path, exc)
            return None
        if value.dtype != np.float32 or value.ndim != 3:
            logger.warning("embedding cache: %s holds %s %s; encoding the slice again",
                           path, value.dtype, value.shape)
            return None
        return value

    def save(self, key: str, embedding: np.ndarray) -> None:
        """Store one ``256x64x64`` embedding atomically (a failed write only logs)."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.ascontiguousarray(embedding, np.float32), allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("embedding cache: could not write %s (%s)", path, exc)

    def encode(self, slices: np.ndarray, encode: Callable[[np.ndarray], torch.Tensor], batch_size: int,
               device: torch.device) -> torch.Tensor:
        """``NxHxW`` uint8 slices -> ``Nx256x64x64`` float32 embeddings on ``device``: cached
        ones loaded, the others encoded by ``encode`` (``batch_size`` at a time) and stored."""
        keys = [slice_key(s) for s in slices]
        found = [self.load(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        out: list[torch.Tensor | None] = [None if f is None else torch.from_numpy(f).to(device)
                                          for f in found]
        for start in range(0, len(missing), batch_size):
            rows = missing[start:start + batch_size]
            encoded = encode(slices[rows]).float()
            for j, i in enumerate(rows):
                out[i] = encoded[j]
                self.save(keys[i], encoded[j].cpu().numpy())
        return torch.stack(out) if out else torch.zeros((0, 256, 64, 64), device=device)
