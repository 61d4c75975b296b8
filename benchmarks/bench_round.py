"""End-to-end timings: the worker path on one device, and `run-round` on a local Ray."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import torch
from monai.losses import DiceCELoss

from semisam.pipeline.phantoms import make_phantom
from semisam.schemas import RoundConfig, StudentSpec, VolumeMeta, VolumeRecord
from semisam.store import list_metas, open_store, read_image, read_label, read_record, write_volume
from semisam.workers.student import build_student, save_student, zscore
from semisam.workers.volume import VolumeProcessor

MODEL_STAGES = ("student", "masker")


def _meta(vid: str, shape, labeled: bool, source: str) -> VolumeMeta:
    return VolumeMeta(volume_id=vid, source=source, source_format="h5" if source.endswith(".h5") else "npy",
                      sha256=vid, shape=shape, spacing=(1.0, 1.0, 1.0), affine=np.eye(4).tolist(),
                      image_dtype="float32", labeled=labeled)


def phantom_store(path: Path, count: int, labeled: int, shape=(96, 96, 64)) -> Path:
    root = open_store(path, create=True)
    for i in range(count):
        image, label = make_phantom(shape, seed=i)
        write_volume(root, _meta(f"ph{i:03d}", image.shape, i < labeled, "phantom"), image,
                     label if i < labeled else None)
    return path


def la_sources(la_dir: Path) -> list[Path]:
    """LA volumes in ``la_dir``: ``<id>.h5`` files (``image``, ``label``) or packed
    ``<id>.codes.npy`` / ``<id>.values.npy`` / ``<id>.label.npy`` triplets (the lossless
    compact form carried to the GPU machine: image = values[codes])."""
    files = sorted(la_dir.glob("*.h5"))
    return files or sorted(la_dir.glob("*.codes.npy"))


def read_la(source: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """``(volume id, float32 image, uint8 label)`` of one `la_sources` entry."""
    if source.suffix == ".h5":
        with h5py.File(source, "r") as h5:
            return source.stem, np.asarray(h5["image"], np.float32), np.asarray(h5["label"], np.uint8)
    stem = source.name[: -len(".codes.npy")]
    values = np.load(source.with_name(f"{stem}.values.npy"))
    image = values[np.load(source)].astype(np.float32)
    return stem, image, np.load(source.with_name(f"{stem}.label.npy")).astype(np.uint8)


def la_store(path: Path, files: list[Path], labeled: int, copies: int = 1) -> Path:
    """LA volumes (see `la_sources`); the first ``labeled`` keep their labels. The unlabeled
    ones are written ``copies`` times under ids ``<id>-<copy>`` (more volumes per round)."""
    root = open_store(path, create=True)
    for i, f in enumerate(files):
        vid, image, label = read_la(f)
        for c in range(1 if i < labeled else copies):
            name = vid if copies == 1 or i < labeled else f"{vid}-{c}"
            write_volume(root, _meta(name, image.shape, i < labeled, str(f)), image,
                         label if i < labeled else None)
    return path


def train_student(store: Path, out: Path, spec: StudentSpec, iterations: int,
                  device: torch.device, seed: int = 0) -> Path:
    """A quick supervised student on the store's labeled volumes, on ``device``."""
    from semisam.training.patches import sample_patch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    root = open_store(store, read_only=True)
    vols = [(zscore(read_image(root, m.volume_id)), read_label(root, m.volume_id))
            for m in list_metas(root) if m.labeled]
    model = build_student(spec).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    for _ in range(iterations):
        pairs = [sample_patch(*vols[int(rng.integers(len(vols)))], spec.patch_size, rng) for _ in range(2)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None]).float().to(device)
        y = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].astype(np.int64)).to(device)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    save_student(out, model.cpu().eval(), spec, {"iterations": iterations, "stage": "benchmark"})
    return out


def record_figures(records: list[VolumeRecord], wall: float, workers: int,
                   started_at: datetime | None = None) -> dict:
    """Slices/s, efficiency (model time / (workers x wall)), skip share and peak memory.

    With ``started_at`` (when the timed call began) also the start-up: seconds until the first
    volume began (its finish time minus its stage times: actor start, imports, model loading),
    and the efficiency over the rest of the wall."""
    done = [r for r in records if r.stats is not None]
    prompted = sum(r.stats.slices_prompted for r in done)
    finished = sorted(done, key=lambda r: r.finished_at)
    span = (datetime.fromisoformat(finished[-1].finished_at)
            - datetime.fromisoformat(finished[0].finished_at)).total_seconds() if done else 0.0
    # after start-up: slices of the volumes finished after the first one, over that span
    steady = sum(r.stats.slices_prompted for r in finished[1:]) / span if span > 0 else None
    total = sum(r.stats.slices_total for r in done)
    model = sum(r.timings_s.get(k, 0.0) for r in done for k in MODEL_STAGES)
    stages = {k: round(sum(r.timings_s.get(k, 0.0) for r in done), 3)
              for k in ("read", "student", "prompts", "masker", "fuse", "write")}
    startup = None
    if started_at is not None and done:
        first = min(datetime.fromisoformat(r.finished_at).timestamp() - sum(r.timings_s.values())
                    for r in done)
        startup = max(0.0, first - started_at.timestamp())
    return {
        "volumes": len(done), "slices_total": total, "slices_prompted": prompted,
        "skipped_share": round(1 - prompted / total, 4) if total else None,
        "wall_seconds": round(wall, 3), "prompted_slices_per_s": round(prompted / wall, 2),
        "steady_prompted_slices_per_s": round(steady, 2) if steady else None,
        "model_seconds": round(model, 3), "stage_seconds": stages,
        "efficiency": round(model / (workers * wall), 4) if wall else None,
        "startup_seconds": round(startup, 3) if startup is not None else None,
        "efficiency_after_startup": round(model / (workers * (wall - startup)), 4)
        if startup is not None and wall > startup else None,
        "peak_rss_mb": max((r.peak_rss_mb or 0) for r in done) if done else None,
        "peak_device_mb": max((r.peak_device_mb or 0) for r in done) if done else None,
    }


def worker_path(store: Path, student: Path, config: RoundConfig, round_index: int = 1) -> dict:
    """One `VolumeProcessor` over every unlabeled volume, no Ray, with
    ``runtime.tasks_in_flight`` threads, as in the threaded Ray actor."""
    from concurrent.futures import ThreadPoolExecutor

    proc = VolumeProcessor(str(store), round_index, config, student)
    ids = [m.volume_id for m in list_metas(proc.root) if not m.labeled]
    proc.process(ids[0])  # warm-up (compile, cudnn autotune)
    start = time.perf_counter()
    with ThreadPoolExecutor(config.runtime.tasks_in_flight) as pool:
        records = list(pool.map(proc.process, ids))
    figures = record_figures(records, time.perf_counter() - start, workers=1)
    figures["threads"] = config.runtime.tasks_in_flight
    return figures


def ray_round(store: Path, student: Path, config: RoundConfig, round_index: int = 1) -> dict:
    """`run_round` on a local Ray; wall time counted once the Ray runtime is up."""
    import ray

    from semisam.pipeline.rounds.driver import run_round, start_ray

    start_ray(None, config)
    try:
        started_at = datetime.now(timezone.utc)
        start = time.perf_counter()
        summary = run_round(store, round_index, student, config, show_progress=False)
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    root = open_store(store, read_only=True)
    records = [read_record(root, round_index, v.volume_id) for v in summary.volumes]
    figures = record_figures([r for r in records if r is not None], wall, config.runtime.workers,
                             started_at)
    figures["actor_model_load_included"] = True
    return figures
