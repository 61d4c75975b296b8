"""One volume, end to end, inside a worker: the README's per-volume steps.

`VolumeProcessor._run` is the steps, one call each: read the volume, run the student (1), keep
each structure's component (with ``prompts.prior_box``, check it against the masker prompted by
the labeled volumes' box) and build its prompts (2), window the image and run the masker on
the prompted slices (3), fuse (4), write the arrays and the record (5). A store of one
structure is the case ``K = 1``: the same calls, with the combination of classes left out.
Stage times go into the record through a `StageClock`.

No Ray here: `VolumeProcessor` is what a Ray actor wraps, and what unit tests call directly.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import (
    ClassStats,
    InputError,
    RoundConfig,
    SemisamError,
    VolumeMeta,
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
from .fusion import (
    FusionResult,
    MaskerView,
    confidence_from_uint8,
    confidence_to_uint8,
    fuse_views,
)
from .intensity import window_volume
from .localization import foreground_mask, slice_prompts
from .maskers import Masker, build_masker
from .masking import AxisStack, ClassPrompts, axis_stacks, class_slices, mask_axis, share_stacks
from .prior_box import PriorBoxCheck, check_with_prior_box, prior_box_on
from .stage_clock import StageClock
from .student import safe_flip_axes
from .student_model import Student

log = logging.getLogger(__name__)

STAGES = ("read", "student", "prompts", "masker", "fuse", "write")
"""The stages of `VolumeRecord.timings_s`, seconds each (every record holds all six)."""


@dataclass(frozen=True)
class VolumeInput:
    """A volume as read: its id, meta and ``XxYxZ`` float image (finite, `check_image`)."""

    volume_id: str
    meta: VolumeMeta
    image: np.ndarray


@dataclass(frozen=True)
class StudentMaps:
    """The student's answer for one volume of ``K`` structures.

    Attributes:
        foreground: K ``XxYxZ`` float32 probability maps in [0, 1], ``foreground[k]`` the
            class value ``classes.values[k]`` (with ``K > 1`` views of ``softmax``).
        softmax: the ``(K+1)xXxYxZ`` softmax (channel 0 the background) when ``K > 1``: it
            breaks ties between classes that claim one voxel; None for one structure.
    """

    foreground: list[np.ndarray]
    softmax: np.ndarray | None


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
        self.student = Student.load(student_checkpoint, self.device)
        kept, dropped = safe_flip_axes(config.student.flip_axes, self.student.meta)
        if dropped:
            log.warning("student.flip_axes: leaving out the flips of axis %s: %s records its "
                        "structures lie one after the other along it (a flip swaps them)",
                        ", ".join(map(str, dropped)), student_checkpoint)
        self.student_inference = config.student.model_copy(update={"flip_axes": kept})
        self.masker = masker or build_masker(config.masker, self.device)
        self.prior_box = prior_box_on(config.prompts, self.masker)
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

    def _run(self, volume_id: str, attempt: int) -> VolumeRecord:
        """The README's per-volume steps, each one call; raises for a bad volume."""
        clock = StageClock(*STAGES)
        with clock("read"):
            volume = self._read(volume_id)
        # model stages take turns under the device lock; CPU stages of other volumes overlap
        with self._device_lock, clock("student"):
            maps = self._student(volume.image)
        with clock("prompts"):
            self._localize(maps, volume.meta.spacing)
        checks, windowed = self._check_prior_box(maps, volume, clock)
        with clock("prompts"):
            classes = [self._prompts(prob) for prob in maps.foreground]
            stacks = axis_stacks(self._window(volume.image, classes, windowed), classes)
        answers = self._mask(stacks, classes, clock)
        with clock("fuse"):
            result = self._fuse(classes, answers, maps)
            if checks:
                result.stats.prior_box_agreement = {v: c.agreement for v, c in checks.items()}
                result.stats.prior_box_replaced = [v for v, c in checks.items() if c.replaced]
        with clock("write"):
            checksums = self._write(volume, result)
        rss_mb, device_mb = peak_memory_mb(self.device)
        return VolumeRecord(
            volume_id=volume_id, status=VolumeStatus.done, attempt=attempt,
            timings_s=clock.seconds, stats=result.stats, checksums=checksums, node=self.node,
            worker_pid=os.getpid(), peak_rss_mb=rss_mb, peak_device_mb=device_mb,
        )

    def _read(self, volume_id: str) -> VolumeInput:
        """Step 0: the volume's meta and image, checked (`check_image`)."""
        meta = read_meta(self.root, volume_id)
        image = read_image(self.root, volume_id)
        check_image(volume_id, image)
        return VolumeInput(volume_id, meta, image)

    def _student(self, image: np.ndarray) -> StudentMaps:
        """Step 1: the student's probability map of each structure (`StudentMaps`)."""
        if self.classes.count == 1:
            return StudentMaps([self.student.probabilities(image, self.student_inference)], None)
        softmax = self.student.probabilities(image, self.student_inference, self.classes)
        return StudentMaps(list(softmax[1:]), softmax)

    def _localize(self, maps: StudentMaps, spacing: tuple[float, ...]) -> None:
        """Step 2a (``prompts.component`` 'prior'): in each structure's map, in place, every
        foreground component but the one its prior picks lowered to the threshold
        (`keep_component`; the largest for a class without a prior)."""
        cfg = self.config.prompts
        if cfg.component != "prior":
            return
        priors = cfg.component_prior or {}
        for value, prob in zip(self.classes.values, maps.foreground):
            kept = keep_component(prob, cfg.threshold, spacing, priors.get(value))
            if kept is not prob:
                prob[...] = kept

    def _check_prior_box(self, maps: StudentMaps, volume: VolumeInput, clock: StageClock
                         ) -> tuple[dict[int, PriorBoxCheck], np.ndarray | None]:
        """Step 2a' (``prompts.prior_box``, `prior_box_on`): each structure with a prior box checked against
        the masker prompted by that box alone (`check_with_prior_box`); where they disagree the
        masker's answer replaces the structure's map in place. Per class value the checks, and
        the windowed image when it was made (step 3 reuses it)."""
        cfg = self.config.prompts
        priors = cfg.component_prior or {}
        if not self.prior_box or not any(p.box is not None for p in priors.values()):
            return {}, None
        windowed = window_volume(volume.image, self.config.intensity)
        checks = {}
        for value, prob in zip(self.classes.values, maps.foreground):
            if (prior := priors.get(value)) is None:
                continue
            with self._device_lock, clock("masker"):
                check = check_with_prior_box(prob, windowed, prior, volume.meta.spacing,
                                             self.masker, cfg)
            if check is not None:
                checks[value] = check
                if check.replaced:
                    log.info("volume %s, class %d: the student's map replaced by the masker's "
                             "prior-box answer (agreement %.2f < %.2f)", volume.volume_id, value,
                             check.agreement, cfg.prior_box_min_agreement)
                    prob[...] = check.prob
        return checks, windowed

    def _prompts(self, prob: np.ndarray) -> ClassPrompts:
        """Step 2b: a structure's foreground (``XxYxZ`` bool, `foreground_mask`) of its map
        ``prob`` and its prompts per slice axis (``prompts.slice_axis``, then ``extra_axes``)."""
        cfg = self.config.prompts
        mask = foreground_mask(prob, cfg)
        return ClassPrompts(prob, mask, {
            a: slice_prompts(mask, prob, cfg.model_copy(update={"slice_axis": a}))
            for a in (cfg.slice_axis, *cfg.extra_axes)})

    def _window(self, image: np.ndarray, classes: list[ClassPrompts],
                windowed: np.ndarray | None = None) -> np.ndarray | None:
        """Step 3a: the image windowed to uint8 (`window_volume`; ``windowed`` when step 2a'
        made it already); None when nothing is prompted (the masker does not run)."""
        if not any(prompts for c in classes for prompts in c.per_axis.values()):
            return None
        return windowed if windowed is not None else window_volume(image, self.config.intensity)

    def _mask(self, stacks: list[AxisStack], classes: list[ClassPrompts], clock: StageClock
              ) -> list[dict[int, MaskerView]]:
        """Step 3b: per structure, per prompted axis, the masker's answer (`mask_axis`). With
        several structures each axis's stack is encoded once for all (`share_stacks`)."""
        if len(classes) > 1:
            with self._device_lock, clock("masker"):
                stacks = share_stacks(stacks, self.masker)
        by_axis = {s.axis: s for s in stacks}
        answers = []
        for c in classes:
            views: dict[int, MaskerView] = {}
            for axis, prompts in c.per_axis.items():
                if prompts:
                    target = class_slices(by_axis[axis], c.prompted(axis), self.masker)
                    with self._device_lock, clock("masker"):
                        views[axis] = mask_axis(target, prompts, c.mask, axis, self.config.prompts)
            answers.append(views)
        return answers

    def _fuse(self, classes: list[ClassPrompts], answers: list[dict[int, MaskerView]],
              maps: StudentMaps) -> FusionResult:
        """Step 4: each structure's student and masker answers fused (`fuse_views`); with
        several structures the results combined into one label map in the store's class
        values (`combine_classes`) with per-class statistics."""
        axis = self.config.prompts.slice_axis
        results = [fuse_views(c.prob, views.get(axis, MaskerView(axis, [], None)),
                              [v for a, v in views.items() if a != axis], self.config.fusion)
                   for c, views in zip(classes, answers)]
        if len(results) == 1:
            (value,) = self.classes.values
            if value == 1:
                return results[0]
            # one structure stored under another value: the label holds that value, as the
            # store's labels (and training, export) do
            result = results[0]
            label = np.where(result.pseudo_label > 0, value, 0).astype(np.uint8)
            return FusionResult(label, result.confidence, result.stats)
        assert maps.softmax is not None
        label, confidence = combine_classes(
            [r.pseudo_label for r in results], [confidence_from_uint8(r.confidence) for r in results],
            maps.softmax, self.classes.values)
        return FusionResult(label, confidence_to_uint8(confidence),
                            self._class_stats(label, confidence, results))

    def _write(self, volume: VolumeInput, result: FusionResult) -> dict[str, str]:
        """Step 5: the pseudo-label and confidence with the volume's geometry; their checksums."""
        meta = volume.meta
        geometry = {"volume_id": volume.volume_id, "spacing": list(meta.spacing),
                    "affine": meta.affine, "source": meta.source, "round": self.round}
        return write_outputs(self.root, self.round, volume.volume_id, result.pseudo_label,
                             result.confidence, self.config.prompts.slice_axis, attrs=geometry)

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
                student_masker_dice=r.stats.student_masker_dice, masker_score=r.stats.masker_score,
                fused_student_dice=r.stats.fused_student_dice,
                masker_rejected=r.stats.masker_rejected)
        foreground = int(np.count_nonzero(label))
        return VolumeStats(
            slices_total=results[0].stats.slices_total,
            slices_prompted=sum(r.stats.slices_prompted for r in results),
            foreground_voxels=foreground, foreground_fraction=foreground / max(label.size, 1),
            mean_confidence=float(np.mean(confidence, dtype=np.float64)),
            student_masker_dice=mean([r.stats.student_masker_dice for r in results]),
            masker_score=mean([r.stats.masker_score for r in results]),
            fused_student_dice=mean([r.stats.fused_student_dice for r in results]),
            masker_rejected=any(r.stats.masker_rejected for r in results), classes=per)
