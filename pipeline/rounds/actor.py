"""The Ray actor that wraps `VolumeProcessor`: models load once per actor."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import ray

from semisam.schemas import RoundConfig
from semisam.store import worker_env

log = logging.getLogger(__name__)


def node_identity() -> str:
    """``<hostname>/<node ip>/<Ray node id[:8]>`` of the Ray node this process runs on.

    The hostname alone cannot tell apart several Ray nodes of one machine (or of pods that share a
    hostname pattern); the node id can. Outside Ray it is the hostname only.
    """
    host = socket.gethostname()
    if not ray.is_initialized():
        return host
    ctx = ray.get_runtime_context()
    return f"{host}/{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"


class VolumeActor:
    """Stateful worker: one student + one masker, many volumes.

    Args:
        store: store location.
        round_index: the round.
        config_json: `RoundConfig` as a JSON dict (validated again here).
        student_checkpoint: path readable from the worker's node.
    """

    def __init__(self, store: str, round_index: int, config_json: dict,
                 student_checkpoint: str) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        from semisam.workers.volume import VolumeProcessor

        config = RoundConfig.model_validate(config_json)
        self.node = node_identity()
        self.processor = VolumeProcessor(store, round_index, config, Path(student_checkpoint),
                                         node=self.node)

    def process(self, volume_id: str, attempt: int) -> dict:
        """Process one volume; returns its `VolumeRecord` as a JSON dict."""
        return self.processor.process(volume_id, attempt).model_dump(mode="json")

    def where(self) -> dict:
        """Node and process this actor runs in (for logs and fault tests)."""
        return {"node": self.node, "host": socket.gethostname(), "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id()}


def actor_options(config: RoundConfig) -> dict:
    """Ray options of the workers: resources, restarts, placement and the storage environment.

    ``runtime.spread`` asks Ray to place the actors on as many nodes as possible (``SPREAD``);
    the storage variables of `semisam.store.worker_env` (endpoint, region, ``SEMISAM_STORAGE``,
    and credentials only with ``storage.forward_credentials``) are passed in ``runtime_env`` so
    that workers on any node open the store the way the driver does.
    """
    rt = config.runtime
    options: dict = {"num_cpus": rt.cpus_per_worker, "num_gpus": rt.gpus_per_worker,
                     "max_restarts": -1, "max_task_retries": 0,
                     # a threaded actor: the queued volumes' CPU stages overlap the model stages
                     "max_concurrency": rt.tasks_in_flight}
    if rt.spread:
        options["scheduling_strategy"] = "SPREAD"
    env = worker_env(rt.storage)
    if env:
        options["runtime_env"] = {"env_vars": env}
        log.debug("workers get storage environment: %s", ", ".join(sorted(env)))
    return options


def actor_class(config: RoundConfig):
    """`VolumeActor` as a Ray actor class with the round's resource request.

    Actors restart after a crash (``max_restarts=-1``); the driver, not Ray, re-submits the
    volume that was in flight, so it can count attempts.
    """
    return ray.remote(**actor_options(config))(VolumeActor)
