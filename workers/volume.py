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

from semisam.schemas import (
    ClassStats,
    InputError,
    RoundConfig,
    SemisamError,
    VolumeRecord,
    VolumeStats,
    VolumeStatus,
)
from semisam.store import (
    clear_record,
    open_store,
    read_class_map,
    read_image,
    read_meta,
    store_write_failure,
    write_outputs,
    write_record,
)

from .class_fusion import combine_classes
from .components import keep_component
from .devices import check_device, resolve_device  # noqa: F401 - check_device: re-exported
from .fusion import FusionResult, MaskerView, confidence_from_uint8, confidence_to_uint8, fuse
from .intensity import window_volume
from .localization import foreground_mask, slice_prompts, stack_slices
from .maskers import Masker, MaskerSession, SlicePrompt, build_masker
from .propagation import choose_starts, largest_starts, propagate_chains
from .student import safe_flip_axes
from .student_model import Student

log = logging.getLogger(__name__)


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


class _StackView(MaskerSession):
    """One class's prompted slices inside the stack of every class's prompted slices of an
    axis, so that the stack is encoded once for all classes (SAM-family sessions)."""

    def __init__(self, parent: MaskerSession, positions: list[int]) -> None:
        super().__init__(parent.masker, parent.slices[positions])
        self.parent, self.positions = parent, positions

    def mask(self, positions, prompts):
        return self.parent.mask([self.positions[p] for p in positions], prompts)


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
        self.student = Student.load(student_checkpoint, self.device)
        kept, dropped = safe_flip_axes(config.student.flip_axes, self.student.meta)
        if dropped:
            log.warning("student.flip_axes: leaving out the flips of axis %s: %s records its "
                        "structures lie one after the other along it (a flip swaps them)",
                        ", ".join(map(str, dropped)), student_checkpoint)
        self.student_inference = config.student.model_copy(update={"flip_axes": kept})
        self.masker = masker or build_masker(config.masker, self.device)
        self.root = open_store(self.store, storage=config.runtime.storage)
        self.classes = read_class_map(self.root)
        self.student.check_channels(self.classes)
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
                   axis: int, shared: MaskerSession | None = None
                   ) -> tuple[list[int], np.ndarray, np.ndarray | None]:
        """The masker on one axis's prompted slices: all of them with the student's boxes, or
        (``prompts.propagate``) the ones reached by box propagation from ``propagate_chains``
        starts (the chains' soft vote): with ``propagate_start`` 'agreement' the slices where
        masker and student agree best, with 'largest' the student's largest slices. ``shared``:
        a session over exactly ``slices`` that several classes share (multi-class rounds). Returns the slice indices masked,
        their probabilities and scores."""
        cfg = self.config.prompts
        if not cfg.propagate:
            probs, score = (shared.mask(list(range(len(prompts))), prompts) if shared is not None
                            else self.masker.mask_slices_scored(slices, prompts))
            return [p.index for p in prompts], probs, score
        student = stack_slices(mask, [p.index for p in prompts], axis)
        areas = student.reshape(len(prompts), -1).sum(axis=1)
        session = shared if shared is not None else self.masker.session(slices)
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
            if self.classes.count == 1:
                prob = self.student.probabilities(image, self.student_inference)
            else:
                probs = self.student.probabilities(image, self.student_inference, self.classes)
            timings["student"] = time.perf_counter() - t

        if cfg.prompts.component == "prior":  # the structure by the labeled volumes' prior
            priors = cfg.prompts.component_prior or {}
            if self.classes.count == 1:
                prob = keep_component(prob, cfg.prompts.threshold, meta.spacing,
                                      priors.get(self.classes.values[0]))
            else:
                for c, value in enumerate(self.classes.values, 1):
                    probs[c] = keep_component(probs[c], cfg.prompts.threshold, meta.spacing,
                                              priors.get(value))

        if self.classes.count == 1:
            t = time.perf_counter()
            mask, per_axis = self._class_prompts(prob)
            fused = self._fuse_class(image, prob, mask, per_axis, timings, t)
            label, confidence, stats = fused.pseudo_label, fused.confidence, fused.stats
        else:
            label, confidence, stats = self._fuse_classes(image, probs, timings)
        t = time.perf_counter()
        geometry = {"volume_id": volume_id, "spacing": list(meta.spacing), "affine": meta.affine,
                    "source": meta.source, "round": self.round}
        checksums = write_outputs(self.root, self.round, volume_id, label, confidence, axis,
                                  attrs=geometry)
        timings["write"] = time.perf_counter() - t
        rss_mb, device_mb = peak_memory_mb(self.device)
        return VolumeRecord(
            volume_id=volume_id, status=VolumeStatus.done, attempt=attempt, timings_s=timings,
            stats=stats, checksums=checksums, node=self.node, worker_pid=os.getpid(),
            peak_rss_mb=rss_mb, peak_device_mb=device_mb,
        )

    def _class_prompts(self, prob: np.ndarray) -> tuple[np.ndarray, dict[int, list[SlicePrompt]]]:
        """The student's foreground (``XxYxZ`` bool) of one class probability map and its
        prompts per slice axis (``prompts.slice_axis`` and ``extra_axes``)."""
        cfg = self.config.prompts
        mask = foreground_mask(prob, cfg)
        return mask, {a: slice_prompts(mask, prob, cfg.model_copy(update={"slice_axis": a}))
                      for a in (cfg.slice_axis, *cfg.extra_axes)}

    def _fuse_class(self, image: np.ndarray, prob: np.ndarray, mask: np.ndarray,
                    per_axis: dict[int, list[SlicePrompt]], timings: dict[str, float],
                    t_prompts: float, windowed: np.ndarray | None = None,
                    shared: dict[int, tuple[MaskerSession, list[int]]] | None = None
                    ) -> FusionResult:
        """Masker and fusion of one structure: ``prob`` (``XxYxZ`` student probability of it),
        its foreground ``mask`` and prompts. ``shared``: per axis a session over every class's
        prompted slices and their indices (multi-class rounds encode each slice once)."""
        cfg = self.config
        axis = cfg.prompts.slice_axis
        if windowed is None and any(per_axis.values()):
            windowed = window_volume(image, cfg.intensity)
        indices = {a: [p.index for p in prompts] for a, prompts in per_axis.items() if prompts}
        views: dict[int, MaskerView] = {}
        scores: dict[int, np.ndarray] = {}
        sessions: dict[int, MaskerSession | None] = {}
        stacks: dict[int, np.ndarray] = {}
        for a, idx in indices.items():
            if shared is None:
                assert windowed is not None
                stacks[a], sessions[a] = stack_slices(windowed, idx, a), None
            else:
                session, union = shared[a]
                view = _StackView(session, [union.index(i) for i in idx])
                stacks[a], sessions[a] = view.slices, view
        timings["prompts"] = timings.get("prompts", 0.0) + time.perf_counter() - t_prompts
        timings.setdefault("masker", 0.0)
        for a, slices in stacks.items():
            with self._device_lock:
                t = time.perf_counter()
                kept, probs, score = self._mask_axis(slices, per_axis[a], mask, a, sessions[a])
                timings["masker"] += time.perf_counter() - t
            views[a] = MaskerView(a, kept, probs)
            if score is not None:
                scores[a] = score
        t = time.perf_counter()
        main = views.get(axis)
        fused = fuse(prob, main.prob if main else None, main.indices if main else [], cfg.fusion,
                     axis, extra_views=[v for a, v in views.items() if a != axis],
                     scores=scores.get(axis), extra_scores=[scores.get(a) for a in views if a != axis])
        timings["fuse"] = timings.get("fuse", 0.0) + time.perf_counter() - t
        return fused

    def _fuse_classes(self, image: np.ndarray, probs: np.ndarray, timings: dict[str, float]
                      ) -> tuple[np.ndarray, np.ndarray, VolumeStats]:
        """A K-class volume: the one-structure pipeline per class on the student's softmax
        channels (``probs``: ``(K+1)xXxYxZ``), each axis's union of prompted slices encoded
        once, then `combine_classes`. Returns the uint8 label map (class values), the uint8
        confidence and the statistics (per class in ``stats.classes``)."""
        cfg = self.config
        t = time.perf_counter()
        per_class = [self._class_prompts(probs[c]) for c in range(1, self.classes.count + 1)]
        union = {a: sorted({p.index for _, pa in per_class for p in pa[a]})
                 for a in (cfg.prompts.slice_axis, *cfg.prompts.extra_axes)}
        union = {a: idx for a, idx in union.items() if idx}
        windowed = window_volume(image, cfg.intensity) if union else None
        shared: dict[int, tuple[MaskerSession, list[int]]] = {}
        for a, idx in union.items():
            assert windowed is not None
            with self._device_lock:
                t_enc = time.perf_counter()
                shared[a] = (self.masker.session(stack_slices(windowed, idx, a)), idx)
                timings["masker"] = timings.get("masker", 0.0) + time.perf_counter() - t_enc
        results = []
        for c, (mask, per_axis) in enumerate(per_class, 1):
            results.append(self._fuse_class(image, probs[c], mask, per_axis, timings, t,
                                            windowed, shared))
            t = time.perf_counter()
        label, confidence = combine_classes(
            [r.pseudo_label for r in results], [confidence_from_uint8(r.confidence) for r in results],
            probs, self.classes.values)
        return label, confidence_to_uint8(confidence), self._class_stats(label, confidence, results)

    def _class_stats(self, label: np.ndarray, confidence: np.ndarray,
                     results: list[FusionResult]) -> VolumeStats:
        """Volume statistics of a multi-class result: totals over classes, per-class figures
        in ``classes`` (means over the classes that have them at volume level)."""
        def mean(values: list[float | None]) -> float | None:
            have = [v for v in values if v is not None]
            return float(np.mean(have)) if have else None

        per = {}
        for value, r in zip(self.classes.values, results):
            per[value] = ClassStats(
                name=self.classes.name(value), slices_prompted=r.stats.slices_prompted,
                foreground_voxels=int(np.count_nonzero(label == value)),
                student_sam_dice=r.stats.student_sam_dice, masker_score=r.stats.masker_score,
                fused_student_dice=r.stats.fused_student_dice,
                masker_rejected=r.stats.masker_rejected)
        foreground = int(np.count_nonzero(label))
        return VolumeStats(
            slices_total=results[0].stats.slices_total,
            slices_prompted=sum(r.stats.slices_prompted for r in results),
            foreground_voxels=foreground, foreground_fraction=foreground / max(label.size, 1),
            mean_confidence=float(np.mean(confidence, dtype=np.float64)),
            student_sam_dice=mean([r.stats.student_sam_dice for r in results]),
            masker_score=mean([r.stats.masker_score for r in results]),
            fused_student_dice=mean([r.stats.fused_student_dice for r in results]),
            masker_rejected=any(r.stats.masker_rejected for r in results), classes=per)
