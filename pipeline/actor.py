"""The Ray actor that wraps `VolumeProcessor`: models load once per actor."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import ray

from semisam.schemas import RoundConfig


class VolumeActor:
    """Stateful worker: one student + one masker, many volumes.

    Args:
        store: store location.
        round_index: the round.
        config_json: `RoundConfig` as a JSON dict (validated again here).
        student_checkpoint: path readable from the worker's node.
    """

    def __init__(self, store: str, round_index: int, config_json: dict, student_checkpoint: str) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        from semisam.workers.volume import VolumeProcessor

        config = RoundConfig.model_validate(config_json)
        self.processor = VolumeProcessor(store, round_index, config, Path(student_checkpoint))

    def process(self, volume_id: str, attempt: int) -> dict:
        """Process one volume; returns its `VolumeRecord` as a JSON dict."""
        return self.processor.process(volume_id, attempt).model_dump(mode="json")

    def where(self) -> dict:
        """Node and process this actor runs in (for logs and fault tests)."""
        return {"node": socket.gethostname(), "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id()}


def actor_class(config: RoundConfig):
    """`VolumeActor` as a Ray actor class with the round's resource request.

    Actors restart after a crash (``max_restarts=-1``); the driver, not Ray, re-submits the
    volume that was in flight, so it can count attempts.
    """
    rt = config.runtime
    return ray.remote(
        num_cpus=rt.cpus_per_worker, num_gpus=rt.gpus_per_worker, max_restarts=-1, max_task_retries=0
    )(VolumeActor)
