"""What the training stage reads from a store: volume handles, intensity statistics, the round's
pseudo-labels, a fingerprint of it all, and batches of patches.

Labels and pseudo-labels hold the store's class VALUES (``uint8``: 0 background, the class
map's values for the structures, e.g. {1, 3}); the losses take class INDICES ``0..K``
(channel ``c`` of the student = ``classes.values[c - 1]``). `class_index_table` maps one to
the other where patches are assembled; for a one-structure store it is the identity.

Nothing here loads a whole volume: statistics are accumulated slab by slab along the chunked
axis, and patches are sliced from the Zarr arrays (`read_region`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import zarr

from semisam.schemas import (
    CONFIDENCE_SCALE,
    ClassMap,
    ConfigError,
    InputError,
    SemisamError,
    TrainConfig,
    VolumeMeta,
    VolumeStatus,
    binary_classes,
    output_path,
    volume_path,
)
from semisam.store import array_sha256, list_metas, read_class_map, read_record, read_round_meta

from .augmentation import augmentation_plan
from .patches import crop_start, read_region, read_size, rot_flip, rot_flip_choice
from .selection import select_round_volumes

log = logging.getLogger(__name__)

FOREGROUND_SAMPLE = 4096  # foreground voxel positions kept per labeled volume
UNKNOWN_CLASS = -1  # index-table entry of a label value that is not in the class map


def class_index_table(classes: ClassMap) -> np.ndarray | None:
    """Label value -> class index: a ``(256,)`` int64 table, ``table[0] = 0`` and
    ``table[classes.values[c - 1]] = c``, every other value `UNKNOWN_CLASS`; None for a
    one-structure store ``{1: ...}``, whose values already are the indices (identity)."""
    if not classes.multiclass:
        return None
    table = np.full(256, UNKNOWN_CLASS, dtype=np.int64)
    table[0] = 0
    table[np.asarray(classes.values, dtype=np.int64)] = np.arange(1, classes.count + 1)
    return table


def to_class_indices(values: np.ndarray, table: np.ndarray | None, volume_id: str,
                     classes: ClassMap) -> np.ndarray:
    """Class indices ``XxYxZ`` int64 of a patch of class values ``XxYxZ`` int64 (0..255).

    Raises:
        InputError: the patch holds a value the class map does not name (one line naming the
            volume and the map).
    """
    if table is None:
        return values
    indices = table[values]
    if (indices == UNKNOWN_CLASS).any():
        bad = int(values[indices == UNKNOWN_CLASS][0])
        known = ", ".join(f"{v}={n}" for v, n in classes.names.items())
        raise InputError(f"volume '{volume_id}': label value {bad} is not in the store's class "
                         f"map ({known})")
    return indices


@dataclass
class VolumeSource:
    """One training volume: lazy Zarr handles plus what sampling needs.

    ``target`` is the label (labeled volumes) or the round's pseudo-label (unlabeled volumes
    with a done record), ``confidence`` the round's uint8 confidence; both None otherwise.
    """

    meta: VolumeMeta
    image: zarr.Array
    target: zarr.Array | None = None
    confidence: zarr.Array | None = None
    mean: float = 0.0
    std: float = 1.0
    foreground: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))


@dataclass
class TrainingData:
    labeled: list[VolumeSource]
    unlabeled: list[VolumeSource]
    fingerprint: str
    round_index: int | None = None
    classes: ClassMap = field(default_factory=binary_classes)


def slabs(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned slabs along the most finely chunked axis (the slice axis of the store)."""
    axis = int(np.argmin([c / s for c, s in zip(chunks, shape)]))
    step = max(1, int(chunks[axis]))
    for begin in range(0, shape[axis], step):
        index = [slice(None)] * len(shape)
        index[axis] = slice(begin, min(begin + step, shape[axis]))
        yield tuple(index)


def intensity_stats(array: zarr.Array) -> tuple[float, float]:
    """Mean and standard deviation of a volume, accumulated slab by slab in float64."""
    total, total_sq, count = 0.0, 0.0, 0
    for index in slabs(array.shape, array.chunks):
        block = np.asarray(array[index], dtype=np.float64)
        total += float(block.sum())
        total_sq += float(np.square(block).sum())
        count += block.size
    mean = total / max(count, 1)
    std = float(np.sqrt(max(total_sq / max(count, 1) - mean * mean, 0.0)))
    return mean, std if std > 0 else 1.0


def foreground_sample(array: zarr.Array, cap: int = FOREGROUND_SAMPLE) -> np.ndarray:
    """Up to ``cap`` foreground positions ``Kx3`` (every n-th in C order), read slab by slab."""
    found = []
    for index in slabs(array.shape, array.chunks):
        offset = np.array([s.start or 0 for s in index])
        coords = np.argwhere(np.asarray(array[index]) > 0)
        if len(coords):
            found.append(coords + offset)
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    coords = np.concatenate(found)
    stride = max(1, len(coords) // cap)
    return coords[::stride][:cap].astype(np.int64)


def store_fingerprint(root: zarr.Group, metas: list[VolumeMeta], round_index: int | None,
                      classes: ClassMap | None = None) -> str:
    """sha256 over what training reads: the volumes' source hashes and labeled flags, the class
    map of a multi-class store (a one-structure store's fingerprint is what it always was), and
    the round's fingerprint plus the checksums of its done volumes."""
    payload: dict = {"volumes": [[m.volume_id, m.sha256, m.label_sha256, m.labeled] for m in metas]}
    if classes is not None and classes.multiclass:
        payload["classes"] = classes.to_attrs()
    if round_index is not None:
        meta = read_round_meta(root, round_index)
        records = {}
        for m in metas:
            record = read_record(root, round_index, m.volume_id) if not m.labeled else None
            if record is not None and record.status == VolumeStatus.done:
                records[m.volume_id] = record.checksums
        payload["round"] = {"index": round_index, "fingerprint": meta.fingerprint if meta else None,
                            "done": records}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _attach_round(root: zarr.Group, source: VolumeSource, round_index: int) -> bool:
    """Attach the round's pseudo-label and confidence of an unlabeled volume with a done record,
    after checking each array's content (read once, sha256 of its C-order bytes) against the
    record's checksums; a volume whose arrays changed since the round, or cannot be read, is
    left out (no SAM term) with a one-line warning naming it and why."""
    vid = source.meta.volume_id
    record = read_record(root, round_index, vid)
    if record is None or record.status != VolumeStatus.done:
        return False
    arrays = {}
    for kind in ("pseudo_label", "confidence"):
        path = output_path(round_index, kind, vid)
        problem = _round_array_problem(root, path, kind, vid, record.checksums.get(kind))
        if problem:
            log.warning("round %d: volume '%s' left out of training: its %s %s (`semisam "
                        "inspect --verify` shows it; rerun the round for it)", round_index, vid,
                        kind, problem)
            return False
        arrays[kind] = root[path]
    source.target, source.confidence = arrays["pseudo_label"], arrays["confidence"]
    return True


def _select_round(root: zarr.Group, unlabeled: list[VolumeSource], round_index: int,
                  config: TrainConfig) -> None:
    """Detach the pseudo-labels of the volumes `select_round_volumes` leaves out
    (``config.sam.volumes``): they stay unlabeled volumes (Mean Teacher) with no SAM term; the
    log names them."""
    attached = [s for s in unlabeled if s.target is not None]
    kept, left = select_round_volumes(root, round_index, [s.meta.volume_id for s in attached],
                                      config.sam.volumes)
    for source in attached:
        if source.meta.volume_id not in kept:
            source.target = source.confidence = None
    log.info("round %d: SAM term on the best %d of %d pseudo-labels by %s (top_fraction %.2f); "
             "left out: %s", round_index, len(kept), len(attached),
             config.sam.volumes.rank_by.value, config.sam.volumes.top_fraction,
             ", ".join(left) or "none")


def _round_array_problem(root: zarr.Group, path: str, kind: str, volume_id: str,
                         expected: str | None) -> str | None:
    """Why the round array at ``path`` cannot be trained on (None when its sha256 matches)."""
    if path not in root or not isinstance(root[path], zarr.Array):
        return "is missing (the record says done)"
    if expected is None:
        return "has no checksum in the round record"
    try:
        with reading(volume_id, kind):
            data = np.asarray(root[path][...])
    except InputError as exc:
        return f"cannot be read ({str(exc).split('(', 1)[-1].split(')')[0]})"
    actual = array_sha256(data)
    if actual != expected:
        return f"content changed since the round: sha256 {actual[:12]} != recorded {expected[:12]}"
    return None


@contextmanager
def reading(volume_id: str, what: str) -> Iterator[None]:
    """Reads of a volume's ``what`` array (image, label): a chunk that cannot be decoded
    (truncated, corrupt, missing) becomes one `InputError` naming the volume."""
    try:
        yield
    except (SemisamError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - zarr/numcodecs raise many types for bad chunks
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"volume '{volume_id}': its {what} in the store cannot be read "
                         f"({type(exc).__name__}: {first}); re-ingest it or leave it out "
                         "with train.exclude") from None


def _whole_label(source: VolumeSource) -> np.ndarray:
    """The whole label ``XxYxZ`` of a labeled volume (errors name the volume)."""
    with reading(source.meta.volume_id, "label"):
        return np.asarray(source.target[...])


def open_training_data(root: zarr.Group, config: TrainConfig, round_index: int | None) -> TrainingData:
    """Handles and statistics of every volume the run trains on (``config.exclude`` left out),
    and the store's class map.

    Raises:
        InputError: no labeled volume remains.
        ConfigError: ``round_index`` names a round that is not in the store.
    """
    if round_index is not None and read_round_meta(root, round_index) is None:
        raise ConfigError(f"round {round_index}: not in the store (run `semisam run-round` first)")
    excluded = set(config.exclude)
    metas = [m for m in list_metas(root) if m.volume_id not in excluded]
    labeled, unlabeled = [], []
    for meta in metas:
        base = volume_path(meta.volume_id)
        with reading(meta.volume_id, "image"):
            image = root[f"{base}/image"]
            mean, std = intensity_stats(image)
        source = VolumeSource(meta=meta, image=image, mean=mean, std=std)
        if meta.labeled and f"{base}/label" in root:
            with reading(meta.volume_id, "label"):
                source.target = root[f"{base}/label"]
                if config.batch.foreground_prob > 0:
                    source.foreground = foreground_sample(source.target)
            labeled.append(source)
        elif not meta.labeled:
            unlabeled.append(source)
    if not labeled:
        raise InputError("store has no labeled volumes to train on (after --exclude)")
    if round_index is not None:
        attached = sum(_attach_round(root, s, round_index) for s in unlabeled)
        if attached < len(unlabeled):
            log.warning("round %d: %d of %d unlabeled volumes have no done pseudo-label; "
                        "they get no SAM term", round_index, len(unlabeled) - attached, len(unlabeled))
        if config.sam.volumes.selects:
            _select_round(root, unlabeled, round_index, config)
    log.info("training data: %d labeled, %d unlabeled volumes%s", len(labeled), len(unlabeled),
             f", pseudo-labels of round {round_index}" if round_index is not None else "")
    classes = read_class_map(root)
    return TrainingData(labeled, unlabeled, store_fingerprint(root, metas, round_index, classes),
                        round_index, classes)


@dataclass
class Batch:
    """One batch, labeled patches first. Shapes: ``image`` Bx1xXxYxZ float32 (z-scored);
    ``label`` LxXxYxZ int64 and ``pseudo_label`` UxXxYxZ int64, class indices ``0..K``;
    ``confidence`` UxXxYxZ float32."""

    image: np.ndarray
    label: np.ndarray
    pseudo_label: np.ndarray | None = None
    confidence: np.ndarray | None = None

    @property
    def labeled(self) -> int:
        return int(self.label.shape[0])


class PatchSampler:
    """Draws batches of ``batch.labeled`` labeled and ``batch.unlabeled`` unlabeled patches.

    Args:
        data: the opened training volumes.
        config: patch size (``student.patch_size``), batch composition, augmentation.
        use_unlabeled: False when no loss term needs unlabeled patches (supervised only).
    """

    def __init__(self, data: TrainingData, config: TrainConfig, use_unlabeled: bool) -> None:
        self.data, self.config = data, config
        self.size = tuple(config.student.patch_size)
        self.n_unlabeled = config.batch.unlabeled if use_unlabeled and data.unlabeled else 0
        self.with_round = data.round_index is not None
        self.index_table = class_index_table(data.classes)
        self.augment = augmentation_plan(config.augment, data.classes,
                                         (_whole_label(s) for s in data.labeled))

    def _patch(self, source: VolumeSource, rng: np.random.Generator,
               foreground_prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One augmented patch: image ``XxYxZ`` float32 (z-scored), target ``XxYxZ`` int64 class
        indices (0 where the volume has none), confidence ``XxYxZ`` float32."""
        plan = self.augment
        k, flip_axis = rot_flip_choice(rng, plan.rot90, plan.flip, plan.flip_axes)
        size = read_size(self.size, k)
        centre = None
        if len(source.foreground) and rng.random() < foreground_prob:
            centre = source.foreground[int(rng.integers(len(source.foreground)))]
        start = crop_start(source.meta.shape, size, rng, centre)
        image = (read_region(source.image, start, size, fill=source.mean) - source.mean) / source.std
        if source.target is None:
            target = np.zeros(size, np.float32)
            confidence = np.zeros(size, np.float32)
        else:
            target = read_region(source.target, start, size)
            confidence = (read_region(source.confidence, start, size) / CONFIDENCE_SCALE
                          if source.confidence is not None else (target >= 0).astype(np.float32))
        stack = rot_flip(np.stack([image, target, confidence]), k, flip_axis)
        values = np.rint(stack[1]).astype(np.int64)
        indices = to_class_indices(values, self.index_table, source.meta.volume_id, self.data.classes)
        return stack[0], indices, stack[2]

    def sample(self, rng: np.random.Generator) -> Batch:
        """Labeled then unlabeled patches; volumes drawn uniformly with replacement."""
        images, labels, pseudo, conf = [], [], [], []
        for _ in range(self.config.batch.labeled):
            source = self.data.labeled[int(rng.integers(len(self.data.labeled)))]
            image, target, _ = self._patch(source, rng, self.config.batch.foreground_prob)
            images.append(image)
            labels.append(target)
        for _ in range(self.n_unlabeled):
            source = self.data.unlabeled[int(rng.integers(len(self.data.unlabeled)))]
            image, target, confidence = self._patch(source, rng, 0.0)
            images.append(image)
            pseudo.append(target)
            conf.append(confidence)
        return Batch(
            image=np.stack(images)[:, None].astype(np.float32),
            label=np.stack(labels),
            pseudo_label=np.stack(pseudo) if pseudo and self.with_round else None,
            confidence=np.stack(conf).astype(np.float32) if conf and self.with_round else None,
        )


def check_volume_ids(ids: list[str], metas: list[VolumeMeta]) -> None:
    """Raise `InputError` naming the first id that is not a volume of the store."""
    known = {m.volume_id for m in metas}
    for vid in ids:
        if vid not in known:
            raise InputError(f"volume '{vid}': not in the store")
