"""Round bookkeeping in the store: fingerprint, start/resume checks, pending work, finish."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import zarr
from pydantic import ValidationError

from semisam.schemas import (
    CheckpointError,
    ClassMap,
    RoundConfig,
    RoundError,
    RoundMeta,
    RoundStatus,
    VolumeWork,
    utcnow,
    volume_work,
)
from semisam.store import (
    clear_record,
    list_metas,
    read_record,
    read_round_meta,
    sha256_file,
    write_round_meta,
)
from semisam.workers.maskers.registry import masker_spec

log = logging.getLogger(__name__)


def masker_checkpoint(config: RoundConfig) -> Path | None:
    """The checkpoint file the round's masker loads, as its registry spec resolves it
    (LiteMedSAM: the config's or the bundled one), or None (random walker; SAM on explicit
    random weights)."""
    return masker_spec(config.masker.kind).checkpoint(config.masker)


def round_fingerprint(config: RoundConfig, student_sha: str, masker_sha: str | None) -> str:
    """sha256 over the output-relevant config and the checkpoint hashes."""
    payload = {"config": config.fingerprint_payload(), "student": student_sha, "sam": masker_sha}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def current_fingerprint(config: RoundConfig, student_checkpoint: Path) -> tuple[str, str, str | None]:
    """``(fingerprint, student sha256, SAM sha256 or None)`` of a round run now.

    Raises:
        CheckpointError: a checkpoint file cannot be read.
    """
    masker_ckpt = masker_checkpoint(config)
    try:
        student_sha = sha256_file(student_checkpoint)
        masker_sha = sha256_file(masker_ckpt) if masker_ckpt else None
    except FileNotFoundError as exc:
        raise CheckpointError(f"{exc.filename}: checkpoint file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{exc.filename}: cannot read checkpoint ({exc.strerror})") from None
    return round_fingerprint(config, student_sha, masker_sha), student_sha, masker_sha


# Fields added with a default that changes outputs: a stored config without the field ran with
# the old behaviour, given here as (section, field, value then).
BEHAVIOUR_BEFORE_DEFAULT = (("prompts", "component", "largest"),)


def keep_begun_behaviour(root: zarr.Group, round_index: int, config: RoundConfig) -> RoundConfig:
    """``config`` for resuming a round an older semisam began: each field of
    `BEHAVIOUR_BEFORE_DEFAULT` its stored config lacks, and ``config`` does not set, takes the
    value the round ran with, so that the same command resumes it instead of refusing."""
    existing = read_round_meta(root, round_index)
    if existing is None:
        return config
    for section, name, before in BEHAVIOUR_BEFORE_DEFAULT:
        model = getattr(config, section)
        if name not in existing.config.get(section, {}) and name not in model.model_fields_set:
            log.info("round %d was begun before %s.%s existed: it keeps %r", round_index,
                     section, name, before)
            config = config.model_copy(update={section: model.model_copy(update={name: before})})
    return config


def same_settings(existing: RoundMeta, config: RoundConfig, student_sha: str,
                  masker_sha: str | None) -> bool:
    """Whether a stored round ran with ``config`` and these checkpoint bytes, when its stored
    fingerprint differs only because an older semisam wrote it.

    The round's meta keeps its whole config. Read with today's schema, fields added since then
    take their defaults (a new field's default keeps the old behaviour); a field that no
    longer exists, or any output-relevant value that differs, means different settings.
    """
    if (existing.student_sha256, existing.masker_sha256) != (student_sha, masker_sha):
        return False
    data = {k: v for k, v in existing.config.items() if k != "runtime"}  # not output-relevant
    for section, name, before in BEHAVIOUR_BEFORE_DEFAULT:  # new defaults that change outputs
        if name not in data.get(section, {}):
            data[section] = {**data.get(section, {}), name: before}
    try:
        stored = RoundConfig.model_validate(data)
    except ValidationError:
        return False
    return stored.fingerprint_payload() == config.fingerprint_payload()


def checkpoints_vetted(root: zarr.Group, round_index: int, config: RoundConfig,
                       hashes: tuple[str, str, str | None]) -> bool:
    """True when round ``round_index`` already exists with this config and these very
    checkpoint bytes (``hashes`` from `current_fingerprint`): they passed `check_checkpoints`
    when the round began, so a resume need not load them on the driver again (no torch/MONAI
    import: a finished round's rerun returns in about a second)."""
    existing = read_round_meta(root, round_index)
    if existing is None:
        return False
    return existing.fingerprint == hashes[0] or same_settings(existing, config, *hashes[1:])


@dataclass
class RoundPlan:
    """What a (re)run of a round has to do."""

    meta: RoundMeta
    todo: list[str]
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resumed: bool = False


def _resumes(root: zarr.Group, r: int, existing: RoundMeta, config: RoundConfig,
             hashes: tuple[str, str, str | None], volumes: list[str], force: bool) -> bool:
    """Whether the stored round ``r`` (``existing``) is resumed by a run with ``config`` and
    ``hashes`` (`current_fingerprint`'s): yes when its fingerprint is this run's, or differs
    only because an older semisam wrote it (`same_settings`); with ``force`` a changed round is
    cleared of every volume's record and begun anew (no).

    Raises:
        RoundError: the fingerprint differs and ``force`` is off.
    """
    fingerprint, student_sha, masker_sha = hashes
    if existing.fingerprint == fingerprint:
        return True
    if same_settings(existing, config, student_sha, masker_sha):
        log.warning("round %d was begun by an older semisam (fingerprint %s); its stored "
                    "config, with the fields added since at their defaults, and its "
                    "checkpoints are this run's: resuming it", r, existing.fingerprint[:12])
        return True
    if not force:
        raise RoundError(
            f"round {r} exists with another config/checkpoints (fingerprint "
            f"{existing.fingerprint[:12]} != {fingerprint[:12]}); use --force to redo it"
        )
    log.warning("round %d: --force, fingerprint changed: redoing every volume", r)
    for vid in volumes:
        clear_record(root, r, vid)
    return False


def plan_round(
    root: zarr.Group,
    round_index: int,
    config: RoundConfig,
    student_checkpoint: Path,
    force: bool = False,
    retry_failed: bool = False,
    hashes: tuple[str, str, str | None] | None = None,
) -> RoundPlan:
    """Create or resume round ``round_index`` and list the volumes still to process.

    Which volumes are left to do is the one rule, `schemas.volume_work`: done volumes are
    skipped; final failures are skipped unless ``retry_failed``; everything else (never
    started, started without a done record, or cut short by a retryable failure) is to do. A
    different fingerprint than the stored one is refused unless ``force``, which restarts the
    round from scratch.
    ``hashes``: `current_fingerprint`'s result when the caller has it (checkpoints are hashed
    once per run: a vit_h checkpoint is 2.5 GB).

    Raises:
        RoundError: fingerprint mismatch without ``force``, or no unlabeled volumes.
    """
    fingerprint, student_sha, masker_sha = hashes or current_fingerprint(config, student_checkpoint)
    masker_ckpt = masker_checkpoint(config)
    volumes = [m.volume_id for m in list_metas(root) if not m.labeled]
    if not volumes:
        raise RoundError("store has no unlabeled volumes: nothing to pseudo-label")

    existing = read_round_meta(root, round_index)
    resumed = existing is not None and _resumes(
        root, round_index, existing, config, (fingerprint, student_sha, masker_sha), volumes, force)
    meta = RoundMeta(
        round=round_index,
        config=config.model_dump(mode="json"),
        fingerprint=fingerprint,
        student_checkpoint=str(student_checkpoint),
        student_sha256=student_sha,
        masker_checkpoint=str(masker_ckpt) if masker_ckpt else None,
        masker_sha256=masker_sha,
        created_at=existing.created_at if resumed and existing else utcnow(),
    )
    write_round_meta(root, meta)
    plan = RoundPlan(meta=meta, todo=[], resumed=resumed)
    for vid in volumes:  # the one rule: schemas.volume_work
        work = volume_work(read_record(root, round_index, vid))
        if work.left_to_do(retry_failed):
            plan.todo.append(vid)  # not started, cut short (retryable), or --retry-failed
        else:
            (plan.done if work is VolumeWork.done else plan.failed).append(vid)
    if plan.done:
        log.info("round %d: skipping %d volumes already done", round_index, len(plan.done))
    if plan.failed:
        log.info("round %d: skipping %d volumes that failed before (use --retry-failed): %s",
                 round_index, len(plan.failed), ", ".join(plan.failed[:5]))
    return plan


def check_checkpoints(config: RoundConfig, student_checkpoint: Path,
                      classes: ClassMap | None = None) -> None:
    """Load the round's checkpoints once on the driver, before any worker starts.

    The student is loaded as the workers will load it (``weights_only=True``); the masker's
    checkpoint is vetted by its registry spec (`MaskerSpec.vet`: a SAM checkpoint is read the
    same way and its keys and shapes are checked against the model of
    ``masker.sam.model_type``, built on the meta device: no weights, no forward pass). A bad
    file is then one line naming it, not a worker that fails to start on every node.

    Raises:
        CheckpointError: missing, corrupt, unsafe (would run code when unpickled), not a state
            dict, or not the configured student/SAM type.
        InputError: the student's output channels do not fit ``classes`` (the store's).
    """
    with warnings.catch_warnings():  # torch's pickle-protocol notes are noise next to the verdict
        warnings.simplefilter("ignore", UserWarning)
        masker_spec(config.masker.kind).vet(config.masker)  # the masker kind's own vetting
        from semisam.workers.student import check_student_classes, load_student

        _, spec, _ = load_student(student_checkpoint, "cpu")
        if classes is not None:
            check_student_classes(spec, classes, student_checkpoint)


def finish_round(root: zarr.Group, store: str, meta: RoundMeta, any_failed: bool) -> RoundMeta:
    """Mark the round finished and consolidate the store's metadata once."""
    meta.status = RoundStatus.finished_with_failures if any_failed else RoundStatus.finished
    meta.finished_at = utcnow()
    write_round_meta(root, meta)
    try:
        with warnings.catch_warnings():  # zarr warns that consolidation is not in the v3 spec yet
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(root.store)  # the opened store: URLs keep their options
    except Exception as exc:  # noqa: BLE001 - consolidation is an optimisation only
        log.warning("could not consolidate metadata of %s: %s", store, exc)
    return meta
