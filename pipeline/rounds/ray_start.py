"""The one Ray start of rounds and predict (`ensure_ray`), and the one way their Ray errors
become a one-line reason (`ray_error_line`): used by `pipeline.rounds.driver`, `pipeline.rounds.dispatch` and
`pipeline.predict`."""

from __future__ import annotations

import logging
import re

import ray

__all__ = ["ensure_ray", "ray_error_line"]


def ensure_ray(address: str | None, num_cpus: int,
               object_store_bytes: int = 256 * 1024 * 1024) -> bool:
    """Nothing when Ray is already up, else join the cluster at ``address`` or (``address`` None
    or empty) start a local Ray of ``num_cpus`` CPUs and an object store of
    ``object_store_bytes`` bytes, without a dashboard.

    Returns:
        True if started (or joined) here: the caller shuts it down.
    """
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return True
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        object_store_memory=object_store_bytes,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    return True


def ray_error_line(exc: BaseException) -> str:
    """The last non-blank line of a (Ray) error, stripped, without the exception's module path
    (``CheckpointError: x.pt: not a ...``), at most 300 characters; the exception's class name
    when the error has no text."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = lines[-1] if lines else type(exc).__name__
    return re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", line)[:300]
