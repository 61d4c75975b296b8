"""One volume, end to end, inside a worker: student -> prompts -> masker -> fusion -> store.

No Ray here: `VolumeProcessor` is what a Ray actor wraps, and what unit tests call directly.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
import time
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import InputError, RoundConfig, SemisamError, VolumeRecord, VolumeStatus
from semisam.store import (
    clear_record,
    open_store,
    read_image,
    read_meta,
    store_write_failure,
    write_outputs,
    write_record,
)

from .fusion import MaskerView, fuse
from .intensity import window_volume
from .localization import foreground_mask, slice_prompts, stack_slices
from .maskers import Masker, SlicePrompt, build_masker
from .propagation import choose_starts, largest_starts, propagate_chains
from .student import load_student, predict_probability

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> tuple[float, float | None]:
    """(peak resident set of this process so far, peak CUDA memory since the last call) in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    if device.type != "cuda":
        return round(rss, 1), None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return round(rss, 1), round(peak, 1)


def check_image(volume_id: str, image: np.ndarray) -> None:
    """Reject volumes no worker can use (the store may hold data written by other tools)."""
    if image.ndim != 3 or 0 in image.shape:
        raise InputError(f"volume '{volume_id}': image must be a non-empty 3D array, got {image.shape}")
    bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
    if bad:
        raise InputError(f"volume '{volume_id}': image has {bad} NaN/Inf voxels")


class VolumeProcessor:
    """Holds the student and the masker of a round and processes volumes one at a time.

    Args:
        store: store location (local path or URL).
        round_index: round being produced.
        config: validated round config.
        student_checkpoint: student checkpoint path.
        masker: an already built masker (tests); default builds ``config.masker``.
        node: name of the node written into records (the Ray actor passes its Ray node identity);
            default: the hostname.
    """

    def __init__(
        self,
        store: str,
        round_index: int,
        config: RoundConfig,
        student_checkpoint: Path,
        masker: Masker | None = None,
        node: str | None = None,
    ) -> None:
        self.store = str(store)
        self.round = round_index
        self.config = config
        self.device = resolve_device(config.runtime.device)
        if self.device.type == "cpu":
            torch.set_num_threads(config.runtime.torch_threads)
        torch.manual_seed(config.seed)
        self.student, self.spec, _ = load_student(student_checkpoint, self.device)
        self.masker = masker or build_masker(config.masker, self.device)
        self.root = open_store(self.store, storage=config.runtime.storage)
        self.node = node or socket.gethostname()
        # `process` may run in several threads (a threaded Ray actor): the student and the
        # masker run one volume at a time under this lock, reading, prompting, fusing and
        # writing of other volumes go on meanwhile.
        self._device_lock = threading.Lock()

    def process(self, volume_id: str, attempt: int = 1) -> VolumeRecord:
        """Produce and store one volume's outputs; never raises for a bad volume.

        Returns:
            The record written: ``done`` (after both arrays are stored) or ``failed`` with the
            one-line reason.
        """
        clear_record(self.root, self.round, volume_id)
        try:
            record = self._run(volume_id, attempt)
        except SemisamError as exc:
            record = self._failed(volume_id, attempt, str(exc))
        except (ValueError, RuntimeError, OSError, MemoryError) as exc:
            if failure := store_write_failure(exc):  # the store's fault, said once by the driver
                log.warning("volume %s: %s (retryable)", volume_id, failure)
            else:
                log.exception("volume %s failed", volume_id)
            first = str(exc).splitlines()[0] if str(exc) else ""
            record = self._failed(volume_id, attempt, f"volume '{volume_id}': {type(exc).__name__}: {first}")
            record.retryable = True
        write_record(self.root, self.round, record)
        return record

    def _failed(self, volume_id: str, attempt: int, reason: str) -> VolumeRecord:
        return VolumeRecord(volume_id=volume_id, status=VolumeStatus.failed, attempt=attempt,
                            error=reason, node=self.node, worker_pid=os.getpid())

    def _mask_axis(self, slices: np.ndarray, prompts: list[SlicePrompt], mask: np.ndarray,
                   axis: int) -> tuple[list[int], np.ndarray, np.ndarray | None]:
        """The masker on one axis's prompted slices: all of them with the student's boxes, or
        (``prompts.propagate``) the ones reached by box propagation from ``propagate_chains``
        starts (the chains' soft vote): with ``propagate_start`` 'agreement' the slices where
        masker and student agree best, with 'largest' the student's largest slices. Returns the slice indices masked,
        their probabilities and scores."""
        cfg = self.config.prompts
        if not cfg.propagate:
            probs, score = self.masker.mask_slices_scored(slices, prompts)
            return [p.index for p in prompts], probs, score
        student = stack_slices(mask, [p.index for p in prompts], axis)
        areas = student.reshape(len(prompts), -1).sum(axis=1)
        session = self.masker.session(slices)
        if cfg.propagate_start == "agreement":
            starts = choose_starts(session, prompts, student, cfg.propagate_chains,
                                   cfg.propagate_chain_spacing)
        else:
            starts = largest_starts(prompts, areas, cfg.propagate_chains,
                                    cfg.propagate_chain_spacing)
        positions, probs, score = propagate_chains(session, prompts, areas, cfg.propagate_margin,
                                                   starts,
                                                   within_student=cfg.propagate_within_student)
        return [prompts[i].index for i in positions], probs, score

    def _run(self, volume_id: str, attempt: int) -> VolumeRecord:
        cfg = self.config
        axis = cfg.prompts.slice_axis
        timings: dict[str, float] = {}
        t = time.perf_counter()
        meta = read_meta(self.root, volume_id)
        image = read_image(self.root, volume_id)
        check_image(volume_id, image)
        timings["read"] = time.perf_counter() - t

        with self._device_lock:  # model stages take turns; CPU stages of other volumes overlap
            t = time.perf_counter()
            prob = predict_probability(self.student, image, self.spec, cfg.student, self.device)
            timings["student"] = time.perf_counter() - t

        t = time.perf_counter()
        mask = foreground_mask(prob, cfg.prompts)
        per_axis = {a: slice_prompts(mask, prob, cfg.prompts.model_copy(update={"slice_axis": a}))
                    for a in (axis, *cfg.prompts.extra_axes)}
        windowed = window_volume(image, cfg.intensity) if any(per_axis.values()) else None
        indices = {a: [p.index for p in prompts] for a, prompts in per_axis.items() if prompts}
        stacks = {a: stack_slices(windowed, idx, a) for a, idx in indices.items()}
        timings["prompts"] = time.perf_counter() - t
        views: dict[int, MaskerView] = {}
        scores: dict[int, np.ndarray] = {}
        timings["masker"] = 0.0
        for a, slices in stacks.items():
            with self._device_lock:
                t = time.perf_counter()
                kept, probs, score = self._mask_axis(slices, per_axis[a], mask, a)
                timings["masker"] += time.perf_counter() - t
            views[a] = MaskerView(a, kept, probs)
            if score is not None:
                scores[a] = score

        t = time.perf_counter()
        main = views.get(axis)
        fused = fuse(prob, main.prob if main else None, main.indices if main else [], cfg.fusion,
                     axis, extra_views=[v for a, v in views.items() if a != axis],
                     scores=scores.get(axis), extra_scores=[scores.get(a) for a in views if a != axis])
        geometry = {"volume_id": volume_id, "spacing": list(meta.spacing), "affine": meta.affine,
                    "source": meta.source, "round": self.round}
        checksums = write_outputs(self.root, self.round, volume_id, fused.pseudo_label,
                                  fused.confidence, axis, attrs=geometry)
        timings["write"] = time.perf_counter() - t
        rss_mb, device_mb = peak_memory_mb(self.device)
        return VolumeRecord(
            volume_id=volume_id, status=VolumeStatus.done, attempt=attempt, timings_s=timings,
            stats=fused.stats, checksums=checksums, node=self.node, worker_pid=os.getpid(),
            peak_rss_mb=rss_mb, peak_device_mb=device_mb,
        )
