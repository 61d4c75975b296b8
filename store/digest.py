"""Content digests: the one sha256 of a file (checkpoints, input scans) and of an array.

Every layer hashes files (the masker's checkpoint in workers/, the student's and the input
scans' in pipeline/), so the helper lives here, the lowest layer that reads bytes; the
array digest of a round's outputs sits beside it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["array_sha256", "sha256_file", "update_from_file"]

_CHUNK_BYTES = 1 << 20


def update_from_file(digest: Any, path: Path | str, chunk_bytes: int = _CHUNK_BYTES) -> None:
    """Feed the bytes of ``path`` into ``digest`` (a ``hashlib`` object), ``chunk_bytes`` at a
    time: checkpoints are GBs, so a file is never read whole.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it is missing).
    """
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)


def sha256_file(path: Path | str, chunk_bytes: int = _CHUNK_BYTES) -> str:
    """Hex sha256 of the bytes of the file ``path``.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it is missing).
    """
    digest = hashlib.sha256()
    update_from_file(digest, path, chunk_bytes)
    return digest.hexdigest()


def array_sha256(data: np.ndarray) -> str:
    """sha256 of an array's C-order bytes (dtype and shape are not hashed)."""
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
