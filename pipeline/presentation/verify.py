"""`inspect --verify`: re-read every output array of a round and check it against its record.

For every volume whose record says ``done`` both arrays (``pseudo_label``, ``confidence``) are
read back chunk by chunk and checked for: presence, shape (the volume's), dtype (uint8), chunks
that cannot be read or decoded, and the sha256 of the whole array against the checksum the
worker recorded when it wrote it. A chunk absent from the store reads as the fill value (zero):
that is how Zarr stores an all-zero chunk, so an absent chunk is a problem exactly when the
array's checksum does not match, and then it is named ("missing chunk c/0/0/3").
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import zarr
from pydantic import Field
from zarr.core.sync import sync

from semisam.schemas import StoreError, StrictModel, VolumeMeta, VolumeStatus, output_path
from semisam.store import array_sha256, list_metas, read_record, read_round_meta

log = logging.getLogger(__name__)

OUTPUT_ARRAYS = ("pseudo_label", "confidence")


class VerifyProblem(StrictModel):
    """One thing wrong with a volume's stored outputs."""

    volume_id: str
    array: str | None = Field(None, description="pseudo_label | confidence | None (the record)")
    problem: str

    def line(self) -> str:
        where = f"{self.array} of " if self.array else ""
        return f"{where}volume '{self.volume_id}': {self.problem}"


class VerifyReport(StrictModel):
    """What `verify_round` checked and found."""

    store: str
    round: int
    volumes: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0
    arrays: int = 0
    chunks: int = 0
    problems: list[VerifyProblem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line per problem, then the totals."""
        head = [p.line() for p in self.problems]
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        total = (f"round {self.round} of {self.store}: verified {self.arrays} arrays "
                 f"({self.chunks} chunks) of {self.done} done volumes ({self.failed} failed, "
                 f"{self.pending} pending not checked): {verdict}")
        return [*head, total]


def _chunk_key(arr: zarr.Array, coords: tuple[int, ...]) -> str:
    return f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"


def _read_chunks(arr: zarr.Array) -> tuple[np.ndarray, list[str], list[str]]:
    """The whole array read chunk by chunk, the absent chunk keys and the unreadable ones."""
    data = np.zeros(arr.shape, dtype=arr.dtype)
    absent, unreadable = [], []
    store = arr.store_path.store
    for coords in itertools.product(*(range(n) for n in arr.cdata_shape)):
        key = _chunk_key(arr, coords)
        region = tuple(slice(c * s, min((c + 1) * s, n))
                       for c, s, n in zip(coords, arr.chunks, arr.shape))
        if not sync(store.exists(key)):
            absent.append(arr.metadata.encode_chunk_key(coords))
            continue
        try:
            data[region] = arr[region]
        except Exception as exc:  # noqa: BLE001 - any codec/IO failure is a finding, not a crash
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            unreadable.append(f"{arr.metadata.encode_chunk_key(coords)} ({type(exc).__name__}: {first})")
    return data, absent, unreadable


def verify_array(root: zarr.Group, round_index: int, kind: str, meta: VolumeMeta,
                 expected_sha: str | None) -> tuple[list[str], int]:
    """Problems of one output array (one line each) and the number of chunks it has."""
    path = output_path(round_index, kind, meta.volume_id)
    if path not in root:
        return ["array missing (the record says done)"], 0
    arr = root[path]
    if not isinstance(arr, zarr.Array):
        return [f"{path} is not an array"], 0
    problems = []
    if tuple(arr.shape) != tuple(meta.shape):
        problems.append(f"shape {tuple(arr.shape)} differs from the volume's {tuple(meta.shape)}")
    if arr.dtype != np.uint8:
        problems.append(f"dtype {arr.dtype}, expected uint8")
    data, absent, unreadable = _read_chunks(arr)
    problems += [f"chunk {u} unreadable" for u in unreadable]
    if expected_sha is None:
        problems.append("no checksum in the record")
    elif not unreadable:
        actual = array_sha256(data)
        if actual != expected_sha:
            cause = f"missing chunk(s) {', '.join(absent[:8])}" if absent else "content changed"
            problems.append(f"{cause}: sha256 {actual[:12]} != recorded {expected_sha[:12]}")
    return problems, int(np.prod(arr.cdata_shape))


def verify_round(root: zarr.Group, store: str, round_index: int) -> VerifyReport:
    """Check every done volume's arrays of round ``round_index`` (see the module docstring).

    Raises:
        StoreError: the round is not in the store.
    """
    if read_round_meta(root, round_index) is None:
        raise StoreError(f"round {round_index}: not in {store}")
    report = VerifyReport(store=store, round=round_index)
    for meta in (m for m in list_metas(root) if not m.labeled):
        report.volumes += 1
        record = read_record(root, round_index, meta.volume_id)
        if record is None or record.status == VolumeStatus.pending:
            report.pending += 1
            continue
        if record.status == VolumeStatus.failed:
            report.failed += 1
            continue
        report.done += 1
        for kind in OUTPUT_ARRAYS:
            problems, chunks = verify_array(root, round_index, kind, meta, record.checksums.get(kind))
            report.arrays += 1
            report.chunks += chunks
            report.problems += [VerifyProblem(volume_id=meta.volume_id, array=kind, problem=p)
                                for p in problems]
    for p in report.problems:
        log.debug("verify: %s", p.line())
    return report
